"""LowResDetect's logic without Qt: detect objects in a volume node with a LowRes model.

`DetectionLogic.process` is the scripting and batch API (blocking); the module widget calls it
with a progress callback and a cancel flag. In Slicer, `LowResDetect.LowResDetectLogic` is this
class with Slicer's `ScriptedLoadableModuleLogic` (parameter node) mixed in:

    import LowResDetect
    logic = LowResDetect.LowResDetectLogic()
    segmentation, table, rois = logic.process(slicer.util.getNode("CT"), model="/path/lowres-card.json")
    print(logic.lastStatus, logic.lastTimings)
    for row in LowResDetect.tableRows(table):    # or slicer.util.dataframeFromTable(table)
        print(row)
    logic.jumpToDetection(table, 0)               # centre the slice views on the first object

`model=None` uses the only bundled LowRes model (demonstration weights, see its card); without
one it raises a ValueError asking for a model card (.json path).

Nothing here imports torch, SimpleITK or the engine's detection before `process` (or
`loadDetector`) runs, so the module loads in a Slicer without torch and asks to install it first.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

from .models import ModelInfo, availableDetectorModels
from .processing import (
    Cancelled,
    CancelFlag,
    LiteSegError,
    ProcessRun,
    ProgressCallback,
    checkModelPath,
    checkOutputSegmentation,
    checkOutputTable,
    checkThreshold,
    engineMessage,
)

__all__ = ["DetectionLogic", "DetectionOutputs", "Cancelled"]

# The engine's remedies of a missing or ambiguous bundled model, worded for process() (see processing.REMEDIES).
REMEDIES = {
    ("model", "CARD.json"): " with model='CARD.json' (a LowRes model card path)",
    ("model", "NAME"): ": choose one with model=NAME",
    ("precision", "float32"): ": use precision='float32'",
}


class DetectionOutputs(NamedTuple):
    """What `process` returns: unpack as `segmentation, table, rois = logic.process(...)`."""

    segmentationNode: object  # vtkMRMLSegmentationNode, one segment "Lesion <n>" per object
    tableNode: object  # vtkMRMLTableNode, one row per object (detection_outputs.TABLE_COLUMNS)
    roiNodes: list  # vtkMRMLMarkupsROINode "Lesion <n>" per object, the refined boxes


class DetectionLogic:
    """Detects objects in a scalar volume node with a LiteSeg LowRes model.

    `detectorLoader(model) -> (network, preprocessing, card)` defaults to the engine's
    `find_lowres_card` + `load_detector` (bundled model name or model card path, weights checked
    against the card's sha256); loaded models are kept for the next run.
    """

    def __init__(self, detectorLoader: Optional[Callable] = None) -> None:
        self._detectorLoader = detectorLoader
        self._detectors: dict[str, tuple] = {}
        self.lastTimings: dict[str, float] = {}
        self.lastDetections: list = []  # the engine's Detection objects of the last run
        self.lastStatus: str = ""
        self.lastModel = None  # the card of the last run

    # ------------------------------------------------------------------ models
    def availableModels(self) -> list[ModelInfo]:
        """Bundled LowRes models (name, version, card path); empty until LowRes weights are bundled."""
        return availableDetectorModels()

    def loadDetector(self, model: Union[str, Path, None] = None) -> tuple:
        """(network, preprocessing, card) of a bundled LowRes model name or a LowRes model card
        path; None: the only bundled LowRes model. ValueError when it cannot be loaded."""
        key = "" if model is None else str(model)
        if key not in self._detectors:
            try:
                if self._detectorLoader is not None:
                    self._detectors[key] = self._detectorLoader(model)
                else:
                    checkModelPath(model)
                    from liteseg.detection.lowres import find_lowres_card, load_detector

                    card = find_lowres_card(model)
                    network, preprocessing = load_detector(card)
                    self._detectors[key] = (network, preprocessing, card)
            except LiteSegError as error:
                raise ValueError(f"cannot load detection model {key or '(bundled)'!r}: {engineMessage(error, REMEDIES)}") from error
        return self._detectors[key]

    # ------------------------------------------------------------------ processing
    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        model: Union[str, Path, None] = None,
        threshold: Optional[float] = None,
        margin: int = 1,
        progress: Optional[ProgressCallback] = None,
        cancel: CancelFlag = None,
        outputTable=None,
        allowNonCT: bool = False,
        applyParentTransform: bool = False,
        maxVoxelsStage1: Optional[int] = None,
        maxVoxelsStage2: Optional[int] = None,
        precision: str = "auto",
    ) -> DetectionOutputs:
        """Detect objects in `inputVolume` (blocking); returns (segmentation, table, ROIs).

        :param inputVolume: vtkMRMLScalarVolumeNode in any orientation (oblique and left-handed
            grids included), e.g. a CT in Hounsfield units for a HU-window model.
        :param outputSegmentation: vtkMRMLSegmentationNode to write into; None creates one named
            "<volume> detections". Segments of a previous run ("Lesion <n>") are replaced, the
            user's other segments kept. A new or empty segmentation gets the volume as reference
            geometry and is put under the volume's study in the subject hierarchy.
        :param model: LowRes model card path (.json) or bundled LowRes model name; None: the only
            bundled LowRes model.
        :param threshold: probability threshold in (0, 1) of stage 1 and of the final map; None
            uses the model card's (else 0.5).
        :param margin: box margin in low-resolution (x8) voxels, a whole number >= 0; a margin past
            the volume's size gives every box the whole volume.
        :param progress: called as progress(fraction in [0, 1], message) during the run.
        :param cancel: threading.Event or callable returning True to stop; raises `Cancelled`
            and leaves the scene unchanged.
        :param outputTable: vtkMRMLTableNode to fill (its content and the ROIs it made before are
            replaced); None creates "<volume> detections table".
        :param allowNonCT: skip the input intensity check (a HU-window model on a volume that does not
            look like a CT, a grey-level model on values outside 0-255).
        :param applyParentTransform: a volume under a linear transform is refused unless this is
            True; it is then processed as shown (the volume is not modified), a new segmentation
            and the ROIs are put under the same transform, and the table's centres are in world
            coordinates.
        :param maxVoxelsStage1: largest stage-1 tile in input voxels (bounds memory); None: the
            engine's default.
        :param maxVoxelsStage2: largest stage-2 tile in full-resolution voxels (bounds memory);
            None: the engine's default.
        :param precision: of stage 2: "auto" (bfloat16 on CPUs with native bfloat16, else
            float32), "float32" or "bfloat16".
        :raises ValueError: no input, not a scalar volume (or a label map), transformed volume, input
            or output removed from the scene during the run, not a CT for a CT
            model, no or bad model, bad threshold or margin, output under another transform, ...
        :raises Cancelled: when `cancel` was set.
        :return: DetectionOutputs(segmentationNode, tableNode, roiNodes). Finding no object is not
            an error: the segmentation has no lesion segment, the table no row, there is no ROI,
            and `lastStatus` says so.
        """
        from . import detection_outputs as outputs
        from .segmentation_writer import placeInSubjectHierarchy
        from .volume_bridge import nodeLabel

        run = ProcessRun("detection", inputVolume, progress, cancel, remedies=REMEDIES)
        checkThreshold(threshold)
        if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or not math.isfinite(margin) \
                or int(margin) != margin or margin < 0:
            raise ValueError(f"margin must be a whole number of low-resolution voxels >= 0, got {margin!r}: for example 1")
        checkOutputSegmentation(inputVolume, outputSegmentation)
        checkOutputTable(inputVolume, outputTable)
        run.checkStillInScene(("output segmentation", outputSegmentation), ("output table", outputTable))  # and later

        image = run.readVolume(applyParentTransform)
        # A margin past the volume's low-resolution (x8) size grows every box to the whole volume,
        # as that size does; the engine would build a structuring element of the margin's size.
        engineMargin = min(int(margin), max(math.ceil(n / 8) for n in image.GetSize()))
        network, preprocessing, card = run.loadModel(lambda: self.loadDetector(model), str(model or "(bundled LowRes model)"))
        if threshold is None:
            threshold = float(card.data.get("output", {}).get("threshold", 0.5))

        from liteseg.detection.lowres import DEFAULT_MAX_VOXELS_STAGE1, DEFAULT_MAX_VOXELS_STAGE2, detect_image

        result = run.runEngine(
            lambda engineProgress: detect_image(
                image,
                network,
                preprocessing,
                threshold=float(threshold),
                margin=engineMargin,
                max_voxels_stage1=int(maxVoxelsStage1 or DEFAULT_MAX_VOXELS_STAGE1),
                max_voxels_stage2=int(maxVoxelsStage2 or DEFAULT_MAX_VOXELS_STAGE2),
                precision=precision,
                allow_non_ct=bool(allowNonCT),
                progress=engineProgress,
                cancel=cancel,
            ),
            "Detecting", 0.9, f"cannot detect in {nodeLabel(inputVolume)}",
        )
        run.checkStillInScene(("output segmentation", outputSegmentation), ("output table", outputTable))

        detections = result.detections
        with run.writing(0.9, "Writing segmentation, table and ROIs"):
            outputSegmentation, place = run.segmentationToWrite(outputSegmentation, f"{inputVolume.GetName()} detections")
            wasModifying = outputSegmentation.StartModify()
            try:
                outputs.prepareSegmentation(outputSegmentation, inputVolume)
                shape = tuple(reversed(image.GetSize()))
                outputs.writeDetectionSegments(outputSegmentation, detections, inputVolume, shape)
            finally:
                outputSegmentation.EndModify(wasModifying)
            if place:
                placeInSubjectHierarchy(outputSegmentation, inputVolume)

            previousRois = []
            if outputTable is None:
                outputTable = run.addNode("vtkMRMLTableNode", f"{inputVolume.GetName()} detections table")
                placeInSubjectHierarchy(outputTable, inputVolume)
            else:
                previousRois = self._previousRois(outputTable)
            outputs.fillTable(outputTable, detections)

            rois = []
            for detection in detections:
                roi = outputs.createRoi(run.scene, detection, inputVolume)
                run.created.append(roi)
                rois.append(roi)
                placeInSubjectHierarchy(roi, inputVolume)
            outputTable.SetNodeReferenceID(outputs.TABLE_ROLE_SEGMENTATION, outputSegmentation.GetID())
            outputTable.SetNodeReferenceID(outputs.TABLE_ROLE_VOLUME, inputVolume.GetID())
            outputTable.RemoveNodeReferenceIDs(outputs.TABLE_ROLE_ROI)
            for roi in previousRois:  # the ROIs an earlier run made for this table, only those
                if roi.GetScene() is run.scene:
                    run.scene.RemoveNode(roi)
            for roi in rois:
                outputTable.AddNodeReferenceID(outputs.TABLE_ROLE_ROI, roi.GetID())

        self.lastTimings = run.timings
        self.lastDetections = list(detections)
        self.lastModel = card
        if detections:
            self.lastStatus = (
                f"{len(detections)} object(s) found (threshold {float(threshold):.2f}, margin {int(margin)}) "
                f"in {run.timings['total']:.1f} s"
            )
        else:
            self.lastStatus = (
                f"No object found (threshold {float(threshold):.2f}, margin {int(margin)}): "
                "the segmentation and the table are empty"
            )
        run.finish(self.lastStatus)
        return DetectionOutputs(outputSegmentation, outputTable, rois)

    # ------------------------------------------------------------------ navigation
    def jumpToDetection(self, tableNode, row: int) -> tuple[float, float, float]:
        """The RAS centre (world, mm) of the object in `row` (0-based) of a detections table; in
        the Slicer application the slice views are also centred there (Markups logic's
        JumpSlicesToLocation). Without `slicer.app` (scripts on Slicer's core) only returns it."""
        from . import detection_outputs as outputs

        centre = outputs.centreOfRow(tableNode, int(row))
        import slicer

        if getattr(slicer, "app", None) is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*centre, True)
        return centre

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _previousRois(tableNode) -> list:
        """The ROIs that an earlier run made for this table."""
        from . import detection_outputs as outputs

        count = tableNode.GetNumberOfNodeReferences(outputs.TABLE_ROLE_ROI)
        return [roi for roi in (tableNode.GetNthNodeReference(outputs.TABLE_ROLE_ROI, n) for n in range(count)) if roi is not None]
