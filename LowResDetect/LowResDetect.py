"""LowResDetect: detection of objects (lesions) in a 3D volume with a LowRes two-stage network.

A thin Slicer adapter over the LiteSeg engine (`liteseg.detection.lowres`): the work is done by the
extension's shared Qt-free library `LiteSegSlicerLib` (detection logic and outputs, volume bridge,
segment writer, self-test body), tested on Slicer's non-Qt core; this file holds the Slicer module,
its parameter node, its widget (over the shared `LiteSegModuleWidget`), the logic with Slicer's
parameter node, and the self-test entry point.

Outputs of a run: a segmentation with one segment per object ("Lesion 1", "Lesion 2", ...), a
table with one row per object (index, name, centre RAS, box size, volume, maximum probability)
and one markups ROI per object (its refined box). Clicking a table row centres the slice views
on that object.
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
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode

from LiteSegSlicerLib.detection_logic import DetectionLogic
from LiteSegSlicerLib.detection_outputs import detectionRow, tableRows  # noqa: F401  (tableRows for scripts: LowResDetect.tableRows(table))
from LiteSegSlicerLib.models import MODEL_CARD_FILE, detectorChoices, detectorModel
from LiteSegSlicerLib.widget import LiteSegModuleWidget, _, translate  # _: slicer.i18n.tr (or a stand-in before 5.4)


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


class LowResDetectWidget(LiteSegModuleWidget):
    """The shared panel (Detect / Cancel, parameter node, progress) with the results table."""

    runText = _("Detect")
    runToolTip = _("Detect objects in the input volume")
    cancelToolTip = _("Stop the detection (nothing is written)")
    failureMessage = _("Detection failed.")
    modelChoices = staticmethod(detectorChoices)

    def createLogic(self):
        return LowResDetectLogic()

    def setupPanel(self) -> None:
        self.runButton = self.ui.detectButton
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.updateRunButton)

    def _cardFile(self) -> bool:
        return bool(self._parameterNode) and self._parameterNode.model == MODEL_CARD_FILE

    def updatePanel(self) -> None:
        table = self._parameterNode.outputTable if self._parameterNode else None
        self.ui.modelPathLineEdit.enabled = self._cardFile()
        if self.ui.resultsTableView.mrmlTableNode() is not table:
            self.ui.resultsTableView.setMRMLTableNode(table)

    def inputProblem(self):
        problem = super().inputProblem()
        if problem is None and self._cardFile() and not self.ui.modelPathLineEdit.currentPath.strip():
            return _("Choose a LowRes model card file (.json)")
        return problem

    def processArguments(self, parameters) -> dict:
        return dict(inputVolume=parameters.inputVolume, outputSegmentation=parameters.outputSegmentation,
                    model=detectorModel(parameters.model, self.ui.modelPathLineEdit.currentPath),
                    threshold=parameters.threshold, margin=parameters.margin, allowNonCT=parameters.allowNonCT,
                    outputTable=parameters.outputTable)

    def showResult(self, outputs) -> None:
        segmentation, table, rois = outputs
        self._parameterNode.outputSegmentation = segmentation
        self._parameterNode.outputTable = table  # also shows it in the results view
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


class LowResDetectTest(ScriptedLoadableModuleTest):
    """Self-tests: synthetic volumes built offline with a hand-set LowRes model card written to a
    temporary folder (known output), then a real DeepLesion slab from the data folder with the
    bundled model. The test bodies are in LiteSegSlicerLib.detection_selftest, which pytest also runs."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        from LiteSegSlicerLib import detection_selftest  # SimpleITK: imported when testing only

        self.selftest = detection_selftest

    def runTest(self):
        from LiteSegSlicerLib.dependencies import requireTorchForSelfTests

        requireTorchForSelfTests()  # "Reload and Test" without PyTorch: offers the installation first
        for test in (self.test_DetectionsAreExact, self.test_BundledModelOnRealSlab):
            self.setUp()
            test()

    def test_DetectionsAreExact(self):
        self.delayDisplay("Synthetic lesions in four geometries, hand-set LowRes network")
        counts = self.selftest.runGeometrySelfTest(slicer.mrmlScene, log=logging.info)
        self.assertEqual(len(counts), len(self.selftest.GEOMETRIES))
        self.delayDisplay("Test passed")

    def test_BundledModelOnRealSlab(self):
        dataRoot = self.selftest.dataRootWith(self.selftest.REAL_SLAB, "LowResDetect self-test: no DeepLesion slab")
        if dataRoot is not None:
            self.delayDisplay("DeepLesion CT slab, bundled LowRes model")
            dice = self.selftest.runBundledModelSelfTest(slicer.mrmlScene, slicer.modules.volumes.logic(), dataRoot, log=logging.info)
            self.assertGreater(dice, 0.5)
            self.delayDisplay("Test passed")
