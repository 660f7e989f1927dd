"""Writing a labelmap into a segmentation node: one import, standard name, colour, terminology,
reference geometry, subject hierarchy, .seg.nrrd round trip, other segments untouched."""

import numpy as np
import pytest

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import core  # noqa: E402,F401  (pytest fixtures)

from LiteSegSlicerLib import segmentation_writer, volume_bridge  # noqa: E402
from LiteSegSlicerLib.segmentation_selftest import GEOMETRIES, checkPancreasSegment, phantomImage, putInStudy  # noqa: E402

EXPECTED_ENTRY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^15776009^Pancreas~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)


def ras_voxels(segmentation_node, segment_id):
    return {tuple(p) for p in np.round(segmentation_writer.segmentPointsRas(segmentation_node, segment_id), 6)}


def mask_ras(volume, mask):
    """RAS voxel centres of a (k, j, i) mask on the volume's grid."""
    ijk = np.argwhere(mask)[:, ::-1]
    matrix = volume_bridge.ijkToRas(volume)
    return {tuple(p) for p in np.round(ijk @ matrix[:3, :3].T + matrix[:3, 3], 6)}


@pytest.fixture()
def volume(core):
    return volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["oblique"]), "CT")


def organ_mask(volume):
    return slicer.util.arrayFromVolume(volume) > 100


def new_segmentation(core, name="seg"):
    node = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    return node


def test_segment_name_colour_terminology_and_geometry(core, volume):
    node = new_segmentation(core)
    mask = organ_mask(volume)
    segment_id = segmentation_writer.writeSegment(node, mask, volume)
    assert checkPancreasSegment(node, volume) == segment_id
    segment = node.GetSegmentation().GetSegment(segment_id)
    assert segment.GetName() == "Pancreas"
    np.testing.assert_allclose(segment.GetColor(), (249 / 255, 180 / 255, 111 / 255))
    entry = segmentation_writer.segmentTag(segment, slicer.vtkSegment.GetTerminologyEntryTagName())
    assert entry == EXPECTED_ENTRY == segmentation_writer.terminologyEntry(segmentation_writer.PANCREAS)
    # Slicer's Terminologies logic parses it back; its context is one Slicer loads by default
    parsed = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry, parsed)
    assert (parsed.GetCategoryObject().GetCodeValue(), parsed.GetTypeObject().GetCodeValue()) == ("123037004", "15776009")
    assert parsed.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
    assert parsed.GetTypeObject().GetCodeMeaning() == "Pancreas"
    assert parsed.GetRegionContextName() == "Anatomic codes - DICOM master list"
    import vtk

    loaded = vtk.vtkStringArray()
    core.logic("Terminologies").GetLoadedTerminologyNames(loaded)
    assert parsed.GetTerminologyContextName() in [loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())]
    assert ras_voxels(node, segment_id) == mask_ras(volume, mask) and int(mask.sum()) > 100


def test_fallback_serialization_matches_slicers():
    """Without the Terminologies logic class the entry is built by hand: the same string."""
    assert segmentation_writer.serializeTerminologyEntry(segmentation_writer.PANCREAS) == EXPECTED_ENTRY


def test_seg_nrrd_round_trip(core, volume, tmp_path):
    node = new_segmentation(core)
    mask = organ_mask(volume)
    segment_id = segmentation_writer.writeSegment(node, mask, volume)
    storage = core.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "pancreas.seg.nrrd"))
    assert storage.WriteData(node)
    read = core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "read")
    reader = core.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "pancreas.seg.nrrd"))
    assert reader.ReadData(read)
    assert read.GetSegmentation().GetNumberOfSegments() == 1
    read_id = read.GetSegmentation().GetSegmentIdBySegmentName("Pancreas")
    segment = read.GetSegmentation().GetSegment(read_id)
    np.testing.assert_allclose(segment.GetColor(), (249 / 255, 180 / 255, 111 / 255), atol=1e-6)
    assert segmentation_writer.segmentTag(segment, slicer.vtkSegment.GetTerminologyEntryTagName()) == EXPECTED_ENTRY
    # voxel centres within 1e-4 mm (the file stores the geometry as decimal text)
    assert len(ras_voxels(read, read_id)) == len(ras_voxels(node, segment_id))
    original = np.array(sorted(ras_voxels(node, segment_id)))
    again = np.array(sorted(map(tuple, np.round(segmentation_writer.segmentPointsRas(read, read_id), 3))))
    np.testing.assert_allclose(again, np.round(original, 3), atol=2e-3)


def test_other_segments_are_kept_and_only_pancreas_is_replaced(core, volume):
    node = new_segmentation(core, "user segmentation")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    shape = slicer.util.arrayFromVolume(volume).shape
    liver = np.zeros(shape, bool)
    liver[4:9, 5:12, 3:10] = True  # overlaps the organ
    spleen = np.zeros(shape, bool)
    spleen[0:2, 0:3, 0:3] = True
    liver_id = node.GetSegmentation().AddEmptySegment("", "Liver", [0.8, 0.3, 0.3])
    spleen_id = node.GetSegmentation().AddEmptySegment("", "Spleen", [0.3, 0.3, 0.8])
    for segment_id, mask in ((liver_id, liver), (spleen_id, spleen)):
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            segmentation_writer.orientedLabelmap(mask.astype(np.uint8), volume), node, segment_id)
    before = {sid: ras_voxels(node, sid) for sid in (liver_id, spleen_id)}
    assert before[liver_id] == mask_ras(volume, liver)

    first = organ_mask(volume)
    pancreas_id = segmentation_writer.writeSegment(node, first, volume)
    second = np.zeros(shape, bool)
    second[6:10, 6:10, 6:10] = True
    assert segmentation_writer.writeSegment(node, second, volume) == pancreas_id  # replaced, not added
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "Liver", "Spleen", "Pancreas"]
    assert ras_voxels(node, pancreas_id) == mask_ras(volume, second)
    for sid in (liver_id, spleen_id):
        assert ras_voxels(node, sid) == before[sid]
    np.testing.assert_allclose(segmentation.GetSegment(liver_id).GetColor(), (0.8, 0.3, 0.3))


def test_placed_under_the_volumes_study(core, volume):
    study = putInStudy(core.scene, volume)
    node = new_segmentation(core)
    segmentation_writer.placeInSubjectHierarchy(node, volume)
    sh = core.scene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    # a volume outside any study leaves the segmentation at the scene level
    other = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "loose")
    node2 = new_segmentation(core, "seg2")
    segmentation_writer.placeInSubjectHierarchy(node2, other)
    assert not sh.GetItemByDataNode(node2) or sh.GetItemParent(sh.GetItemByDataNode(node2)) == sh.GetSceneItemID()


def test_segmentation_edited_as_surface_is_refused(core, volume):
    node = new_segmentation(core)
    segmentation_writer.writeSegment(node, organ_mask(volume), volume)
    node.CreateClosedSurfaceRepresentation()
    node.GetSegmentation().SetSourceRepresentationName("Closed surface")
    with pytest.raises(ValueError, match="edited as 'Closed surface'"):
        segmentation_writer.writeSegment(node, organ_mask(volume), volume)


def test_wrong_shape_is_refused(core, volume):
    node = new_segmentation(core)
    with pytest.raises(ValueError, match="does not fit the volume 'CT'"):
        segmentation_writer.writeSegment(node, np.zeros((3, 3, 3), bool), volume)


def test_label_of_another_card_gets_its_own_name_and_no_borrowed_terminology(core, volume):
    node = new_segmentation(core)
    segment_id = segmentation_writer.writeSegment(node, organ_mask(volume), volume, {"value": 1, "name": "Lesion", "color": [255, 0, 0]})
    segment = node.GetSegmentation().GetSegment(segment_id)
    assert segment.GetName() == "Lesion"
    np.testing.assert_allclose(segment.GetColor(), (1.0, 0.0, 0.0))
    # Slicer's default for a new segment ("Tissue"), not the pancreas codes
    entry = segmentation_writer.segmentTag(segment, slicer.vtkSegment.GetTerminologyEntryTagName())
    assert "15776009" not in entry and "SCT^85756007^Tissue" in entry
