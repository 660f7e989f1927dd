"""LowResDetect: detection of objects (lesions) in a 3D volume with a LowRes two-stage network.

A thin Slicer adapter over the LiteSeg engine (`liteseg.detection.lowres`): the work is done by the
Qt-free `LowResDetectLib` (logic, outputs, self-test body), which reuses MoNetSegmentationLib's
volume bridge and segment writer and is tested on Slicer's non-Qt core; this file holds the
Slicer module, its widget (GUI wiring only), the logic with Slicer's parameter node, and the
self-test entry point.

Outputs of a run: a segmentation with one segment per object ("Lesion 1", "Lesion 2", ...), a
table with one row per object (index, name, centre RAS, box size, volume, maximum probability)
and one markups ROI per object (its refined box). Clicking a table row centres the slice views
on that object.
"""

import logging
import threading
from typing import Annotated, Optional

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
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode

from LowResDetectLib.shared import MODEL_CARD_FILE, detectorChoices, detectorModel, parameterWidgets

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4
    def _(text):
        return text

    def translate(context, text):
        return text


#
# LowResDetect
#


class LowResDetect(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LowRes Detect")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]  # the shared category
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["LiteSeg developers"]
        self.parent.helpText = _(
            "Detects and segments objects (lesions) in a 3D volume on the CPU with LowRes, a two-stage "
            "network: stage 1 finds boxes at 1/8 resolution, stage 2 refines each box at full resolution. "
            "Outputs a segmentation with one segment per object ('Lesion 1', 'Lesion 2', ..., SNOMED CT "
            "lesion terminology), a table with one row per object and one ROI per object; click a table row "
            "to centre the slice views on it. The bundled model is a demonstration: trained on six DeepLesion "
            "CT slabs (grey levels 0-255, not HU) of five patients; its model card gives its limits. Choose a "
            "LowRes model card (.json) for your own weights. From Python: <code>LowResDetect.LowResDetectLogic()"
            ".process(volumeNode)</code>."
        )
        self.parent.acknowledgementText = _(
            "LowRes: Zakazov et al., a two-stage 3D network for fast CPU segmentation. Engine and module: LiteSeg."
        )


#
# LowResDetectParameterNode
#


@parameterNodeWrapper
class LowResDetectParameterNode:
    """The module's choices, saved with the scene; each is bound to a widget of the .ui file by
    that widget's SlicerParameterName property.

    inputVolume - the volume to search.
    model - a bundled LowRes model's name, or MODEL_CARD_FILE: the card in the path field (read
        on Detect, not saved with the scene).
    threshold - probability threshold of stage 1 and of the refined map.
    margin - box margin in low-resolution (x8) voxels.
    allowNonCT - skip the check that the volume's intensities suit the model (e.g. HU for a CT model).
    outputSegmentation - where to write the segments; none creates a new segmentation.
    outputTable - the detections table; none creates a new table.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: Annotated[str, Choice(detectorChoices())] = detectorChoices()[0]
    threshold: Annotated[float, WithinRange(0.05, 0.95), Decimals(2), SingleStep(0.05)] = 0.5
    margin: Annotated[int, WithinRange(0, 8)] = 1
    allowNonCT: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode


#
# LowResDetectWidget
#


class LowResDetectWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only: parameter node <-> widgets, Detect / Cancel, progress, status, table."""

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
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LowResDetect.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LowResDetectLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.detectButton.connect("clicked(bool)", self.onDetectButton)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self._updateDetectButton)
        self.ui.progressBar.setVisible(False)

        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the module's libraries too, then the module (Slicer reloads only this file)."""
        from MoNetSegmentationLib.reloading import reloadLibraries

        reloadLibraries("LowResDetectLib", "MoNetSegmentationLib")
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateDetectButton)

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

    def setParameterNode(self, inputParameterNode: Optional[LowResDetectParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateDetectButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            if self._parameterNode.model not in detectorChoices():  # a scene saved with another model
                self._parameterNode.model = detectorChoices()[0]  # (the combo box's connector refuses unknown values)
            # Widgets are found by their "SlicerParameterName" property (see the .ui file); the
            # tag of connectParametersToGui (unlike connectGui's on Slicer 5.8) lets exit() disconnect.
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateDetectButton)
            self._updateDetectButton()

    def _updateDetectButton(self, caller=None, event=None) -> None:
        table = self._parameterNode.outputTable if self._parameterNode else None
        cardFile = bool(self._parameterNode) and self._parameterNode.model == MODEL_CARD_FILE
        self.ui.modelPathLineEdit.enabled = cardFile
        if self.ui.resultsTableView.mrmlTableNode() is not table:
            self.ui.resultsTableView.setMRMLTableNode(table)
        if self._running:
            self.ui.detectButton.text = _("Cancel")
            self.ui.detectButton.toolTip = _("Stop the detection (nothing is written)")
            self.ui.detectButton.enabled = True
            return
        self.ui.detectButton.text = _("Detect")
        if not (self._parameterNode and self._parameterNode.inputVolume):
            self.ui.detectButton.toolTip = _("Select an input volume")
            self.ui.detectButton.enabled = False
        elif cardFile and not self.ui.modelPathLineEdit.currentPath.strip():
            self.ui.detectButton.toolTip = _("Choose a LowRes model card file (.json)")
            self.ui.detectButton.enabled = False
        else:
            self.ui.detectButton.toolTip = _("Detect objects in the input volume")
            self.ui.detectButton.enabled = True

    def onDetectButton(self) -> None:
        if self._running:  # the button reads "Cancel" while running
            self._cancel.set()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        with slicer.util.tryWithErrorDisplay(_("Detection failed."), waitCursor=True):
            if not self._torchReady():
                return
            self._run()

    def _torchReady(self) -> bool:
        """PyTorch importable, installed first if the user agrees (see `torchReadyForPanel`)."""
        from MoNetSegmentationLib.dependencies import torchReadyForPanel

        return torchReadyForPanel(self.ui.detectButton, self.ui.statusLabel, self._updateDetectButton, _)

    def _run(self) -> None:
        from LowResDetectLib.logic import Cancelled

        parameters = self._parameterNode
        self._cancel.clear()
        self._setRunning(True)
        try:
            segmentation, table, rois = self.logic.process(
                parameters.inputVolume,
                parameters.outputSegmentation,
                model=detectorModel(parameters.model, self.ui.modelPathLineEdit.currentPath),
                threshold=parameters.threshold,
                margin=parameters.margin,
                allowNonCT=parameters.allowNonCT,
                outputTable=parameters.outputTable,
                progress=self._onProgress,
                cancel=self._cancel,
            )
        except Cancelled:
            self.ui.statusLabel.text = _("Cancelled: nothing was written")
            return
        finally:
            self._setRunning(False)
        parameters.outputSegmentation = segmentation
        parameters.outputTable = table  # also shows it in the results view
        self.ui.statusLabel.text = self.logic.lastStatus
        logging.info(f"LowResDetect: {self.logic.lastStatus}; {self.logic.lastTimings}")

    def onTableClicked(self, index) -> None:
        """Centre the slice views on the object of the clicked row (the view's row mapped through
        its sort proxy to the table model, then to the table)."""
        table = self._parameterNode.outputTable if self._parameterNode else None
        if table is None or not index.isValid():
            return
        row = detectionRow(table, self.ui.resultsTableView.sortFilterProxyModel().mapToSource(index).row())
        if row is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot go to this object.")):
            self.logic.jumpToDetection(table, row)

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self.ui.parametersCollapsibleButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self._updateDetectButton()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # keeps the GUI (and the Cancel button) responsive


#
# LowResDetectLogic
#

from LowResDetectLib.logic import DetectionLogic  # noqa: E402
from LowResDetectLib.outputs import detectionRow, tableRows  # noqa: E402,F401  (tableRows for scripts: LowResDetect.tableRows(table))


class LowResDetectLogic(ScriptedLoadableModuleLogic, DetectionLogic):
    """Slicer's scripted-module logic (parameter node) over the Qt-free `DetectionLogic`.

    `process(inputVolume, outputSegmentation=None, model=None, threshold=None, margin=1,
    progress=None, cancel=None, ...) -> DetectionOutputs(segmentationNode, tableNode, roiNodes)`
    is blocking; `jumpToDetection(tableNode, row)` centres the slice views on an object and
    returns its RAS centre. See DetectionLogic.process.
    """

    def __init__(self, detectorLoader=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        DetectionLogic.__init__(self, detectorLoader)

    def getParameterNode(self):
        return LowResDetectParameterNode(super().getParameterNode())


#
# LowResDetectTest
#


class LowResDetectTest(ScriptedLoadableModuleTest):
    """Self-tests: synthetic volumes built offline with a hand-set LowRes model card written to a
    temporary folder (known output), then a real DeepLesion slab from the data folder with the
    bundled model. The test bodies are in LowResDetectLib.selftest, which pytest also runs."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from MoNetSegmentationLib.dependencies import ensureTorch

        if not ensureTorch():  # "Reload and Test" without PyTorch: offer the installation first
            raise RuntimeError("the self-tests need PyTorch, which is not installed")
        self.setUp()
        self.test_DetectionsAreExact()
        self.setUp()
        self.test_BundledModelOnRealSlab()

    def test_DetectionsAreExact(self):
        from LowResDetectLib import selftest

        self.delayDisplay("Synthetic lesions in four geometries, hand-set LowRes network")
        counts = selftest.runGeometrySelfTest(slicer.mrmlScene, log=logging.info)
        self.assertEqual(len(counts), len(selftest.GEOMETRIES))
        self.delayDisplay("Test passed")

    def test_BundledModelOnRealSlab(self):
        from LowResDetectLib import selftest
        from liteseg.io.data import data_root

        if not (data_root() / selftest.REAL_SLAB).is_file():
            logging.warning(f"LowResDetect self-test: no DeepLesion slab in {data_root()} (set LITESEG_DATA); skipped")
            return
        self.delayDisplay("DeepLesion CT slab, bundled LowRes model")
        dice = selftest.runBundledModelSelfTest(slicer.mrmlScene, slicer.modules.volumes.logic(), data_root(), log=logging.info)
        self.assertGreater(dice, 0.5)
        self.delayDisplay("Test passed")
