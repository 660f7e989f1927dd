"""MoNetSegmentation: pancreas segmentation of abdominal CT on the CPU with a very small network.

A thin Slicer adapter over the LiteSeg engine (`liteseg`): the work is done by the Qt-free
`MoNetSegmentationLib` (volume <-> image bridge, segmentation writer, logic, self-test body),
which is tested on Slicer's non-Qt core; this file holds the Slicer module, its widget (GUI
wiring only), the logic with Slicer's parameter node, and the self-test entry points.
"""

import logging
import threading
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, Decimals, SingleStep, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from MoNetSegmentationLib.engine import DEFAULT_MODEL, availableModels, bundledModelNames
from MoNetSegmentationLib.parameter_gui import parameterWidgets

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4
    def _(text):
        return text

    def translate(context, text):
        return text


#
# MoNetSegmentation
#


class MoNetSegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MoNet Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]  # the shared category
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["LiteSeg developers"]
        self.parent.helpText = _(
            "Segments the pancreas in an abdominal CT on the CPU with MoNet, a very small 2D network "
            "applied slice by slice (Knolle et al., PLoS ONE 2021). The result is a segmentation with a "
            "'Pancreas' segment (SNOMED CT terminology) on exactly the input volume's grid, placed beside "
            "the volume. The bundled model was trained on contrast-enhanced (portal-venous) CT slices of 40 "
            "patients of the NIH Pancreas-CT collection; it is not a clinical model and fails on non-contrast CT: "
            "read its model card before any use. "
            "From Python: <code>MoNetSegmentation.MoNetSegmentationLogic().process(volumeNode)</code>."
        )
        self.parent.acknowledgementText = _(
            "MoNet: Knolle M, Kaissis G, Jungmann F, et al. Efficient, high-performance semantic segmentation "
            "using multi-scale feature extraction. PLoS ONE 16(8): e0255397 (2021). Engine and module: LiteSeg."
        )


#
# MoNetSegmentationParameterNode
#


@parameterNodeWrapper
class MoNetSegmentationParameterNode:
    """The module's choices, saved with the scene; each is bound to a widget of the .ui file by
    that widget's SlicerParameterName property.

    inputVolume - the CT to segment.
    outputSegmentation - where to write; none creates a new segmentation.
    model - bundled model name (the selector shows the versions).
    threshold - probability threshold of the pancreas.
    keepLargestComponent - keep only the largest connected component.
    localizeFirst - a coarse pass first, then segment only the region it finds (faster).
    show3D - also build the surface shown in 3D views.
    allowNonCT - skip the check that the volume's intensities suit the model (e.g. HU for a CT model).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: Annotated[str, Choice(bundledModelNames())] = DEFAULT_MODEL
    threshold: Annotated[float, WithinRange(0.05, 0.95), Decimals(2), SingleStep(0.05)] = 0.5
    keepLargestComponent: bool = False
    localizeFirst: bool = True
    show3D: bool = False
    allowNonCT: bool = False


#
# MoNetSegmentationWidget
#


class MoNetSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only: parameter node <-> widgets, Apply / Cancel, progress and status."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancel = threading.Event()
        self._running = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MoNetSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MoNetSegmentationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.progressBar.setVisible(False)

        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the module's libraries too, then the module (Slicer reloads only this file)."""
        from MoNetSegmentationLib.reloading import reloadLibraries

        reloadLibraries("MoNetSegmentationLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self._cancel.set()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancel.set()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[MoNetSegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            if self._parameterNode.model not in bundledModelNames():  # a scene saved with another model
                self._parameterNode.model = DEFAULT_MODEL  # (the combo box's connector refuses unknown values)
            # Widgets are found by their "SlicerParameterName" property (see the .ui file); the
            # tag of connectParametersToGui (unlike connectGui's on Slicer 5.8) lets exit() disconnect.
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
            self._labelModels()
            self._updateApplyButton()

    def _labelModels(self) -> None:
        """Show each model with its version (the parameter node keeps the plain name)."""
        infos = {m.name: m for m in availableModels()}
        for index in range(self.ui.modelSelector.count):
            info = infos.get(self.ui.modelSelector.itemText(index))
            if info is not None:
                self.ui.modelSelector.setItemText(index, info.label)
                self.ui.modelSelector.setItemData(index, str(info.card), qt.Qt.ToolTipRole)

    def _updateApplyButton(self, caller=None, event=None) -> None:
        if self._running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation (nothing is written)")
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.text = _("Segment pancreas")
            self.ui.applyButton.toolTip = _("Segment the pancreas in the input volume")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Segment pancreas")
            self.ui.applyButton.toolTip = _("Select an input volume")
            self.ui.applyButton.enabled = False

    def onApplyButton(self) -> None:
        if self._running:  # the button reads "Cancel" while running
            self._cancel.set()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        with slicer.util.tryWithErrorDisplay(_("Pancreas segmentation failed."), waitCursor=True):
            if not self._torchReady():
                return
            self._run()

    def _torchReady(self) -> bool:
        """PyTorch importable, installed first if the user agrees (see `torchReadyForPanel`)."""
        from MoNetSegmentationLib.dependencies import torchReadyForPanel

        return torchReadyForPanel(self.ui.applyButton, self.ui.statusLabel, self._updateApplyButton, _)

    def _run(self) -> None:
        from MoNetSegmentationLib.logic import Cancelled

        parameters = self._parameterNode
        self._cancel.clear()
        self._setRunning(True)
        try:
            output = self.logic.process(
                parameters.inputVolume,
                parameters.outputSegmentation,
                model=parameters.model,
                threshold=parameters.threshold,
                keepLargestComponent=parameters.keepLargestComponent,
                localizeFirst=parameters.localizeFirst,
                allowNonCT=parameters.allowNonCT,
                show3D=parameters.show3D,
                progress=self._onProgress,
                cancel=self._cancel,
            )
        except Cancelled:
            self.ui.statusLabel.text = _("Cancelled: nothing was written")
            return
        finally:
            self._setRunning(False)
        parameters.outputSegmentation = output
        seconds = self.logic.lastTimings
        self.ui.statusLabel.text = _("Completed in {total:.1f} s (inference {inference:.1f} s), pancreas {ml:.1f} mL").format(
            total=seconds.get("total", 0.0), inference=seconds.get("inference", 0.0), ml=self.logic.lastVolumeMl
        )
        if self.logic.lastMessage:  # e.g. nothing found by the localisation pass
            self.ui.statusLabel.text += ": " + self.logic.lastMessage
        logging.info(f"MoNetSegmentation: {output.GetName()} in {seconds}")

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self.ui.parametersCollapsibleButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self._updateApplyButton()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # keeps the GUI (and the Cancel button) responsive


#
# MoNetSegmentationLogic
#

from MoNetSegmentationLib.logic import SegmentationLogic  # noqa: E402


class MoNetSegmentationLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """Slicer's scripted-module logic (parameter node) over the Qt-free `SegmentationLogic`.

    `process(inputVolume, outputSegmentation=None, model=DEFAULT_MODEL, threshold=None,
    keepLargestComponent=False, progress=None, cancel=None, localizeFirst=None, ...) -> vtkMRMLSegmentationNode`
    is blocking; `availableModels()` lists the bundled models. See SegmentationLogic.process.
    """

    def __init__(self, modelLoader=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self, modelLoader)

    def getParameterNode(self):
        return MoNetSegmentationParameterNode(super().getParameterNode())


#
# MoNetSegmentationTest
#


class MoNetSegmentationTest(ScriptedLoadableModuleTest):
    """Self-test: synthetic volumes built offline (and the sample CT when the data folder is
    there). The test bodies are in MoNetSegmentationLib.selftest, which pytest also runs."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MoNetSegmentationLib.dependencies import ensureTorch

        if not ensureTorch():  # "Reload and Test" without PyTorch: offer the installation first
            raise RuntimeError("the self-tests need PyTorch, which is not installed")
        self.setUp()
        self.test_GeometryIsExact()
        self.setUp()
        self.test_BundledModel()
        self.setUp()
        self.test_RealCT()

    def test_GeometryIsExact(self):
        from MoNetSegmentationLib import selftest

        self.delayDisplay("Synthetic CTs in four geometries, threshold network")
        counts = selftest.runGeometrySelfTest(slicer.mrmlScene, log=logging.info)
        self.assertEqual(len(counts), len(selftest.GEOMETRIES))
        self.delayDisplay("Test passed")

    def test_BundledModel(self):
        from MoNetSegmentationLib import selftest

        self.delayDisplay(f"Bundled model {DEFAULT_MODEL} on a synthetic CT")
        selftest.runBundledModelSelfTest(slicer.mrmlScene, log=logging.info)
        self.delayDisplay("Test passed")

    def test_RealCT(self):
        from MoNetSegmentationLib import selftest
        from MoNetSegmentationLib.engine import importEngine

        importEngine()
        from liteseg.io.data import data_root

        if not (data_root() / selftest.REAL_CT).is_file():
            logging.warning(f"MoNetSegmentation self-test: no sample CT in {data_root()} (set LITESEG_DATA); skipped")
            return
        self.delayDisplay("Sample abdominal CT, bundled model")
        volumesLogic = slicer.modules.volumes.logic()
        dice = selftest.runRealCTSelfTest(slicer.mrmlScene, volumesLogic, data_root(), log=logging.info)
        self.assertGreater(dice, 0.5)
        self.delayDisplay("Test passed")
