"""LowResDetect's self-test body, without Qt: it needs a scene only, so it runs in Slicer
(LowResDetectTest) and from pytest on slicer-core alike. Everything is built offline.

The geometry self-test does not use the trained model (its output on synthetic volumes is not
known exactly): it writes, in a temporary folder, a model card whose weights are a real `LowResNet` set by hand
(`brightObjectNetwork`) so that its output is known: stage 1 flags the x8 cells where a
2-4-8 average/max pooling of the normalised input exceeds `STAGE1_CUT`, and stage 2 returns
20 * (input - 0.5), so each refined object is exactly the voxels above the middle of the
window inside its box. The card goes through the engine's real loading path (checksum,
`find_lowres_card`, `load_detector`).

- `runGeometrySelfTest`: a synthetic CT-like volume with two bright "lesions", in awkward
  geometries (axial, coronal-acquired, oblique, left-handed), detected through
  `DetectionLogic.process`: the table equals the engine's detections on the equivalent
  SimpleITK image, each segment's voxels are exactly the detection's, in physical space, each
  ROI is the detection's box in physical space; names, terminology, reference geometry and the
  subject hierarchy place are checked too. Then a volume without lesion: no detection, empty
  outputs, a status that says so.
- `runBundledModelSelfTest`: a real DeepLesion slab from the data folder through Slicer's reader
  and the bundled LowRes model: outputs equal the engine's detections, the lesion is found.

Every check raises AssertionError with the numbers when it fails.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from . import detection_outputs as outputs
from . import segmentation_writer, volume_bridge
from .detection_logic import DetectionLogic
from .selftest_common import (  # noqa: F401  (GEOMETRIES, dataRootWith: for the tests too)
    GEOMETRIES,
    Log,
    check as _check,
    dataRootWith,
    foregroundPointsRas,
    physicalPointsLps,
    putInStudy,
    voxelIndices,
)

WINDOW = (0.0, 400.0)  # HU window of the self-test card: soft tissue 40 HU -> 0.1, lesions 300 HU -> 0.75
LESION_HU = 300
STAGE1_CUT = 0.25
# A real DeepLesion slab and its lesion mask (relative to the data folder, $LITESEG_DATA).
REAL_SLAB = "ct/lesions_DeepLesion/CT_Lesion_000001_02_01_008-023_img_uint8.nii.gz"
REAL_LESION = "ct/lesions_DeepLesion/CT_Lesion_000001_02_01_008-023_lesion.nii.gz"
LESION_TERMINOLOGY = ("SCT^49755003^Morphologically Altered Structure", "SCT^52988006^Lesion")
# Two lesions (LPS centre offset from the volume centre, mm; radius, mm), far enough apart to stay
# two detections with the default margin.
LESIONS = (((-14.0, 8.0, -12.0), 6.0), ((12.0, -10.0, 14.0), 5.0))


# ---------------------------------------------------------------------- model
def brightObjectNetwork(stage1Cut: float = STAGE1_CUT):
    """A real LowResNet whose output is known (see the module docstring), in eval mode.

    Stage 1 passes the input's first channel through every level (centre-tap convolutions,
    identity residual blocks, BatchNorm at identity), so its x8 logits are
    20 * (avg2(max2(avg2(x))) - stage1Cut). Stage 2 makes a constant 1 from a convolution bias in
    its x2 refinement and returns 20 * x1 - 10 * 1.
    """
    import torch
    from torch import nn

    from liteseg.models.lowres import LowResNet

    network = LowResNet()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        for module in network.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)  # exactly the identity
                module.weight.fill_(1.0)
                module.bias.zero_()
        s1 = network.stage1
        s1.level2[0].weight[0, 0, 1, 1, 1] = 1.0  # Conv3d(1, 16)
        s1.level2[1][2].weight[0, 0, 1, 1, 1] = 1.0  # PreAct3d(16, 16)
        s1.level4[0][2].weight[0, 0, 1, 1, 1] = 1.0  # PreAct3d(16, 32)
        s1.level8[0][2].weight[0, 0, 1, 1, 1] = 1.0  # PreAct3d(32, 64)
        s1.head[0][2].weight[0, 0, 0, 0, 0] = 20.0  # PreAct3d(64, 1, kernel 1)
        s1.head[1].bias.fill_(-20.0 * stage1Cut)  # BatchNorm3d(1)
        s2 = network.stage2
        s2.refine2[0].body[3].bias[1] = 1.0  # channel 1 becomes 1 everywhere
        s2.refine2[3].weight[0, 1, 1, 1, 1] = 1.0  # -> channel 0 of the refined x2 features
        s2.refine1[3].weight[0, 0, 0, 0, 0] = -10.0  # constant channel
        s2.refine1[3].weight[0, 16, 0, 0, 0] = 20.0  # the input x1
    return network.eval()


def writeDetectorCard(folder, window=WINDOW, stage1Cut: float = STAGE1_CUT, name: str = "lowres-selftest") -> Path:
    """Write `brightObjectNetwork`'s weights and a LowRes model card (HU window preprocessing,
    sha256 of the weights) into `folder`; returns the card's path."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    torch.save(brightObjectNetwork(stage1Cut).state_dict(), weights)
    card = {
        "name": name,
        "version": "selftest",
        "network": "lowres",
        "description": "Hand-set LowRes weights with a known output, for tests only.",
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "input": {"preprocessing": {"kind": "hu_window", "window": list(window)}},
        "output": {"activation": "sigmoid", "threshold": 0.5},
        "labels": [{"value": 1, "name": "Lesion"}],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(card, indent=2))
    return path


# ---------------------------------------------------------------------- synthetic data
def lesionImage(direction=GEOMETRIES["axial"], size=(48, 40, 36), spacing=(1.0, 1.2, 1.5), lesions=LESIONS) -> sitk.Image:
    """A CT-like volume (int16 HU): air, an ellipsoid body (40 HU) and spherical lesions
    (`LESION_HU`) at fixed physical places, whatever the direction matrix."""
    image = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    image.SetOrigin(tuple(-centre + np.array([5.0, -3.0, 20.0])))
    rel = physicalPointsLps(image) - np.array([5.0, -3.0, 20.0])
    half = np.abs(np.array(image.GetDirection()).reshape(3, 3) @ (np.array(size) * np.array(spacing))) / 2
    body = ((rel / (0.9 * half)) ** 2).sum(axis=-1) < 1
    array = np.full(body.shape, -1000, dtype=np.int16)
    array[body] = 40
    for offset, radius in lesions:
        array[((rel - np.array(offset)) ** 2).sum(axis=-1) < radius**2] = LESION_HU
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


# ---------------------------------------------------------------------- checks
def checkTable(tableNode, detections) -> None:
    """The table's columns are `detection_outputs.TABLE_COLUMNS` and its rows the detections' values."""
    rows = outputs.tableRows(tableNode)
    names = [tableNode.GetTable().GetColumn(c).GetName() for c in range(tableNode.GetTable().GetNumberOfColumns())]
    _check(names == [c[0] for c in outputs.TABLE_COLUMNS], f"table columns are {names}")
    _check(len(rows) == len(detections), f"{len(rows)} table rows for {len(detections)} detections")
    for row, d in zip(rows, detections):
        expected = {
            "Index": d.index, "Name": outputs.segmentName(d.index),
            "Centre R": d.centre_ras[0], "Centre A": d.centre_ras[1], "Centre S": d.centre_ras[2],
            "Size I": d.size_mm[2], "Size J": d.size_mm[1], "Size K": d.size_mm[0],
            "Volume": d.volume_ml, "Max probability": d.max_probability,
        }
        for key, value in expected.items():
            ok = row[key] == value if isinstance(value, (str, int)) else abs(row[key] - value) <= 1e-6 * max(1.0, abs(value))
            _check(ok, f"table row {d.index}: {key} is {row[key]!r}, the engine's {value!r}")


def boxCornersRas(image: sitk.Image, box) -> np.ndarray:
    """The 8 corners (RAS) of a box (array order) of `image`: half a voxel outside its voxels."""
    corners = []
    for corner in np.ndindex(2, 2, 2):
        kji = [box.start[a] - 0.5 if c == 0 else box.stop[a] - 0.5 for a, c in enumerate(corner)]
        corners.append(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]]))
    return np.asarray(corners) @ volume_bridge.LPS_FROM_RAS.T


def roiCornersWorld(roi) -> np.ndarray:
    """The 8 corners (world RAS) of a box ROI node."""
    import slicer

    size = np.array(roi.GetSize(), dtype=float)
    objectToWorld = slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix())
    return np.asarray([objectToWorld[:3, :3] @ ((np.array(c) - 0.5) * size) + objectToWorld[:3, 3] for c in np.ndindex(2, 2, 2)])


def checkRoi(roi, image: sitk.Image, detection, tolerance: float = 1e-4) -> None:
    """The ROI is the detection's box mapped to physical space: same 8 corners (as a set), a
    centre at the box centre, a size equal to the detection's size_mm (I, J, K order)."""
    _check(roi.IsA("vtkMRMLMarkupsROINode"), f"{roi.GetName()} is a {roi.GetClassName()}")
    _check(roi.GetName() == outputs.segmentName(detection.index), f"ROI named {roi.GetName()!r}")
    expected = boxCornersRas(image, detection.box)
    actual = roiCornersWorld(roi)
    distances = np.linalg.norm(actual[:, None, :] - expected[None, :, :], axis=-1)
    worst = float(distances.min(axis=1).max())
    _check(worst < tolerance and len(set(distances.argmin(axis=1))) == 8, f"ROI {roi.GetName()}: corners {worst:.5f} mm off the box")
    size = np.array(roi.GetSize(), dtype=float)
    _check(np.allclose(size, detection.size_mm[::-1], atol=tolerance), f"ROI {roi.GetName()}: size {size}, box {detection.size_mm[::-1]}")
    centre = np.zeros(3)
    roi.GetCenterWorld(centre)
    _check(np.allclose(centre, expected.mean(axis=0), atol=tolerance), f"ROI {roi.GetName()}: centre {centre}, box {expected.mean(axis=0)}")


def checkSegments(segmentationNode, volumeNode, image: sitk.Image, detections, studyItem: Optional[int] = None) -> None:
    """One segment "Lesion <n>" per detection, with the lesion terminology, whose voxels in
    physical space are exactly the detection's; the volume is the reference geometry."""
    import slicer

    segmentation = segmentationNode.GetSegmentation()
    names = [segmentation.GetSegment(s).GetName() for s in segmentation.GetSegmentIDs()]
    _check(names == [outputs.segmentName(d.index) for d in detections], f"segments are {names}")
    reference = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
    _check(reference is volumeNode, "the segmentation's reference geometry is not the input volume")
    parameter = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    expectedGeometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(
        slicer.util.vtkMatrixFromArray(volume_bridge.ijkToRas(volumeNode)), volumeNode.GetImageData().GetExtent()
    )
    _check(parameter == expectedGeometry, f"reference geometry {parameter!r}, the volume's {expectedGeometry!r}")
    if studyItem is not None:
        shNode = segmentationNode.GetScene().GetSubjectHierarchyNode()
        item = shNode.GetItemByDataNode(segmentationNode)
        _check(item and shNode.GetItemParent(item) == studyItem, "the segmentation is not under the volume's study")
    for d in detections:
        segmentId = segmentation.GetSegmentIdBySegmentName(outputs.segmentName(d.index))
        segment = segmentation.GetSegment(segmentId)
        entry = segmentation_writer.segmentTag(segment, slicer.vtkSegment.GetTerminologyEntryTagName())
        _check(tuple(entry.split("~")[1:3]) == LESION_TERMINOLOGY, f"terminology entry is {entry!r}")
        array = np.zeros(tuple(reversed(image.GetSize())), np.uint8)
        array[d.box.slices()] = d.mask
        expected = sitk.GetImageFromArray(array)
        expected.CopyInformation(image)
        actual = voxelIndices(segmentation_writer.segmentPointsRas(segmentationNode, segmentId), image, segment.GetName())
        wanted = voxelIndices(foregroundPointsRas(expected), image, segment.GetName())
        _check(actual == wanted, f"{segment.GetName()}: {len(actual ^ wanted)} voxels differ from the engine's ({len(wanted)})")


def checkOutputs(segmentationNode, tableNode, rois, volumeNode, image: sitk.Image, detections,
                 studyItem: Optional[int] = None) -> None:
    """The table, the segments and one ROI per detection are the engine's `detections`."""
    checkTable(tableNode, detections)
    checkSegments(segmentationNode, volumeNode, image, detections, studyItem)
    _check(len(rois) == len(detections), f"{len(rois)} ROIs for {len(detections)} detections")
    for roi, d in zip(rois, detections):
        checkRoi(roi, image, d)


# ---------------------------------------------------------------------- self-tests
def runGeometrySelfTest(scene, log: Log = print, geometries=None, folder=None) -> dict:
    """Detect the two synthetic lesions in each geometry; check table, segments and ROIs against
    the engine's detections on the equivalent SimpleITK image; then a volume without lesions.
    Returns {geometry: number of detections}."""
    from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector

    with tempfile.TemporaryDirectory() if folder is None else nullcontext(folder) as directory:
        card = writeDetectorCard(directory)
        network, preprocessing = load_detector(find_lowres_card(card))
        logic = DetectionLogic()
        counts = {}
        for name in geometries or GEOMETRIES:
            image = lesionImage(GEOMETRIES[name])
            volume = volume_bridge.addVolumeFromImage(scene, image, f"Self-test lesions {name}")
            studyItem = putInStudy(scene, volume, study=f"Self-test study {name}")
            fractions = []
            segmentationNode, tableNode, rois = logic.process(volume, model=card, progress=lambda f, m: fractions.append(f))
            _check(fractions and fractions[-1] == 1.0 and fractions == sorted(fractions), f"progress went {fractions}")
            expected = detect_image(image, network, preprocessing, threshold=0.5).detections
            _check(len(expected) == len(LESIONS), f"{name}: the engine found {len(expected)} objects, {len(LESIONS)} lesions")
            checkOutputs(segmentationNode, tableNode, rois, volume, image, expected, studyItem)
            centre = logic.jumpToDetection(tableNode, 0)
            _check(np.allclose(centre, expected[0].centre_ras), f"jump to {centre}, detection at {expected[0].centre_ras}")
            counts[name] = len(expected)
            log(f"{name}: {len(expected)} objects, table, segments and ROIs at the engine's places")

        image = lesionImage(lesions=())
        volume = volume_bridge.addVolumeFromImage(scene, image, "Self-test no lesion")
        segmentationNode, tableNode, rois = logic.process(volume, model=card)
        _check(not rois and tableNode.GetTable().GetNumberOfRows() == 0, "objects found in a volume without lesion")
        _check(segmentationNode.GetSegmentation().GetNumberOfSegments() == 0, "segments in a volume without lesion")
        _check(logic.lastStatus.startswith("No object found"), f"status {logic.lastStatus!r}")
        log(f"no lesion: {logic.lastStatus}")
    return counts


def runBundledModelSelfTest(scene, volumesLogic, dataRoot: Path, log: Log = print) -> float:
    """A real DeepLesion slab (grey levels 0-255, as the bundled model expects) through Slicer's
    reader and the bundled LowRes model: table, segments and ROIs equal the engine's detections
    on the same file, and the annotated lesion is found. The slab is one of the model's training
    cases (the card gives the held-out figures). Returns the found lesion's Dice."""
    from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector
    from liteseg.evaluation.froc import object_dice

    slabPath, lesionPath = Path(dataRoot) / REAL_SLAB, Path(dataRoot) / REAL_LESION
    volume = volumesLogic.AddArchetypeVolume(str(slabPath), "Self-test DeepLesion slab")
    _check(volume is not None, f"Slicer could not read {slabPath}")
    logic = DetectionLogic()
    segmentationNode, tableNode, rois = logic.process(volume)
    card = find_lowres_card(None)
    _check(logic.lastModel.path == card.path, f"the logic used {logic.lastModel.path}, the bundled card is {card.path}")
    image = sitk.ReadImage(str(slabPath))
    network, preprocessing = load_detector(card)
    expected = detect_image(image, network, preprocessing, threshold=float(card.data["output"]["threshold"])).detections
    _check(expected, "the bundled model finds nothing in its own training slab")
    checkOutputs(segmentationNode, tableNode, rois, volume, image, expected)
    found = np.zeros(tuple(reversed(image.GetSize())), np.uint8)
    for d in expected:
        found[d.box.slices()] |= d.mask
    dices = object_dice(found, sitk.GetArrayViewFromImage(sitk.ReadImage(str(lesionPath))) > 0)
    _check(len(dices) == 1 and dices[0] > 0.5, f"lesion Dice {dices} (one lesion annotated)")
    log(f"DeepLesion slab: {len(expected)} detection(s), lesion Dice {dices[0]:.3f}, {logic.lastStatus}")
    return dices[0]
