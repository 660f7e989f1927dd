"""MoNetSegmentation's logic against Slicer's real core: the segmentation lies where the engine
segmented, in physical space, for every orientation; errors are clear ValueErrors."""

import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import bundled_model, core, data_root, random_monet_card  # noqa: E402,F401  (pytest fixtures)

from liteseg.segmentation.inference import segment_image, with_card_defaults  # noqa: E402

from LiteSegSlicerLib import segmentation_writer, volume_bridge  # noqa: E402
from LiteSegSlicerLib.models import DEFAULT_MODEL, bundledModelNames  # noqa: E402
from LiteSegSlicerLib import segmentation_selftest as selftest  # noqa: E402
from LiteSegSlicerLib.segmentation_logic import Cancelled, SegmentationLogic  # noqa: E402
from LiteSegSlicerLib.segmentation_selftest import GEOMETRIES, phantomImage, thresholdModel  # noqa: E402


@pytest.fixture(scope="module")
def threshold_model():
    return thresholdModel()


@pytest.fixture()
def logic(threshold_model):
    return SegmentationLogic(modelLoader=lambda model: threshold_model)


def engine_labelmap(image, threshold_model, **options):
    network, card = threshold_model
    options.setdefault("threshold", card.threshold)
    return segment_image(image, network, card.preprocessing, **options).labelmap


@pytest.mark.parametrize("name", ["axial", "coronal_acquired", "oblique", "left_handed"])
def test_segment_lies_where_the_engine_segmented_the_file(core, tmp_path, logic, threshold_model, name):
    """The file is read by Slicer's reader (which stores left-handed volumes flipped); the segment's
    voxels, in physical space, are exactly the engine's on the SimpleITK image of the same file."""
    image = phantomImage(GEOMETRIES[name])
    path = tmp_path / f"{name}.nrrd"
    sitk.WriteImage(image, str(path))
    volume = core.volumesLogic.AddArchetypeVolume(str(path), name)
    study = selftest.putInStudy(core.scene, volume)

    node = logic.process(volume)

    segment_id = selftest.checkPancreasSegment(node, volume, study)
    expected = engine_labelmap(sitk.ReadImage(str(path)), threshold_model)
    count = selftest.checkSameVoxels(node, segment_id, expected, name)
    assert count > 200
    assert node.GetName() == f"{name} segmentation"
    assert node.GetSegmentation().GetNumberOfSegments() == 1


def test_segmentation_keeps_the_input_voxel_grid(core, logic):
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["oblique"]), "ct")
    node = logic.process(volume)
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("Pancreas")
    labelmap = node.GetSegmentation().GetSegment(segment_id).GetRepresentation("Binary labelmap")
    matrix = slicer.util.vtkMatrixFromArray(np.eye(4))
    labelmap.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), volume_bridge.ijkToRas(volume), atol=1e-12)
    extent, full = labelmap.GetExtent(), volume.GetImageData().GetExtent()
    assert all(full[2 * a] <= extent[2 * a] and extent[2 * a + 1] <= full[2 * a + 1] for a in range(3))


def test_existing_user_segmentation_is_kept_and_pancreas_replaced(core, logic):
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "ct")
    user = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    user.CreateDefaultDisplayNodes()
    user.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    body = slicer.util.arrayFromVolume(volume) > -500
    body_id = user.GetSegmentation().AddEmptySegment("", "Body", [0.5, 0.5, 0.5])
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        segmentation_writer.orientedLabelmap(body.astype(np.uint8), volume), user, body_id)
    body_voxels = segmentation_writer.segmentPointsRas(user, body_id)
    untouched = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "someone else's")
    untouched.GetSegmentation().AddEmptySegment("", "Pancreas", [0, 1, 0])

    assert logic.process(volume, user) is user
    assert logic.process(volume, user) is user  # twice: replaces its own segment
    segmentation = user.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["Body", "Pancreas"]
    np.testing.assert_array_equal(segmentation_writer.segmentPointsRas(user, body_id), body_voxels)
    assert untouched.GetSegmentation().GetSegment(untouched.GetSegmentation().GetNthSegmentID(0)).GetColor() == (0, 1, 0)
    assert core.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2  # nothing created


def test_progress_timings_volume_and_show3d(core, logic):
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "ct")
    reports = []
    node = logic.process(volume, progress=lambda f, m: reports.append((f, m)), show3D=True)
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any(m.startswith("Segmenting: slice") for _, m in reports) and reports[-1][1].startswith("Completed in")
    assert set(logic.lastTimings) >= {"read", "load", "preprocess", "inference", "postprocess", "write", "total"}
    voxels = len(segmentation_writer.segmentPointsRas(node, node.GetSegmentation().GetSegmentIdBySegmentName("Pancreas")))
    assert logic.lastVolumeMl == pytest.approx(voxels * np.prod(volume.GetSpacing()) / 1000)
    surface = node.GetSegmentation().GetNthSegment(0).GetRepresentation("Closed surface")
    assert surface is not None and surface.GetNumberOfPoints() > 0


def test_keep_largest_component(core):
    native = thresholdModel(sliceSize=(32, 32))  # no resizing: exact counts
    logic = SegmentationLogic(modelLoader=lambda model: native)
    array = np.full((10, 32, 32), -1000, dtype=np.int16)
    array[2:8, 4:14, 4:14] = 150
    array[3:5, 20:23, 20:23] = 150
    image = sitk.GetImageFromArray(array)
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "two blobs")
    both = logic.process(volume)
    largest = logic.process(volume, keepLargestComponent=True)
    count = lambda node: len(segmentation_writer.segmentPointsRas(node, node.GetSegmentation().GetNthSegmentID(0)))  # noqa: E731
    assert (count(both), count(largest)) == (6 * 100 + 2 * 9, 6 * 100)


def test_cancel_leaves_the_scene_unchanged(core, logic):
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "ct")
    nodes = core.scene.GetNumberOfNodes()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        logic.process(volume, cancel=cancel)
    stop = threading.Event()

    def cancel_during_inference(fraction, message):
        if message.startswith("Segmenting"):
            stop.set()

    with pytest.raises(Cancelled):
        logic.process(volume, progress=cancel_during_inference, cancel=stop)
    assert core.scene.GetNumberOfNodes() == nodes


def test_transformed_volume_is_refused_or_segmented_as_shown(core, logic, threshold_model):
    image = phantomImage(GEOMETRIES["axial"])
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    transform = core.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "tilt")
    rotate = np.eye(4)
    rotate[:3, :3] = selftest.rotation("x", 90)  # turns the axial axis into a coronal one
    rotate[:3, 3] = (5.0, -3.0, 12.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(rotate))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="under the transform 'tilt'.*[Hh]arden"):
        logic.process(volume)

    node = logic.process(volume, applyParentTransform=True)
    assert node.GetParentTransformNode() is transform
    assert volume.GetParentTransformNode() is transform  # the input is not hardened
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName("Pancreas")
    local = segmentation_writer.segmentPointsRas(node, segment_id)
    world = local @ rotate[:3, :3].T + rotate[:3, 3]
    world_image = volume_bridge.volumeToImage(volume, applyParentTransform=True)
    expected = engine_labelmap(world_image, threshold_model)
    assert selftest.voxelIndices(world, expected, "world") == selftest.voxelIndices(
        selftest.foregroundPointsRas(expected), expected, "engine")

    elsewhere = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "not transformed")
    with pytest.raises(ValueError, match="not under the same transform"):
        logic.process(volume, elsewhere, applyParentTransform=True)


def test_bad_inputs_give_clear_errors(core, logic):
    with pytest.raises(ValueError, match="no input volume"):
        logic.process(None)
    vector = core.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="scalar volume is required"):
        logic.process(vector)
    flat = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 200, (1, 32, 32)).astype(np.int16))
    single = volume_bridge.addVolumeFromImage(core.scene, flat, "one slice")
    node = logic.process(single)  # a 2D model segments a single axial slice, on its grid
    assert selftest.checkPancreasSegment(node, single)
    mri = sitk.GetImageFromArray(np.random.default_rng(1).uniform(0, 800, (8, 32, 32)).astype(np.float32))
    mri_volume = volume_bridge.addVolumeFromImage(core.scene, mri, "T1")
    with pytest.raises(ValueError, match=r"cannot segment 'T1': .*does not look like a CT.*tick 'Skip the intensity check' in the module panel, or pass allowNonCT=True"):
        logic.process(mri_volume)
    assert logic.process(mri_volume, allowNonCT=True) is not None
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "ct")
    with pytest.raises(ValueError, match="is a vtkMRMLScalarVolumeNode, not a segmentation"):
        logic.process(volume, volume)
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        logic.process(volume, threshold=1.5)
    segmentations = core.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    assert segmentations == 2  # only the single-slice and allowNonCT runs created one


def test_unknown_model_and_real_monet_card(core, random_monet_card):
    logic = SegmentationLogic()
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["left_handed"]), "ct")
    with pytest.raises(ValueError, match="cannot load model 'no-such-model': unknown model"):
        logic.process(volume, model="no-such-model")
    node = logic.process(volume, model=random_monet_card.path)  # the engine's loader: sha256 checked
    network, card = logic.loadModel(random_monet_card.path)
    assert card.name == "random-monet" and logic.lastModel is card
    expected = segment_image(volume_bridge.volumeToImage(volume), network, card.preprocessing, threshold=0.5).labelmap
    segment_id = selftest.checkPancreasSegment(node, volume)
    selftest.checkSameVoxels(node, segment_id, expected, "random MoNet")


def test_model_listing_without_torch_matches_the_engine(monkeypatch, random_monet_card):
    from liteseg.io import modelcard

    monkeypatch.setenv("LITESEG_MODELS", str(random_monet_card.path.parent))
    assert [(c.name, c.version) for c in modelcard.bundled_cards()] == [("random-monet", "0.0.1")]
    lowres = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "lowres-lesion.json"
    (random_monet_card.path.parent / "lowres-lesion.json").write_text(lowres.read_text())  # a detector: not listed
    (random_monet_card.path.parent / "broken.json").write_text("{not json")  # skipped by the listing
    with pytest.warns(UserWarning, match="broken.json"):
        models = SegmentationLogic().availableModels()
    assert [(m.name, m.version, m.label) for m in models] == [("random-monet", "0.0.1", "random-monet (v0.0.1)")]
    with pytest.warns(UserWarning, match="broken.json"):
        assert bundledModelNames() == [DEFAULT_MODEL, "random-monet"]


def test_a_detection_card_is_a_clear_error_not_a_missing_key(core):
    lowres = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "lowres-lesion.json"
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "ct")
    with pytest.raises(ValueError, match="'lowres-lesion' \\(network lowres\\) is not a slice-by-slice segmentation model"):
        SegmentationLogic().process(volume, model=lowres)  # the engine's loader


def test_empty_output_node_is_set_up_like_a_new_one(core, logic):
    """A segmentation node made empty by a node selector gets display nodes, the reference geometry
    and the study, as a segmentation created by the logic does."""
    volume = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["coronal_acquired"]), "ct")
    study = selftest.putInStudy(core.scene, volume)
    empty = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from the selector")
    assert empty.GetDisplayNode() is None
    assert logic.process(volume, empty) is empty
    assert empty.GetDisplayNode() is not None
    selftest.checkPancreasSegment(empty, volume, study)


def left_handed_permuted(image: sitk.Image) -> sitk.Image:
    """The same physical image stored with rows and columns swapped and two axes reversed (a
    left-handed index frame for a right-handed input)."""
    nx, ny, nz = image.GetSize()
    array = sitk.GetArrayFromImage(image).transpose(0, 2, 1)[::-1, ::-1]  # (k, i, j), k and i reversed
    old = np.array(image.GetDirection()).reshape(3, 3)
    direction = np.stack([old[:, 1], -old[:, 0], -old[:, 2]], axis=1)
    spacing = np.array(image.GetSpacing())[[1, 0, 2]]
    result = sitk.GetImageFromArray(np.ascontiguousarray(array))
    result.SetSpacing(tuple(float(v) for v in spacing))
    result.SetDirection(tuple(direction.ravel()))
    result.SetOrigin(image.TransformIndexToPhysicalPoint([nx - 1, 0, nz - 1]))
    return result


def test_bundled_model_on_a_reoriented_real_ct_slab(core, tmp_path, bundled_model, data_root):
    """The trained model on 30 real CT slices stored left-handed with rows and columns swapped, read
    by Slicer's reader: the pancreas lies exactly where the engine finds it in the original file."""
    original = sitk.ReadImage(str(data_root / "ct/pancreas_TS-A/ct_sm_slices82-111.nii.gz"))
    stored = left_handed_permuted(original)
    assert np.linalg.det(np.array(stored.GetDirection()).reshape(3, 3)) < 0
    np.testing.assert_array_equal(  # same voxel at the same place: a corner and the centre
        [stored.GetPixel(stored.TransformPhysicalPointToIndex(original.TransformIndexToPhysicalPoint(p))) for p in
         ([0, 0, 0], [60, 50, 15], [121, 100, 29])],
        [original.GetPixel(p) for p in ([0, 0, 0], [60, 50, 15], [121, 100, 29])])
    sitk.WriteImage(stored, str(tmp_path / "slab.nrrd"))
    volume = core.volumesLogic.AddArchetypeVolume(str(tmp_path / "slab.nrrd"), "slab")
    logic = SegmentationLogic()
    network, card = logic.loadModel(bundled_model.name)
    whole = logic.process(volume, localizeFirst=False)
    assert "localise" not in logic.lastTimings
    expected = segment_image(original, network, card.preprocessing, threshold=card.threshold).labelmap
    count = selftest.checkSameVoxels(whole, selftest.checkPancreasSegment(whole, volume), expected, "whole volume")
    assert count > 100
    node = logic.process(volume)
    assert "localise" in logic.lastTimings  # the bundled card localises by default
    expected = segment_image(original, network, card.preprocessing, **with_card_defaults(card, {})).labelmap
    selftest.checkSameVoxels(node, selftest.checkPancreasSegment(node, volume), expected, "reoriented slab")


def test_nothing_found_by_the_localisation_pass_is_an_empty_segment_with_a_message(core, logic):
    array = np.full((16, 20, 24), 40, dtype=np.int16)  # body only: below the threshold network's cut
    array[:, :3] = -1000
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.1, 1.4, 2.5))
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "no organ")
    node = logic.process(volume, localizeFirst=True)
    segment_id = selftest.checkPancreasSegment(node, volume)
    assert node.GetSegmentation().GetSegment(segment_id) is not None and logic.lastVolumeMl == 0.0
    assert "nothing found in the scanned range" in logic.lastMessage and "inference" not in logic.lastTimings
    logic.process(volume, localizeFirst=False)  # every slice on request
    assert logic.lastMessage == "" and "inference" in logic.lastTimings
