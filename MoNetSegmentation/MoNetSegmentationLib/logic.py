"""The module's logic without Qt: segment a volume node into a segmentation node.

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

import time
from pathlib import Path
from typing import Callable, Optional, Union

from .engine import DEFAULT_MODEL, ModelInfo, availableModels, importEngine

importEngine()
from liteseg.errors import Cancelled, LiteSegError  # noqa: E402  (torch-free module)
from liteseg.progress import CancelFlag, ProgressCallback, is_cancelled as isCancelled  # noqa: E402  (torch-free)

__all__ = ["SegmentationLogic", "Cancelled", "DEFAULT_MODEL"]

# The engine's messages name its command-line options; say what to do from Python instead.
_CLI_HINTS = {"(use --allow-non-ct to override)": "(tick 'Skip the intensity check' in the module panel, or pass allowNonCT=True to process(), to override)"}


def engineMessage(error: Exception) -> str:
    message = str(error)
    for cli, python in _CLI_HINTS.items():
        message = message.replace(cli, python)
    return message


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
            region it finds (several times faster); None uses the model card's choice (on for the
            bundled pancreas model, whose card records the check against full-volume inference).
        :raises ValueError: no input, not a scalar volume, not 3D, transformed volume, not a CT
            for a CT model, unknown model or bad weights, output under another transform, ...
        :return: the vtkMRMLSegmentationNode.
        """
        started = time.perf_counter()
        report = progress or (lambda fraction, message: None)
        from . import segmentation_writer, volume_bridge

        volume_bridge.checkScalarVolume(inputVolume)
        scene = inputVolume.GetScene()
        if scene is None:
            raise ValueError(f"input volume {volume_bridge.nodeLabel(inputVolume)} is not in a scene")

        report(0.0, f"Reading {inputVolume.GetName()}")
        timings = {}
        image = volume_bridge.volumeToImage(inputVolume, applyParentTransform=applyParentTransform)
        timings["read"] = time.perf_counter() - started
        if outputSegmentation is not None:
            self._checkOutput(inputVolume, outputSegmentation)

        report(0.02, f"Loading model {model}")
        mark = time.perf_counter()
        network, card = self.loadModel(model)
        timings["load"] = time.perf_counter() - mark
        if threshold is None:
            threshold = card.threshold
        localisation = card.localisation
        if localizeFirst is not None:
            from liteseg.segmentation.localisation import Localisation

            localisation = (localisation or Localisation()) if localizeFirst else None
        if isCancelled(cancel):
            raise Cancelled("segmentation cancelled")

        from liteseg.segmentation.inference import segment_image

        def engineProgress(fraction: float, message: str) -> None:
            report(min(0.95, 0.05 + 0.9 * fraction), f"Segmenting: {message}")

        try:
            result = segment_image(
                image,
                network,
                card.preprocessing,
                threshold=float(threshold),
                keep_largest=bool(keepLargestComponent),
                allow_non_ct=bool(allowNonCT),
                localisation=localisation,
                progress=engineProgress,
                cancel=cancel,
            )
        except LiteSegError as error:
            raise ValueError(f"cannot segment {volume_bridge.nodeLabel(inputVolume)}: {engineMessage(error)}") from error
        timings.update(result.seconds)
        if isCancelled(cancel):
            raise Cancelled("segmentation cancelled")

        # The GUI keeps processing events while the engine runs: the nodes may be gone.
        if inputVolume.GetScene() is not scene:
            raise ValueError("the input volume was removed from the scene during the segmentation")
        if outputSegmentation is not None and outputSegmentation.GetScene() is not scene:
            raise ValueError("the output segmentation was removed from the scene during the segmentation")

        report(0.95, "Writing segmentation")
        mark = time.perf_counter()
        import SimpleITK as sitk

        labels = sitk.GetArrayViewFromImage(result.labelmap)
        created = outputSegmentation is None
        if created:
            outputSegmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{inputVolume.GetName()} segmentation")
        try:
            if created:
                outputSegmentation.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
            outputSegmentation.CreateDefaultDisplayNodes()  # none yet when made by a node selector
            if created or outputSegmentation.GetSegmentation().GetNumberOfSegments() == 0:
                segmentation_writer.placeInSubjectHierarchy(outputSegmentation, inputVolume)
            wasModifying = outputSegmentation.StartModify()
            try:
                for label in card.labels:
                    segmentation_writer.writeSegment(outputSegmentation, labels == int(label.get("value", 1)), inputVolume, label)
            finally:
                outputSegmentation.EndModify(wasModifying)
            if show3D:
                outputSegmentation.CreateClosedSurfaceRepresentation()
        except Exception:
            if created:
                scene.RemoveNode(outputSegmentation)
            raise
        timings["write"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started

        self.lastTimings = timings
        self.lastVolumeMl = result.foreground_ml
        self.lastMessage = result.message  # e.g. the localisation pass found nothing: empty segment
        self.lastModel = card
        report(1.0, f"Completed in {timings['total']:.1f} s")
        return outputSegmentation

    @staticmethod
    def _checkOutput(inputVolume, outputSegmentation) -> None:
        from .volume_bridge import nodeLabel

        if not outputSegmentation.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(
                f"output {nodeLabel(outputSegmentation)} is a {outputSegmentation.GetClassName()}, not a segmentation"
            )
        if outputSegmentation.GetScene() is not inputVolume.GetScene():
            raise ValueError("the output segmentation is not in the input volume's scene")
        if (outputSegmentation.GetTransformNodeID() or "") != (inputVolume.GetTransformNodeID() or ""):
            raise ValueError(
                f"output segmentation {nodeLabel(outputSegmentation)} is not under the same transform as the input "
                f"volume {nodeLabel(inputVolume)}: the result would be misplaced; choose another output or create a new one"
            )
