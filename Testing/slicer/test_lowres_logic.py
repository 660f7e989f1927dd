"""LowResDetect's logic against Slicer's real core: the table, the segments and the ROIs are the
engine's detections, in physical space, for oblique and left-handed volumes read by Slicer's
reader; no detection gives empty outputs and a status; errors are clear ValueErrors.

The model is a LowRes model card written to a temporary folder with hand-set weights whose
output is known (LiteSegSlicerLib.detection_selftest.brightObjectNetwork), not the bundled demonstration
weights (their output on synthetic volumes is not known exactly).
"""

import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import core  # noqa: E402,F401  (pytest fixtures)

from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector

from LiteSegSlicerLib import detection_outputs as outputs  # noqa: E402
from LiteSegSlicerLib import detection_selftest as selftest  # noqa: E402
from LiteSegSlicerLib import models  # noqa: E402
from LiteSegSlicerLib import volume_bridge  # noqa: E402
from LiteSegSlicerLib.detection_logic import Cancelled, DetectionLogic  # noqa: E402
from LiteSegSlicerLib.selftest_common import GEOMETRIES, putInStudy  # noqa: E402


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    return selftest.writeDetectorCard(tmp_path_factory.mktemp("lowres-card"))


@pytest.fixture(scope="module")
def detector(card):
    return load_detector(find_lowres_card(card))


def engine_detections(image, detector, **options):
    network, preprocessing = detector
    return detect_image(image, network, preprocessing, **options).detections


@pytest.mark.parametrize("name", ["oblique", "left_handed"])
def test_outputs_are_the_engines_detections_in_physical_space(core, tmp_path, card, detector, name):
    """Slicer's reader (which stores left-handed volumes flipped) reads the file; table rows,
    segments and ROIs equal the engine's detections on the SimpleITK image of the same file."""
    path = tmp_path / f"{name}.nrrd"
    sitk.WriteImage(selftest.lesionImage(GEOMETRIES[name]), str(path))
    volume = core.volumesLogic.AddArchetypeVolume(str(path), name)
    study = putInStudy(core.scene, volume)
    image = volume_bridge.volumeToImage(volume)  # the node's own (k, j, i) grid

    segmentation, table, rois = DetectionLogic().process(volume, model=card)

    expected = engine_detections(image, detector)
    assert len(expected) == len(selftest.LESIONS)
    selftest.checkTable(table, expected)
    selftest.checkSegments(segmentation, volume, image, expected, study)
    assert [r.GetName() for r in rois] == ["Lesion 1", "Lesion 2"]
    for roi, detection in zip(rois, expected):
        selftest.checkRoi(roi, image, detection)
        assert roi.GetROIType() == roi.ROITypeBox
    # The same objects in physical space as on the file's own grid (the reader may flip axes).
    from_file = engine_detections(sitk.ReadImage(str(path)), detector)
    np.testing.assert_allclose([d.centre_ras for d in from_file], [d.centre_ras for d in expected], atol=1e-6)
    assert [d.volume_ml for d in from_file] == pytest.approx([d.volume_ml for d in expected])
    # Everything made is under the volume's study.
    sh = core.scene.GetSubjectHierarchyNode()
    for node in (segmentation, table, *rois):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study, node.GetName()


def test_table_columns_and_references(core, card, detector):
    image = selftest.lesionImage(GEOMETRIES["axial"])
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    segmentation, table, rois = DetectionLogic().process(volume, model=card, threshold=0.5, margin=1)
    names = [table.GetTable().GetColumn(c).GetName() for c in range(table.GetTable().GetNumberOfColumns())]
    assert names == ["Index", "Name", "Centre R", "Centre A", "Centre S", "Size I", "Size J", "Size K", "Volume", "Max probability"]
    assert table.GetColumnUnitLabel("Volume") == "ml" and table.GetColumnUnitLabel("Centre R") == "mm"
    rows = outputs.tableRows(table)
    expected = engine_detections(image, detector)
    assert [r["Index"] for r in rows] == [1, 2] and [r["Name"] for r in rows] == ["Lesion 1", "Lesion 2"]
    assert [r["Volume"] for r in rows] == pytest.approx([d.volume_ml for d in expected])
    assert table.GetNodeReference(outputs.TABLE_ROLE_SEGMENTATION) is segmentation
    assert table.GetNodeReference(outputs.TABLE_ROLE_VOLUME) is volume
    assert [table.GetNthNodeReference(outputs.TABLE_ROLE_ROI, n) for n in range(2)] == list(rois)
    assert segmentation.GetName() == "ct detections" and table.GetName() == "ct detections table"


def test_segmentation_geometry_is_the_inputs(core, card):
    image = selftest.lesionImage(GEOMETRIES["oblique"])
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    segmentation, _, _ = DetectionLogic().process(volume, model=card)
    reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    assert reference is volume
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Lesion 1")
    labelmap = segmentation.GetSegmentation().GetSegment(segment_id).GetRepresentation("Binary labelmap")
    matrix = slicer.vtkMatrix4x4() if hasattr(slicer, "vtkMatrix4x4") else __import__("vtk").vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), volume_bridge.ijkToRas(volume), atol=1e-9)


def test_no_detection_gives_empty_outputs_and_a_status(core, card):
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.lesionImage(lesions=()), "no lesion")
    logic = DetectionLogic()
    messages = []
    segmentation, table, rois = logic.process(volume, model=card, progress=lambda f, m: messages.append(m))
    assert rois == [] and table.GetTable().GetNumberOfRows() == 0
    assert table.GetTable().GetNumberOfColumns() == len(outputs.TABLE_COLUMNS)  # the header is there
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    assert reference is volume  # an empty segmentation on the input's grid
    assert logic.lastStatus.startswith("No object found") and messages[-1] == logic.lastStatus
    assert logic.lastDetections == []
    assert core.scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == 0


def test_rerun_into_the_same_outputs_replaces_only_its_own_results(core, card):
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.lesionImage(GEOMETRIES["axial"]), "ct")
    logic = DetectionLogic()
    segmentation, table, rois = logic.process(volume, model=card)
    own = segmentation.GetSegmentation().AddEmptySegment("", "My notes")
    segmentation2, table2, rois2 = logic.process(volume, segmentation, model=card, outputTable=table, threshold=0.6)
    assert segmentation2 is segmentation and table2 is table
    assert all(roi.GetScene() is None for roi in rois)  # the first run's ROIs are gone
    assert core.scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == len(rois2) == 2
    names = sorted(segmentation.GetSegmentation().GetSegment(s).GetName() for s in segmentation.GetSegmentation().GetSegmentIDs())
    assert names == ["Lesion 1", "Lesion 2", "My notes"] and segmentation.GetSegmentation().GetSegment(own)
    assert table.GetTable().GetNumberOfRows() == 2


def test_jump_to_detection_returns_the_rows_ras_centre(core, card, detector):
    image = selftest.lesionImage(GEOMETRIES["left_handed"])
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    logic = DetectionLogic()
    _, table, _ = logic.process(volume, model=card)
    expected = engine_detections(image, detector)
    for row, detection in enumerate(expected):
        assert logic.jumpToDetection(table, row) == pytest.approx(detection.centre_ras, abs=1e-9)
    with pytest.raises(ValueError, match="no row 2"):
        logic.jumpToDetection(table, 2)
    # the view's header shows the titles, so its rows are the table's rows
    assert table.GetUseColumnTitleAsColumnHeader()
    assert [outputs.detectionRow(table, r) for r in range(2)] == [0, 1]
    other = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "other")
    assert [outputs.detectionRow(other, r) for r in range(3)] == [None, 0, 1]  # names shown as row 0
    other.AddEmptyRow()
    with pytest.raises(ValueError, match="not a LowResDetect detections table"):
        logic.jumpToDetection(other, 0)


def test_parent_transform_is_refused_or_applied(core, card, detector):
    image = selftest.lesionImage(GEOMETRIES["axial"])
    volume = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    transform = core.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = np.eye(4)
    matrix[:3, :3] = selftest_rotation()
    matrix[:3, 3] = (10.0, -20.0, 5.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = DetectionLogic()
    with pytest.raises(ValueError, match="under the transform 'moved'.*harden"):
        logic.process(volume, model=card)
    assert core.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0

    segmentation, table, rois = logic.process(volume, model=card, applyParentTransform=True)
    world = volume_bridge.volumeToImage(volume, applyParentTransform=True)
    expected = engine_detections(world, detector)
    selftest.checkTable(table, expected)  # centres in world coordinates
    assert segmentation.GetTransformNodeID() == transform.GetID()
    for roi, detection in zip(rois, expected):
        assert roi.GetTransformNodeID() == transform.GetID()
        selftest.checkRoi(roi, world, detection)  # corners in world coordinates


def selftest_rotation():
    from LiteSegSlicerLib.selftest_common import rotation

    return rotation("y", 25) @ rotation("z", -10)


def test_cancel_leaves_the_scene_unchanged(core, card):
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.lesionImage(), "ct")
    before = core.scene.GetNumberOfNodes()
    cancel = threading.Event()

    def progress(fraction, message):
        if fraction > 0.1:
            cancel.set()

    with pytest.raises(Cancelled):
        DetectionLogic().process(volume, model=card, progress=progress, cancel=cancel)
    assert core.scene.GetNumberOfNodes() == before


def test_errors_are_clear(core, card, tmp_path, monkeypatch):
    logic = DetectionLogic()
    with pytest.raises(ValueError, match="no input volume"):
        logic.process(None, model=card)
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.lesionImage(), "ct")
    vector = core.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(ValueError, match="scalar volume is required"):
        logic.process(vector, model=card)
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        logic.process(volume, model=card, threshold=1.0)
    for margin in (-1, 1.5, True):
        with pytest.raises(ValueError, match="margin must be a whole number"):
            logic.process(volume, model=card, margin=margin)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        logic.process(volume, model=card, precision="half")
    monkeypatch.setattr("liteseg.detection.lowres.native_bfloat16", lambda: False)
    with pytest.raises(ValueError, match=r"no native bfloat16 .*: use precision='float32'"):
        logic.process(volume, model=card, precision="bfloat16")
    monkeypatch.setenv("LITESEG_MODELS", str(tmp_path))  # no bundled LowRes model
    with pytest.raises(ValueError, match=r"no LowRes model is bundled: give a model card with model='CARD.json'"):
        logic.process(volume)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        logic.process(volume, model="nope")
    from liteseg.io.modelcard import DEFAULT_MODEL  # a MoNet card is not a detector

    monet = Path(__file__).resolve().parents[2] / "Resources" / "Models" / f"{DEFAULT_MODEL}.json"
    if monet.is_file():
        with pytest.raises(ValueError, match="detection needs a 'lowres' model"):
            logic.process(volume, model=monet)
    bad = tmp_path / "bad.json"
    bad.write_text(card.read_text().replace('"sha256": "', '"sha256": "0'))
    (tmp_path / "lowres-selftest.pt").write_bytes(card.with_suffix(".pt").read_bytes())
    with pytest.raises(ValueError, match="does not match its model card"):
        logic.process(volume, model=bad)
    air = sitk.Image([20, 20, 20], sitk.sitkInt16) + 100  # not a CT for a HU-window model
    air[5, 5, 5] = 300
    grey = volume_bridge.addVolumeFromImage(core.scene, air, "grey")
    with pytest.raises(ValueError, match=r"does not look like a CT.*'Skip the intensity check'.*allowNonCT=True"):
        logic.process(grey, model=card)
    table = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    with pytest.raises(ValueError, match="is a vtkMRMLTableNode, not a segmentation"):
        logic.process(volume, table, model=card)
    with pytest.raises(ValueError, match="not a table"):
        logic.process(volume, model=card, outputTable=volume)
    assert core.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_the_panel_offers_the_bundled_model_and_reads_a_card_file_only_when_chosen(core, card):
    choices = models.detectorChoices()
    assert choices == ["lowres-lesion", models.MODEL_CARD_FILE]  # the bundled model is the default
    assert models.detectorModel("lowres-lesion", "/ignored/card.json") == "lowres-lesion"
    assert models.detectorModel(models.MODEL_CARD_FILE, f" {card} ") == str(card)
    with pytest.raises(ValueError, match="choose a LowRes model card file"):
        models.detectorModel(models.MODEL_CARD_FILE, "")  # an emptied field is not a model
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.lesionImage(GEOMETRIES["axial"]), "ct")
    _, table, _ = DetectionLogic().process(volume, model=models.detectorModel(models.MODEL_CARD_FILE, str(card)))
    assert table.GetTable().GetNumberOfRows() >= 1
