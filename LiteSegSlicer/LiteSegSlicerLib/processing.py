"""What the two logics' `process()` share: the input volume check, the scene guard, cancelling,
the engine's progress rescaled into the run's, the engine's errors as ValueErrors whose remedy
names the panel's control and process()'s argument, and the rollback of the nodes a failed run created.

`ProcessRun` is one run; a logic's `process` reads as

    run = ProcessRun("segmentation", inputVolume, progress, cancel)
    checkOutputSegmentation(inputVolume, outputSegmentation)      # before any work
    image = run.readVolume(applyParentTransform)                   # 0.0
    network, card = run.loadModel(lambda: self.loadModel(model), str(model))  # 0.02, then a cancel check
    result = run.runEngine(lambda progress: segment_image(..., progress=progress, cancel=cancel),
                           "Segmenting", 0.95, "cannot segment 'CT'")         # 0.05 .. 0.95, cancel check
    run.checkStillInScene(("output segmentation", outputSegmentation))
    with run.writing(0.95, "Writing segmentation"):                # a failure removes what the run created
        outputSegmentation, place = run.segmentationToWrite(outputSegmentation, "CT segmentation")
        ...
    run.finish("Completed in ...")                                 # 1.0

Nothing here imports torch, SimpleITK or the engine's inference: the volume bridge (SimpleITK) is
imported when a run starts.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Optional

from .paths import importEngine

importEngine()
from liteseg.errors import Cancelled, LiteSegError  # noqa: E402  (torch-free module)
from liteseg.progress import CancelFlag, ProgressCallback, is_cancelled as isCancelled  # noqa: E402,F401  (torch-free)

__all__ = ["Cancelled", "ProcessRun", "engineMessage", "checkOutputSegmentation", "checkOutputTable", "checkThreshold",
           "checkModelPath"]

# How the modules word the engine's remedies (`liteseg.errors.Remedy`: the engine parameter that
# fixes or overrides a problem), keyed by (parameter, value): the panel's control and process()'s
# argument instead of the engine's parameter. Appended to the engine's message.
REMEDIES = {
    ("allow_non_ct", "True"): " (tick 'Skip the intensity check' in the module panel, or pass allowNonCT=True to process(), {effect})",
}


def engineMessage(error: Exception, remedies: Optional[dict] = None) -> str:
    """The engine's message with its remedy worded for Slicer (`REMEDIES`, then `remedies`); a
    remedy without a wording keeps the engine's (Python) one."""
    remedy = getattr(error, "remedy", None)
    wording = {**REMEDIES, **(remedies or {})}.get((remedy.parameter, remedy.value)) if remedy is not None else None
    if wording is None:
        return str(error)
    return getattr(error, "message", str(error)) + wording.format(value=remedy.value, effect=remedy.effect)


def checkThreshold(threshold) -> None:
    """ValueError unless `threshold` is None or a number strictly between 0 and 1 (NaN is not)."""
    if threshold is None:
        return
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = None
    if isinstance(threshold, bool) or value is None or not 0.0 < value < 1.0:
        raise ValueError(
            f"threshold must be between 0 and 1 (exclusive), got {threshold!r}: give a probability such as 0.5, "
            "or None for the model card's"
        )


def checkModelPath(model) -> None:
    """ValueError when `model` names a model card file (a path, or a name ending in .json) that
    does not exist: the engine would report it as an unknown bundled model name."""
    if model is None:
        return
    from pathlib import Path

    if (isinstance(model, Path) or str(model).lower().endswith(".json")) and not Path(model).is_file():
        raise ValueError(
            f"model card not found: {model} (no such file): choose an existing model card (.json) or a bundled model"
        )


def checkOutputSegmentation(inputVolume, outputSegmentation) -> None:
    """ValueError unless `outputSegmentation` (None: to be created) is a segmentation node in the
    input volume's scene, under the same transform as the volume, that holds no segment or is
    edited as a binary labelmap (checked before any work, so that a refused output is untouched)."""
    if outputSegmentation is None:
        return
    from .segmentation_writer import BINARY_LABELMAP, sourceRepresentationName
    from .volume_bridge import nodeLabel

    if not outputSegmentation.IsA("vtkMRMLSegmentationNode"):
        raise ValueError(
            f"output {nodeLabel(outputSegmentation)} is a {outputSegmentation.GetClassName()}, not a segmentation: "
            "choose a segmentation node as output or create a new one"
        )
    if outputSegmentation.GetScene() is not inputVolume.GetScene():
        raise ValueError(
            f"the output segmentation {nodeLabel(outputSegmentation)} is not in the input volume's scene "
            "(removed, or from another scene): choose a segmentation of this scene or create a new one"
        )
    segmentation = outputSegmentation.GetSegmentation()
    if segmentation.GetNumberOfSegments() and sourceRepresentationName(segmentation) != BINARY_LABELMAP:
        raise ValueError(
            f"segmentation {nodeLabel(outputSegmentation)} is edited as '{sourceRepresentationName(segmentation)}', "
            "not as a binary labelmap: choose another output segmentation or create a new one"
        )
    if (outputSegmentation.GetTransformNodeID() or "") != (inputVolume.GetTransformNodeID() or ""):
        raise ValueError(
            f"output segmentation {nodeLabel(outputSegmentation)} is not under the same transform as the input "
            f"volume {nodeLabel(inputVolume)}: the result would be misplaced; choose another output or create a new one"
        )


def checkOutputTable(inputVolume, outputTable) -> None:
    """ValueError unless `outputTable` (None: to be created) is a table node in the volume's scene."""
    if outputTable is None:
        return
    from .volume_bridge import nodeLabel

    if not outputTable.IsA("vtkMRMLTableNode"):
        raise ValueError(f"output table {nodeLabel(outputTable)} is a {outputTable.GetClassName()}, not a table")
    if outputTable.GetScene() is not inputVolume.GetScene():
        raise ValueError(
            f"the output table {nodeLabel(outputTable)} is not in the input volume's scene "
            "(removed, or from another scene): choose a table of this scene or create a new one"
        )


class ProcessRun:
    """One run of a logic's `process()` on `inputVolume` (checked to be a scalar volume in a scene).

    :param task: "segmentation" or "detection", as the messages say it.
    :param progress: progress(fraction in [0, 1], message), or None.
    :param cancel: threading.Event or callable returning True to stop (raises `Cancelled`).
    :param remedies: more {(parameter, value): wording} of the engine's remedies (see `REMEDIES`).
    """

    def __init__(self, task: str, inputVolume, progress: Optional[ProgressCallback] = None,
                 cancel: CancelFlag = None, remedies: Optional[dict] = None) -> None:
        from .volume_bridge import checkScalarVolume, nodeLabel

        self.started = time.perf_counter()
        self.task = task
        self.report = progress or (lambda fraction, message: None)
        self.cancel = cancel
        self.remedies = remedies or {}
        self.timings: dict[str, float] = {}
        self.created: list = []  # the nodes this run added to the scene, removed if it fails
        self.outputs: tuple = ()  # the (what, node) outputs checked by checkStillInScene
        checkScalarVolume(inputVolume)
        if inputVolume.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(
                f"input volume {nodeLabel(inputVolume)} is a label map, not an image: select the image volume "
                "(for example the CT) it was drawn on"
            )
        self.inputVolume = inputVolume
        self.scene = inputVolume.GetScene()
        if self.scene is None:
            raise ValueError(
                f"input volume {nodeLabel(inputVolume)} is not in a scene: add it to the scene or select a volume of the scene"
            )

    def message(self, error: Exception) -> str:
        return engineMessage(error, self.remedies)

    def checkCancelled(self) -> None:
        if isCancelled(self.cancel):
            raise Cancelled(f"{self.task} cancelled")

    def readVolume(self, applyParentTransform: bool = False):
        """The input volume as a SimpleITK image (see `volume_bridge.volumeToImage`)."""
        from .volume_bridge import volumeToImage

        self.report(0.0, f"Reading {self.inputVolume.GetName()}")
        image = volumeToImage(self.inputVolume, applyParentTransform=applyParentTransform)
        self.timings["read"] = time.perf_counter() - self.started
        return image

    def loadModel(self, load: Callable[[], tuple], description: str) -> tuple:
        """`load()`, timed; then a cancel check."""
        self.report(0.02, f"Loading model {description}")
        mark = time.perf_counter()
        loaded = load()
        self.timings["load"] = time.perf_counter() - mark
        self._checkInScene(self.outputs)
        self.checkCancelled()
        return loaded

    def runEngine(self, run: Callable[[ProgressCallback], object], verb: str, end: float, failure: str):
        """`run(progress)`, an engine call whose progress is reported between 0.05 and `end` as
        "<verb>: <message>"; its LiteSegError becomes ValueError("<failure>: <message>"). The
        result's `seconds` join the timings; then a cancel check. An input volume removed from the
        scene during a progress report stops the engine with a ValueError."""

        def engineProgress(fraction: float, message: str) -> None:
            self.report(min(end, 0.05 + (end - 0.05) * fraction), f"{verb}: {message}")
            self._checkInScene(self.outputs)  # the report may process GUI events: stop if the input is gone

        try:
            result = run(engineProgress)
        except LiteSegError as error:
            raise ValueError(f"{failure}: {self.message(error)}") from error
        self.timings.update(result.seconds)
        self.checkCancelled()
        return result

    def checkStillInScene(self, *nodes: tuple) -> None:
        """The input volume and the given (what, node) outputs are still in the scene: the GUI keeps
        processing events while the engine runs, so the nodes may be gone."""
        self.outputs = nodes
        self._checkInScene(nodes)

    def _checkInScene(self, nodes) -> None:
        for what, node in (("input volume", self.inputVolume), *nodes):
            if node is not None and node.GetScene() is not self.scene:
                raise ValueError(
                    f"the {what} was removed from the scene during the {self.task}: nothing was written; "
                    f"select the {what} again and rerun"
                )

    @contextmanager
    def writing(self, fraction: float, message: str):
        """The writing step: timed; on any error the nodes this run created are removed (the
        user's own nodes are never removed) and the error goes on. The progress report may process
        GUI events (a Cancel, a node deleted, the scene closed): checked again after it."""
        self.report(fraction, message)
        self.checkStillInScene(*self.outputs)
        self.checkCancelled()
        mark = time.perf_counter()
        try:
            yield
        except Exception:
            for node in reversed(self.created):
                if node.GetScene() is self.scene:
                    self.scene.RemoveNode(node)
            raise
        self.timings["write"] = time.perf_counter() - mark
        self.timings["total"] = time.perf_counter() - self.started

    def addNode(self, className: str, name: str):
        """A new node in the scene, removed again if the run fails."""
        node = self.scene.AddNewNodeByClass(className, name)
        self.created.append(node)
        return node

    def segmentationToWrite(self, outputSegmentation, name: str) -> tuple:
        """(segmentation node, whether it is new or empty): `outputSegmentation`, or a new one named
        `name` under the input volume's transform; with display nodes (a node selector makes none).
        A new or empty segmentation is to be placed beside the volume in the subject hierarchy."""
        new = outputSegmentation is None
        if new:
            outputSegmentation = self.addNode("vtkMRMLSegmentationNode", name)
            outputSegmentation.SetAndObserveTransformNodeID(self.inputVolume.GetTransformNodeID())
        outputSegmentation.CreateDefaultDisplayNodes()  # none yet when made by a node selector
        return outputSegmentation, new or outputSegmentation.GetSegmentation().GetNumberOfSegments() == 0

    def finish(self, message: str) -> None:
        self.report(1.0, message)
