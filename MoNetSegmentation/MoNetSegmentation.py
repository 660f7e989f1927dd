"""MoNetSegmentation: pancreas segmentation of abdominal CT on the CPU with a very small network.

A thin Slicer adapter over the LiteSeg engine (`liteseg`): the work is done by the extension's
shared Qt-free library `LiteSegSlicerLib` (volume bridge, segmentation writer, logic, self-test
body), tested on Slicer's non-Qt core; this file holds the Slicer module, its parameter node, its
widget (over the shared `LiteSegModuleWidget`), the logic with Slicer's parameter node, and the
self-test entry points.
"""

import logging
from pathlib import Path
from typing import Annotated

try:
    import LiteSegSlicerLib  # noqa: F401  (installed extension and build tree: beside this file)
except ImportError:  # a checkout: LiteSegSlicer/ beside this module's folder puts itself on sys.path
    import runpy

    runpy.run_path(str(Path(__file__).resolve().parents[1] / "LiteSegSlicer" / "LiteSegSlicerLib" / "paths.py"))["addCheckoutPaths"]()

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest
from slicer.parameterNodeWrapper import Choice, Decimals, SingleStep, WithinRange, parameterNodeWrapper
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from LiteSegSlicerLib.models import DEFAULT_MODEL, availableModels, bundledModelNames
from LiteSegSlicerLib.segmentation_logic import SegmentationLogic
from LiteSegSlicerLib.widget import LiteSegModuleWidget, _, translate  # _: slicer.i18n.tr (or a stand-in before 5.4)


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


@parameterNodeWrapper
class MoNetSegmentationParameterNode:
    """The module's choices, saved with the scene; each is bound to a widget of the .ui file by
    that widget's SlicerParameterName property.

    inputVolume - the CT to segment.
    outputSegmentation - where to write; none creates a new segmentation.
    model - bundled model name (the selector shows the versions).
    threshold - probability threshold of the pancreas.
    keepLargestComponent - keep only the largest connected component.
    localizeFirst - a coarse pass first, then segment only the regions around what it finds (faster).
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


class MoNetSegmentationWidget(LiteSegModuleWidget):
    """The shared panel (run / Cancel, parameter node, progress) with the segmentation's texts."""

    runText = _("Segment pancreas")
    runToolTip = _("Segment the pancreas in the input volume")
    cancelToolTip = _("Stop the segmentation (nothing is written)")
    failureMessage = _("Pancreas segmentation failed.")
    modelChoices = staticmethod(bundledModelNames)

    def createLogic(self):
        return MoNetSegmentationLogic()

    def setupPanel(self) -> None:
        self.runButton = self.ui.applyButton

    def setParameterNode(self, inputParameterNode) -> None:
        super().setParameterNode(inputParameterNode)
        if inputParameterNode:
            self.labelModels(self.ui.modelSelector, availableModels())

    def processArguments(self, parameters) -> dict:
        return dict(inputVolume=parameters.inputVolume, outputSegmentation=parameters.outputSegmentation,
                    model=parameters.model, threshold=parameters.threshold,
                    keepLargestComponent=parameters.keepLargestComponent, localizeFirst=parameters.localizeFirst,
                    allowNonCT=parameters.allowNonCT, show3D=parameters.show3D)

    def showResult(self, output) -> None:
        self._parameterNode.outputSegmentation = output
        seconds = self.logic.lastTimings
        self.ui.statusLabel.text = _("Completed in {total:.1f} s (inference {inference:.1f} s), pancreas {ml:.1f} mL").format(
            total=seconds.get("total", 0.0), inference=seconds.get("inference", 0.0), ml=self.logic.lastVolumeMl
        )
        if self.logic.lastMessage:  # e.g. nothing found by the localisation pass
            self.ui.statusLabel.text += ": " + self.logic.lastMessage
        logging.info(f"MoNetSegmentation: {output.GetName()} in {seconds}")


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


class MoNetSegmentationTest(ScriptedLoadableModuleTest):
    """Self-test: synthetic volumes built offline (and the sample CT when the data folder is
    there). The test bodies are in LiteSegSlicerLib.segmentation_selftest, which pytest also runs."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        from LiteSegSlicerLib import segmentation_selftest  # SimpleITK: imported when testing only

        self.selftest = segmentation_selftest

    def runTest(self):
        from LiteSegSlicerLib.dependencies import requireTorchForSelfTests

        requireTorchForSelfTests()  # "Reload and Test" without PyTorch: offers the installation first
        for test in (self.test_GeometryIsExact, self.test_BundledModel, self.test_RealCT):
            self.setUp()
            test()

    def test_GeometryIsExact(self):
        self.delayDisplay("Synthetic CTs in four geometries, threshold network")
        counts = self.selftest.runGeometrySelfTest(slicer.mrmlScene, log=logging.info)
        self.assertEqual(len(counts), len(self.selftest.GEOMETRIES))
        self.delayDisplay("Test passed")

    def test_BundledModel(self):
        self.delayDisplay(f"Bundled model {DEFAULT_MODEL} on a synthetic CT")
        self.selftest.runBundledModelSelfTest(slicer.mrmlScene, log=logging.info)
        self.delayDisplay("Test passed")

    def test_RealCT(self):
        dataRoot = self.selftest.dataRootWith(self.selftest.REAL_CT, "MoNetSegmentation self-test: no sample CT")
        if dataRoot is not None:
            self.delayDisplay("Sample abdominal CT, bundled model")
            dice = self.selftest.runRealCTSelfTest(slicer.mrmlScene, slicer.modules.volumes.logic(), dataRoot, log=logging.info)
            self.assertGreater(dice, 0.5)
            self.delayDisplay("Test passed")
