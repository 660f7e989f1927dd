"""MoNetSegmentation's logic without Qt: segment a volume node into a segmentation node.

`SegmentationLogic.process` is the scripting and batch API (blocking, like the logic of other
Slicer AI extensions); the module widget calls it with a progress callback and a cancel flag.
In Slicer, `MoNetSegmentation.MoNetSegmentationLogic` is this class with Slicer's
`ScriptedLoadableModuleLogic` (parameter node) mixed in:

    import MoNetSegmentation
    logic = MoNetSegmentation.MoNetSegmentationLogic()
    segmentation = logic.process(slicer.util.getNode("CT"))           # bundled MoNet pancreas model
    print(logic.lastTimings, logic.lastVolumeMl)

Nothing here imports torch, SimpleITK or the engine's inference before `process` (or
`loadModel`) runs, so the module loads in a Slicer without torch and asks to install it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from .models import DEFAULT_MODEL, ModelInfo, availableModels
from .processing import (
    Cancelled,
    CancelFlag,
    LiteSegError,
    ProcessRun,
    ProgressCallback,
    checkModelPath,
    checkOutputSegmentation,
    checkThreshold,
    engineMessage,
)

__all__ = ["SegmentationLogic", "Cancelled", "DEFAULT_MODEL"]


class SegmentationLogic:
    """Segments a scalar volume node with a LiteSeg model into a vtkMRMLSegmentationNode.

    `modelLoader(model) -> (network, card)` defaults to `liteseg.segmentation.inference.load_model` (bundled
    model name or model card path, weights checked against the card's sha256); loaded models are
    kept for the next run.
    """

    def __init__(self, modelLoader: Optional[Callable] = None) -> None:
        self._modelLoader = modelLoader
        self._models: dict[str, tuple] = {}
        self.lastTimings: dict[str, float] = {}
        self.lastVolumeMl: float = 0.0
        self.lastModel = None  # the card of the last run
        self.lastMessage = ""  # what the user should know about the last run's result, if anything

    # ------------------------------------------------------------------ models
    def availableModels(self) -> list[ModelInfo]:
        """Bundled models (name, version, card path), sorted by name; works without torch."""
        return availableModels()

    def loadModel(self, model: Union[str, Path] = DEFAULT_MODEL) -> tuple:
        """(network, card) of a bundled model name or a model card path; ValueError when it
        cannot be loaded (unknown name, missing or tampered weights)."""
        key = str(model)
        if key not in self._models:
            loader = self._modelLoader
            if loader is None:
                checkModelPath(model)
                from liteseg.segmentation.inference import load_model as loader
            try:
                self._models[key] = loader(model)
            except LiteSegError as error:
                raise ValueError(f"cannot load model {key!r}: {engineMessage(error)}") from error
        return self._models[key]

    # ------------------------------------------------------------------ processing
    def process(
        self,
        inputVolume,
        outputSegmentation=None,
        model: Union[str, Path] = DEFAULT_MODEL,
        threshold: Optional[float] = None,
        keepLargestComponent: bool = False,
        progress: Optional[ProgressCallback] = None,
        cancel: CancelFlag = None,
        allowNonCT: bool = False,
        applyParentTransform: bool = False,
        show3D: bool = False,
        localizeFirst: Optional[bool] = None,
    ):
        """Segment `inputVolume` and return the segmentation node holding the result (blocking).

        :param inputVolume: vtkMRMLScalarVolumeNode, e.g. an abdominal CT in Hounsfield units.
        :param outputSegmentation: vtkMRMLSegmentationNode to write into; None creates a new one
            named "<volume> segmentation". A new or empty segmentation is put under the volume's
            study in the subject hierarchy and gets the volume as reference geometry.
            In an existing segmentation only the model's segment (e.g. "Pancreas") is written,
            replacing a segment of that name; the other segments are kept as they are.
        :param model: bundled model name (see `availableModels()`) or path of a model card .json.
        :param threshold: probability threshold in (0, 1); None uses the model card's.
        :param keepLargestComponent: keep only the largest connected component.
        :param progress: called as progress(fraction in [0, 1], message) during the run.
        :param cancel: threading.Event or callable returning True to stop; raises `Cancelled`
            and leaves the scene unchanged.
        :param allowNonCT: segment with a CT model even if the volume does not look like a CT.
        :param applyParentTransform: a volume under a linear transform is refused unless this is
            True; it is then segmented as shown (the volume is not modified) and a new output
            segmentation is put under the same transform.
        :param show3D: also create the closed-surface representation (shown in 3D views).
        :param localizeFirst: run a coarse pass over every few slices first and segment only the
            regions around what it finds (several times faster); None uses the model card's choice (on for the
            bundled pancreas model, whose card records the check against full-volume inference).
        :raises ValueError: no input, not a scalar volume (or a label map), not 3D, transformed
            volume, input or output removed from the scene during the run, bad threshold, not a CT
            for a CT model, unknown model or bad weights, output under another transform, ...
        :return: the vtkMRMLSegmentationNode.
        """
        from . import segmentation_writer
        from .volume_bridge import nodeLabel

        run = ProcessRun("segmentation", inputVolume, progress, cancel)
        checkThreshold(threshold)
        checkOutputSegmentation(inputVolume, outputSegmentation)
        run.checkStillInScene(("output segmentation", outputSegmentation))  # and at every later step
        image = run.readVolume(applyParentTransform)
        network, card = run.loadModel(lambda: self.loadModel(model), str(model))
        if threshold is None:
            threshold = card.threshold
        localisation = card.localisation
        if localizeFirst is not None:
            from liteseg.segmentation.localisation import Localisation

            localisation = (localisation or Localisation()) if localizeFirst else None

        from liteseg.segmentation.inference import segment_image

        result = run.runEngine(
            lambda engineProgress: segment_image(
                image,
                network,
                card.preprocessing,
                threshold=float(threshold),
                keep_largest=bool(keepLargestComponent),
                allow_non_ct=bool(allowNonCT),
                localisation=localisation,
                progress=engineProgress,
                cancel=cancel,
            ),
            "Segmenting", 0.95, f"cannot segment {nodeLabel(inputVolume)}",
        )
        run.checkStillInScene(("output segmentation", outputSegmentation))

        import SimpleITK as sitk

        labels = sitk.GetArrayViewFromImage(result.labelmap)
        with run.writing(0.95, "Writing segmentation"):
            outputSegmentation, place = run.segmentationToWrite(outputSegmentation, f"{inputVolume.GetName()} segmentation")
            if place:
                segmentation_writer.placeInSubjectHierarchy(outputSegmentation, inputVolume)
            wasModifying = outputSegmentation.StartModify()
            try:
                for label in card.labels:
                    segmentation_writer.writeSegment(outputSegmentation, labels == int(label.get("value", 1)), inputVolume, label)
            finally:
                outputSegmentation.EndModify(wasModifying)
            if show3D:
                outputSegmentation.CreateClosedSurfaceRepresentation()

        self.lastTimings = run.timings
        self.lastVolumeMl = result.foreground_ml
        self.lastMessage = result.message  # e.g. the localisation pass found nothing: empty segment
        self.lastModel = card
        run.finish(f"Completed in {run.timings['total']:.1f} s")
        return outputSegmentation
