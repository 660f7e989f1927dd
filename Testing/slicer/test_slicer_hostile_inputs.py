"""Hostile inputs to both logics (MoNetSegmentation's SegmentationLogic, LowResDetect's
DetectionLogic) on Slicer's real MRML core: each case ends in a clear ValueError (what is wrong,
what to do; no traceback text, no command-line flag, no engine parameter name) or a correct result,
and the user's data in the scene is never changed: voxels of the user's volumes, ids, names,
colours, terminology and voxels of the user's own segments, the nodes of the scene (a failed run
leaves no node behind). VTK errors and warnings fail a test (the `core` fixture).

The models are tiny: the threshold network of MoNetSegmentation's self-test and the hand-set LowRes
weights of LowResDetect's self-test (written as a real model card); cases that need the engine's
own loader use a random-weight MoNet card or that LowRes card.

What this does not cover: the Qt widget (Apply/Cancel, error display), which needs the Slicer
application.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import core, random_monet_card  # noqa: E402,F401  (pytest fixtures)

from LiteSegSlicerLib import detection_selftest, segmentation_writer, volume_bridge  # noqa: E402
from LiteSegSlicerLib.detection_logic import Cancelled, DetectionLogic  # noqa: E402
from LiteSegSlicerLib.segmentation_logic import SegmentationLogic  # noqa: E402
from LiteSegSlicerLib.segmentation_selftest import phantomImage, thresholdModel  # noqa: E402
from LiteSegSlicerLib.selftest_common import GEOMETRIES, rotation  # noqa: E402

TERMINOLOGY_TAG = slicer.vtkSegment.GetTerminologyEntryTagName()


# ---------------------------------------------------------------------- the two logics
class Segmentation:
    """MoNetSegmentation's logic with the threshold network (its result: 'Pancreas')."""

    kind = "segmentation"
    verb = "segment"
    ownSegments = ["Pancreas"]

    def __init__(self, thresholdModel_, cardFactory) -> None:
        self.thresholdModel = thresholdModel_
        self.cardFactory = cardFactory
        self.logic = SegmentationLogic(modelLoader=lambda model: thresholdModel_)

    def image(self) -> sitk.Image:
        return phantomImage(GEOMETRIES["axial"])

    def run(self, volume, output=None, **options):
        return self.logic.process(volume, output, **options)

    def segmentationOf(self, result):
        return result

    def engineLogic(self):
        """The logic with the engine's own loader (model names and card files)."""
        return SegmentationLogic()

    def card(self) -> Path:
        """A real model card (random MoNet weights), in its own folder."""
        return self.cardFactory()


class Detection:
    """LowResDetect's logic with the self-test's LowRes card (its result: 'Lesion 1', 'Lesion 2')."""

    kind = "detection"
    verb = "detect in"
    ownSegments = ["Lesion 1", "Lesion 2"]

    def __init__(self, card: Path) -> None:
        self.cardPath = card
        self.logic = DetectionLogic()

    def image(self) -> sitk.Image:
        return detection_selftest.lesionImage()

    def run(self, volume, output=None, **options):
        options.setdefault("model", self.cardPath)
        return self.logic.process(volume, output, **options)

    def segmentationOf(self, result):
        return result.segmentationNode

    def engineLogic(self):
        return DetectionLogic()

    def card(self) -> Path:
        return self.cardPath


@pytest.fixture(scope="module")
def threshold_model():
    return thresholdModel()


@pytest.fixture(scope="module")
def lowres_card(tmp_path_factory) -> Path:
    return detection_selftest.writeDetectorCard(tmp_path_factory.mktemp("lowres-card"))


@pytest.fixture(params=["segmentation", "detection"])
def logic(request, threshold_model, lowres_card):
    if request.param == "segmentation":
        return Segmentation(threshold_model, lambda: request.getfixturevalue("random_monet_card").path)
    return Detection(lowres_card)


# ---------------------------------------------------------------------- scene state
def _arrayState(array: np.ndarray) -> tuple:
    array = np.ascontiguousarray(array)
    return (str(array.dtype), array.shape, hashlib.sha256(array.tobytes()).hexdigest())


def segmentState(node, segmentId: str) -> dict:
    segment = node.GetSegmentation().GetSegment(segmentId)
    return {
        "name": segment.GetName(),
        "colour": tuple(round(c, 6) for c in segment.GetColor()),
        "terminology": segmentation_writer.segmentTag(segment, TERMINOLOGY_TAG),
        "note": segmentation_writer.segmentTag(segment, "UserNote"),
        "voxels": _arrayState(np.round(segmentation_writer.segmentPointsRas(node, segmentId), 6)),
    }


def segmentationState(node) -> dict:
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return {
        "ids": ids,
        "segments": {segmentId: segmentState(node, segmentId) for segmentId in ids},
        "source": segmentation_writer.sourceRepresentationName(segmentation),
        "reference": node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()),
        "display": node.GetDisplayNodeID(),
    }


def sceneState(scene) -> dict:
    """What a run must not change: every node (id, class, name, transform, subject hierarchy
    parent), the voxels and geometry of every volume, the segments of every segmentation, the
    content of every table."""
    sh = scene.GetSubjectHierarchyNode()
    nodes, volumes, segmentations, tables = [], {}, {}, {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        parent = None
        if sh is not None and node.IsA("vtkMRMLDisplayableNode"):
            item = sh.GetItemByDataNode(node)
            parent = sh.GetItemParent(item) if item else None
        transform = node.GetTransformNodeID() if node.IsA("vtkMRMLTransformableNode") else None
        nodes.append((node.GetID(), node.GetClassName(), node.GetName(), transform, parent))
        if node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None and node.GetImageData().GetNumberOfPoints():
            volumes[node.GetID()] = (_arrayState(slicer.util.arrayFromVolume(node)), volume_bridge.ijkToRas(node).tolist())
        elif node.IsA("vtkMRMLSegmentationNode"):
            segmentations[node.GetID()] = segmentationState(node)
        elif node.IsA("vtkMRMLTableNode"):
            table = node.GetTable()
            tables[node.GetID()] = [
                [table.GetValue(r, c).ToString() for c in range(table.GetNumberOfColumns())] for r in range(table.GetNumberOfRows())
            ]
    return {"nodes": nodes, "volumes": volumes, "segmentations": segmentations, "tables": tables}


def assertUnchanged(scene, before: dict) -> None:
    after = sceneState(scene)
    assert after["nodes"] == before["nodes"], "nodes added, removed or changed"
    assert after == before


def assertClearError(error: BaseException, pattern: str) -> str:
    """A ValueError whose one-line message matches `pattern` and holds no traceback, command-line
    flag or engine (Python) parameter name."""
    assert isinstance(error, ValueError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    assert "Traceback" not in message and 'File "' not in message and "\n" not in message, message
    assert not re.search(r"(^|[\s(])--[a-z]", message), f"command-line flag in {message!r}"
    assert not re.search(r"\b(allow_non_ct|max_voxels_stage\d|apply_parent_transform)\b", message), message
    return message


def failsClearly(scene, call, pattern: str) -> str:
    """`call()` raises a clear ValueError and the scene is exactly as before."""
    before = sceneState(scene)
    with pytest.raises(Exception) as caught:
        call()
    message = assertClearError(caught.value, pattern)
    assertUnchanged(scene, before)
    return message


def addVolume(core, image: sitk.Image, name: str = "ct", className: str = "vtkMRMLScalarVolumeNode"):
    return volume_bridge.addVolumeFromImage(core.scene, image, name, className)


def withArray(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def userSegmentation(core, volume, name: str = "my segmentation"):
    """A user's segmentation: three segments with their own names, colours, terminology and a
    note, two of them holding voxels (one overlapping everything the modules find), one empty."""
    node = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    array = slicer.util.arrayFromVolume(volume)
    masks = {
        "Body": (array > -500, (0.2, 0.3, 0.4), "Segmentation category and type - 3D Slicer General Anatomy list"
                 "~SCT^123037004^Anatomical Structure~SCT^38266002^Entire body as a whole~^^~~^^~^^"),
        "Left half": (np.indices(array.shape)[2] < array.shape[2] // 2, (0.9, 0.1, 0.6), ""),
        "To do": (np.zeros(array.shape, bool), (0.1, 0.8, 0.1), "Segmentation category and type - 3D Slicer General "
                  "Anatomy list~SCT^49755003^Morphologically Altered Structure~SCT^4147007^Mass~^^~~^^~^^"),
    }
    for segmentName, (mask, colour, terminology) in masks.items():
        segmentId = node.GetSegmentation().AddEmptySegment(f"user_{segmentName.replace(' ', '_')}", segmentName, colour)
        segment = node.GetSegmentation().GetSegment(segmentId)
        if terminology:
            segment.SetTag(TERMINOLOGY_TAG, terminology)
        segment.SetTag("UserNote", f"drawn by hand: {segmentName}")
        if mask.any():
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                segmentation_writer.orientedLabelmap(mask.astype(np.uint8), volume), node, segmentId)
    assert node.GetSegmentation().GetNumberOfSegments() == 3
    return node


def removeAt(stage: str, action):
    """A progress callback that calls `action()` at the first message starting with `stage`;
    `progress.done` holds that message, `progress.after` the messages reported after it."""
    done, after = [], []

    def progress(fraction, message):
        if done:
            after.append(message)
        elif message.startswith(stage):
            done.append(message)
            action()

    progress.done, progress.after = done, after
    return progress


# ---------------------------------------------------------------------- input volumes
def test_label_map_volume_is_refused(core, logic):
    labels = sitk.Cast(logic.image() > 100, sitk.sitkUInt8)
    labelmap = addVolume(core, labels, "ct-label", "vtkMRMLLabelMapVolumeNode")
    failsClearly(core.scene, lambda: logic.run(labelmap), r"'ct-label' is a label map, not an image: select the image volume")
    # allowNonCT (which skips the intensity check) does not make a label map an image
    failsClearly(core.scene, lambda: logic.run(labelmap, allowNonCT=True), r"is a label map")


def test_volume_without_image_data_is_refused(core, logic):
    empty = core.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    failsClearly(core.scene, lambda: logic.run(empty), r"input volume 'empty' holds no voxels")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_with_no_voxels_along_one_axis_is_refused(core, logic, axis):
    import vtk

    node = core.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    dimensions = [8, 8, 8]
    dimensions[axis] = 0
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(*dimensions)
    imageData.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(imageData)
    assert node.GetImageData().GetNumberOfPoints() == 0
    failsClearly(core.scene, lambda: logic.run(node), r"input volume 'flat' holds no voxels")


def test_vector_volume_is_refused(core, logic):
    rgb = core.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    slicer.util.updateVolumeFromArray(rgb, np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3)).astype(np.uint8))
    rgb.CreateDefaultDisplayNodes()
    failsClearly(core.scene, lambda: logic.run(rgb), r"'photo' is a vtkMRMLVectorVolumeNode: a scalar volume is required")


def test_volume_not_in_a_scene_is_refused(core, logic):
    loose = slicer.vtkMRMLScalarVolumeNode()
    loose.SetName("loose")
    volume_bridge.updateVolumeFromImage(loose, logic.image())
    failsClearly(core.scene, lambda: logic.run(loose), r"'loose' is not in a scene: add it to the scene")


@pytest.mark.parametrize("value", [-1000, 40])
def test_constant_volume_is_refused(core, logic, value):
    image = logic.image()
    volume = addVolume(core, withArray(image, np.full(sitk.GetArrayFromImage(image).shape, value, np.int16)), "flat ct")
    failsClearly(core.scene, lambda: logic.run(volume), rf"cannot {logic.verb} 'flat ct': input is empty: every voxel has the value {value}")


@pytest.mark.parametrize("where", ["all NaN", "one NaN", "one infinite"])
def test_nan_or_infinite_volume_is_refused(core, logic, where):
    image = logic.image()
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if where == "all NaN":
        array[...] = np.nan
    else:
        array[3, 4, 5] = np.nan if where == "one NaN" else np.inf
    volume = addVolume(core, withArray(image, array), "nan ct")
    failsClearly(core.scene, lambda: logic.run(volume), rf"cannot {logic.verb} 'nan ct': input contains NaN or infinite voxel values")
    failsClearly(core.scene, lambda: logic.run(volume, allowNonCT=True), r"NaN or infinite")


def test_single_voxel_volume_is_refused(core, logic):
    volume = addVolume(core, sitk.Image([1, 1, 1], sitk.sitkInt16) + 100, "point")
    failsClearly(core.scene, lambda: logic.run(volume), rf"cannot {logic.verb} 'point': input has size \(1, 1, 1\)")


# ---------------------------------------------------------------------- the scene changes during the run
@pytest.mark.parametrize("stage", ["Reading", "Loading model", "engine", "Writing"])
@pytest.mark.parametrize("action", ["remove the volume", "clear the scene"])
def test_input_removed_or_scene_cleared_during_the_run(core, logic, stage, action):
    """Removing the input (or closing the scene) while the run reports progress, at each step,
    stops it with a clear error at the next step (the engine at its next progress report);
    nothing is written, no node is left in the emptied scene."""
    volume = addVolume(core, logic.image())
    user = userSegmentation(core, volume)
    userBefore = segmentationState(user)
    if stage == "engine":
        stage = "Segmenting" if logic.kind == "segmentation" else "Detecting"
    do = (lambda: core.scene.RemoveNode(volume)) if action == "remove the volume" else (lambda: core.scene.Clear(0))
    progress = removeAt(stage, do)
    with pytest.raises(ValueError) as caught:
        logic.run(volume, progress=progress)
    assert progress.done, f"no progress message starting with {stage!r}"
    assert len(progress.after) == (1 if stage == "Reading" else 0), progress.after  # stopped at once
    assertClearError(caught.value, rf"the input volume was removed from the scene during the {logic.kind}: nothing was written")
    assert volume.GetScene() is None
    for className in ("vtkMRMLSegmentationNode", "vtkMRMLTableNode", "vtkMRMLMarkupsROINode"):
        nodes = core.scene.GetNodesByClass(className)
        names = [nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems())]
        assert names == ([] if action == "clear the scene" or className != "vtkMRMLSegmentationNode" else ["my segmentation"])
    if action == "remove the volume":  # the user's segmentation is as it was
        assert user.GetScene() is core.scene
        after = segmentationState(user)
        assert after["reference"] is None  # the scene drops references to a removed node (the user's doing)
        assert {**after, "reference": userBefore["reference"]} == userBefore


@pytest.mark.parametrize("stage", ["engine", "Writing"])
def test_output_segmentation_removed_during_the_run(core, logic, stage):
    volume = addVolume(core, logic.image())
    user = userSegmentation(core, volume)
    before = sceneState(core.scene)
    stage = stage if stage == "Writing" else ("Segmenting" if logic.kind == "segmentation" else "Detecting")
    progress = removeAt(stage, lambda: core.scene.RemoveNode(user))
    with pytest.raises(ValueError) as caught:
        logic.run(volume, user, progress=progress)
    assert progress.done and progress.after == []
    assertClearError(caught.value, rf"the output segmentation was removed from the scene during the {logic.kind}: nothing was written")
    # the only change is the user's own removal of the segmentation (display nodes aside)
    keep = lambda nodes: [n for n in nodes if n[0] != user.GetID() and n[1] != "vtkMRMLSegmentationDisplayNode"]  # noqa: E731
    after = sceneState(core.scene)
    assert keep(after["nodes"]) == keep(before["nodes"])
    assert after["segmentations"] == {} and after["volumes"] == before["volumes"]
    assert segmentationState(user) == before["segmentations"][user.GetID()]  # not written into either


def test_cancel_during_writing_leaves_the_scene_unchanged(core, logic):
    """Cancel pressed while the progress bar says "Writing": a clean cancel, nothing written."""
    volume = addVolume(core, logic.image())
    userSegmentation(core, volume)
    before = sceneState(core.scene)
    cancel = threading.Event()
    progress = removeAt("Writing", cancel.set)
    with pytest.raises(Cancelled, match=f"{logic.kind} cancelled"):
        logic.run(volume, progress=progress, cancel=cancel)
    assert progress.done
    assertUnchanged(core.scene, before)


# ---------------------------------------------------------------------- the user's own segments
def test_user_segments_are_untouched_by_a_successful_run(core, logic):
    volume = addVolume(core, logic.image())
    user = userSegmentation(core, volume)
    other = userSegmentation(core, volume, "someone else's")
    before = sceneState(core.scene)
    for threshold in (0.5, 0.6):  # twice: the second run replaces only the module's own segments
        result = logic.run(volume, user, threshold=threshold)
        assert logic.segmentationOf(result) is user
        state = segmentationState(user)
        added = [s for s in state["ids"] if s not in before["segmentations"][user.GetID()]["ids"]]
        assert [state["segments"][s]["name"] for s in added] == logic.ownSegments
        for segmentId in before["segmentations"][user.GetID()]["ids"]:  # same id, name, colour, terminology, voxels
            assert state["segments"][segmentId] == before["segmentations"][user.GetID()]["segments"][segmentId]
        assert state["ids"][:3] == before["segmentations"][user.GetID()]["ids"]
        assert state["reference"] == before["segmentations"][user.GetID()]["reference"]
        assert all(len(segmentation_writer.segmentPointsRas(user, s)) > 0 for s in added)
    after = sceneState(core.scene)
    assert after["segmentations"][other.GetID()] == before["segmentations"][other.GetID()]
    assert after["volumes"] == before["volumes"]
    assert [n for n in after["nodes"] if n in before["nodes"]] == before["nodes"]  # every node kept as it was
    assert core.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2  # wrote into the user's node


def test_failed_run_leaves_the_user_segmentation_untouched(core, logic):
    volume = addVolume(core, logic.image())
    user = userSegmentation(core, volume)
    image = logic.image()
    flat = addVolume(core, withArray(image, np.full(sitk.GetArrayFromImage(image).shape, 40, np.int16)), "flat")
    failsClearly(core.scene, lambda: logic.run(volume, user, threshold=float("nan")), r"threshold must be between 0 and 1")
    failsClearly(core.scene, lambda: logic.run(flat, user), r"every voxel has the value 40")  # the engine refuses
    cancel = threading.Event()
    before = sceneState(core.scene)
    with pytest.raises(Cancelled):
        logic.run(volume, user, cancel=cancel, progress=removeAt("Writing", cancel.set))
    assertUnchanged(core.scene, before)


def test_output_edited_as_closed_surface_is_refused_before_any_change(core, logic):
    """A segmentation edited as closed surfaces (e.g. imported from a model) is refused before any
    work: its segments (also a module-named one) and display nodes stay as they are."""
    import vtk

    volume = addVolume(core, logic.image())
    node = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")  # no display node yet
    segmentation_writer.setSourceRepresentationName(node.GetSegmentation(), "Closed surface")
    for name in ("Ball", logic.ownSegments[0]):
        sphere = vtk.vtkSphereSource()
        sphere.SetRadius(8)
        sphere.Update()
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.AddRepresentation("Closed surface", sphere.GetOutput())
        node.GetSegmentation().AddSegment(segment)
    failsClearly(core.scene, lambda: logic.run(volume, node),
                 r"'surfaces' is edited as 'Closed surface', not as a binary labelmap: choose another output segmentation or create a new one")
    assert node.GetDisplayNode() is None and node.GetSegmentation().GetNumberOfSegments() == 2


# ---------------------------------------------------------------------- bad output nodes
def test_output_segmentation_from_another_scene_is_refused(core, logic):
    volume = addVolume(core, logic.image())
    elsewhere = slicer.vtkMRMLScene()
    foreign = elsewhere.AddNewNodeByClass("vtkMRMLSegmentationNode", "foreign")
    foreign.GetSegmentation().AddEmptySegment("", "Theirs")
    failsClearly(core.scene, lambda: logic.run(volume, foreign),
                 r"output segmentation 'foreign' is not in the input volume's scene .*: choose a segmentation of this scene or create a new one")
    assert elsewhere.GetNumberOfNodes() == 1 and foreign.GetSegmentation().GetNumberOfSegments() == 1


def test_output_segmentation_removed_from_the_scene_is_refused(core, logic):
    volume = addVolume(core, logic.image())
    removed = userSegmentation(core, volume, "deleted")
    core.scene.RemoveNode(removed)
    failsClearly(core.scene, lambda: logic.run(volume, removed), r"'deleted' is not in the input volume's scene \(removed")
    assert removed.GetScene() is None and removed.GetSegmentation().GetNumberOfSegments() == 3


@pytest.mark.parametrize("className", ["vtkMRMLScalarVolumeNode", "vtkMRMLModelNode", "vtkMRMLMarkupsROINode", "vtkMRMLTableNode"])
def test_output_that_is_not_a_segmentation_is_refused(core, logic, className):
    volume = addVolume(core, logic.image())
    wrong = core.scene.AddNewNodeByClass(className, "not a segmentation")
    failsClearly(core.scene, lambda: logic.run(volume, wrong),
                 rf"output 'not a segmentation' is a {className}, not a segmentation: choose a segmentation node")


@pytest.mark.parametrize("problem", ["not a table", "another scene", "removed"])
def test_bad_output_table_is_refused(core, lowres_card, problem):
    """LowResDetect only: its table output."""
    logic = Detection(lowres_card)
    volume = addVolume(core, logic.image())
    if problem == "not a table":
        table = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
        pattern = r"output table 'seg' is a vtkMRMLSegmentationNode, not a table"
    elif problem == "another scene":
        table = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLTableNode", "theirs")
        pattern = r"output table 'theirs' is not in the input volume's scene .*choose a table of this scene"
    else:
        table = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "gone")
        core.scene.RemoveNode(table)
        pattern = r"'gone' is not in the input volume's scene \(removed"
    failsClearly(core.scene, lambda: logic.run(volume, outputTable=table), pattern)


def test_output_table_removed_during_writing(core, lowres_card):
    logic = Detection(lowres_card)
    volume = addVolume(core, logic.image())
    table = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "mine")
    progress = removeAt("Writing", lambda: core.scene.RemoveNode(table))
    with pytest.raises(ValueError) as caught:
        logic.run(volume, outputTable=table, progress=progress)
    assertClearError(caught.value, r"the output table was removed from the scene during the detection: nothing was written")
    assert core.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert core.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == 0
    assert core.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0


# ---------------------------------------------------------------------- transforms
def gridTransform(core, name: str = "warp"):
    """A non-linear (displacement grid) transform node: 1 mm along R everywhere."""
    import vtk
    from vtk.util import numpy_support

    node = core.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    grid = vtk.vtkImageData()
    grid.SetDimensions(5, 5, 5)
    grid.SetSpacing(40.0, 40.0, 40.0)
    grid.SetOrigin(-80.0, -80.0, -80.0)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    displacement = numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars())
    displacement[:] = (1.0, 0.0, 0.0)
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    node.SetAndObserveTransformFromParent(transform)
    assert not node.IsTransformToWorldLinear()
    return node


def linearTransform(core, name: str, degrees: float, shift):
    node = core.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation("z", degrees)
    matrix[:3, 3] = shift
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node


@pytest.mark.parametrize("apply", [False, True])
@pytest.mark.parametrize("chain", ["grid", "linear under grid"])
def test_volume_under_a_non_linear_transform_is_refused(core, logic, apply, chain):
    """No matrix describes a warp: refused even when asked to apply the parent transform."""
    volume = addVolume(core, logic.image())
    warp = gridTransform(core)
    if chain == "grid":
        volume.SetAndObserveTransformNodeID(warp.GetID())
    else:
        tilt = linearTransform(core, "tilt", 10, (1.0, 2.0, 3.0))
        tilt.SetAndObserveTransformNodeID(warp.GetID())
        volume.SetAndObserveTransformNodeID(tilt.GetID())
    failsClearly(core.scene, lambda: logic.run(volume, applyParentTransform=apply),
                 r"'ct' is under the (non-linear )?transform '(warp|tilt)'.*[Hh]arden the transform")
    assert volume.GetParentTransformNode() is not None  # the input is not hardened


def test_linear_transform_refusal_leaves_the_scene_unchanged(core, logic):
    volume = addVolume(core, logic.image())
    volume.SetAndObserveTransformNodeID(linearTransform(core, "moved", 20, (4.0, -2.0, 7.0)).GetID())
    user = userSegmentation(core, volume)  # a user's output under the same transform
    user.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    failsClearly(core.scene, lambda: logic.run(volume, user), r"under the transform 'moved'.*or ask to apply it")


def test_output_under_another_transform_is_refused(core, logic):
    volume = addVolume(core, logic.image())
    user = userSegmentation(core, volume)
    user.SetAndObserveTransformNodeID(linearTransform(core, "elsewhere", 5, (1.0, 0.0, 0.0)).GetID())
    failsClearly(core.scene, lambda: logic.run(volume, user),
                 r"'my segmentation' is not under the same transform as the input volume 'ct'.*create a new one")


def test_nested_linear_transforms_are_applied_as_shown(core, logic):
    """Two linear transforms in a chain, applied on request: the result lies where the volume is
    shown (the engine's result on the hardened image), the user's segments under that chain kept."""
    volume = addVolume(core, logic.image())
    outer = linearTransform(core, "outer", 30, (10.0, 0.0, -5.0))
    inner = linearTransform(core, "inner", -12, (0.0, 4.0, 2.0))
    inner.SetAndObserveTransformNodeID(outer.GetID())
    user = userSegmentation(core, volume)
    volume.SetAndObserveTransformNodeID(inner.GetID())
    user.SetAndObserveTransformNodeID(inner.GetID())
    before = segmentationState(user)
    result = logic.run(volume, user, applyParentTransform=True)
    node = logic.segmentationOf(result)
    assert node is user and volume.GetParentTransformNode() is inner
    state = segmentationState(user)
    assert {s: state["segments"][s] for s in before["ids"]} == before["segments"]
    world = volume_bridge.volumeToImage(volume, applyParentTransform=True)
    toWorld = volume_bridge.transformToWorld(volume)
    assert not np.allclose(toWorld, np.eye(4))
    if logic.kind == "segmentation":
        from liteseg.segmentation.inference import segment_image

        network, card = logic.thresholdModel
        expected = segment_image(world, network, card.preprocessing, threshold=card.threshold).labelmap
        segmentId = user.GetSegmentation().GetSegmentIdBySegmentName("Pancreas")
        local = segmentation_writer.segmentPointsRas(user, segmentId)
        shown = local @ toWorld[:3, :3].T + toWorld[:3, 3]
        from LiteSegSlicerLib.selftest_common import foregroundPointsRas, voxelIndices

        assert voxelIndices(shown, expected, "shown") == voxelIndices(foregroundPointsRas(expected), expected, "engine")
    else:
        from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector

        network, preprocessing = load_detector(find_lowres_card(logic.cardPath))
        expected = detect_image(world, network, preprocessing).detections
        detection_selftest.checkTable(result.tableNode, expected)  # centres in world coordinates
        assert all(roi.GetTransformNodeID() == inner.GetID() for roi in result.roiNodes)


# ---------------------------------------------------------------------- bad options
@pytest.mark.parametrize("threshold", [0, 1, -0.1, 1.5, float("nan"), float("inf"), "abc", True])
def test_threshold_outside_0_1_is_refused(core, logic, threshold):
    volume = addVolume(core, logic.image())
    userSegmentation(core, volume)
    failsClearly(core.scene, lambda: logic.run(volume, threshold=threshold),
                 r"^threshold must be between 0 and 1 \(exclusive\), got .*: give a probability such as 0.5")


@pytest.mark.parametrize("margin", [-1, 1.5, float("nan"), float("inf"), None, "2", True])
def test_bad_margin_is_refused(core, lowres_card, margin):
    logic = Detection(lowres_card)
    volume = addVolume(core, logic.image())
    failsClearly(core.scene, lambda: logic.run(volume, margin=margin),
                 r"^margin must be a whole number of low-resolution voxels >= 0, got .*: for example 1")


def test_huge_margin_is_the_whole_volume(core, lowres_card):
    """A margin past the volume (the engine would allocate a structuring element of that size)
    gives the boxes a margin of the whole volume, as the volume's own size does."""
    logic = Detection(lowres_card)
    volume = addVolume(core, logic.image())
    size = max(math.ceil(n / 8) for n in logic.image().GetSize())
    _, whole, _ = logic.run(volume, margin=size)
    _, huge, rois = logic.run(volume, margin=10**9)
    from LiteSegSlicerLib.detection_outputs import tableRows

    assert tableRows(huge) == tableRows(whole) and len(rois) == 2
    assert "margin 1000000000" in logic.logic.lastStatus


def test_unknown_model_name_is_refused(core, logic):
    volume = addVolume(core, logic.image())
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model="no-such-model"),
                 r"cannot load (detection )?model 'no-such-model': unknown model 'no-such-model'; bundled models: .*or give a model card")


@pytest.mark.parametrize("form", ["str", "Path"])
def test_model_card_that_does_not_exist_is_refused(core, logic, tmp_path, form):
    volume = addVolume(core, logic.image())
    missing = tmp_path / "nowhere" / "card.json"
    model = str(missing) if form == "str" else missing
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model=model),
                 rf"^model card not found: {re.escape(str(missing))} \(no such file\): choose an existing model card")


def copiedCard(card: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of a model card and its weights in `folder`: (card, weights)."""
    folder.mkdir()
    data = json.loads(card.read_text())
    weights = folder / data["weights"]
    shutil.copy(card.parent / data["weights"], weights)
    copy = folder / card.name
    copy.write_text(json.dumps(data))
    return copy, weights


def test_truncated_weights_are_refused(core, logic, tmp_path):
    card, weights = copiedCard(logic.card(), tmp_path / "truncated")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    volume = addVolume(core, logic.image())
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model=card),
                 r"cannot load (detection )?model '.*': weights file .* does not match its model card .*corrupted or replaced; reinstall or retrain")


def test_truncated_weights_with_a_matching_checksum_are_refused(core, logic, tmp_path):
    """The card's checksum updated to the truncated file (a broken export): torch cannot read it."""
    card, weights = copiedCard(logic.card(), tmp_path / "rehashed")
    weights.write_bytes(weights.read_bytes()[:500])
    data = json.loads(card.read_text())
    data["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    card.write_text(json.dumps(data))
    volume = addVolume(core, logic.image())
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model=card),
                 r"cannot load (detection )?model '.*': weights file .* cannot be read: damaged or not a PyTorch state_dict")


def test_missing_weights_and_broken_card_are_refused(core, logic, tmp_path):
    card, weights = copiedCard(logic.card(), tmp_path / "broken")
    weights.unlink()
    volume = addVolume(core, logic.image())
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model=card), r"weights file missing: .*named by model card")
    card.write_text("{not json")
    failsClearly(core.scene, lambda: logic.engineLogic().process(volume, model=card), r"cannot read model card .*broken")
