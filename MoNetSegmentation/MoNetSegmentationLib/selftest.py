"""The module's self-test body, without Qt: it needs a scene (and, for the real CT, the Volumes
logic), so it runs in Slicer (MoNetSegmentationTest) and from pytest on slicer-core alike.

- `runGeometrySelfTest`: synthetic asymmetric CT-like volumes in awkward geometries (axial,
  coronal-acquired, oblique, left-handed) segmented through `SegmentationLogic.process` with a
  deterministic threshold network; the segment's voxels, mapped to physical space, must be
  exactly those the engine finds on the equivalent SimpleITK image. Also checks the segment's
  name, colour, terminology, reference geometry and subject hierarchy placement.
- `runBundledModelSelfTest`: the bundled model (default) on a synthetic volume: same metadata
  checks, and its voxels equal the engine's on the equivalent image.
- `runRealCTSelfTest`: the sample abdominal CT from the data folder ($LITESEG_DATA, default
  `../shared/data` beside the checkout) loaded with Slicer's reader, segmented with the bundled
  model, compared with the reference pancreas (Dice) in physical space.

Every check raises AssertionError with the numbers when it fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from . import segmentation_writer, volume_bridge
from .engine import DEFAULT_MODEL
from .logic import SegmentationLogic

Log = Callable[[str], None]

CUT_HU = 95.0  # the threshold network's cut: between soft tissue (40 HU) and the organ (150 HU)
PANCREAS_TERMINOLOGY = ("SCT^123037004^Anatomical Structure", "SCT^15776009^Pancreas")
REAL_CT = "ct/pancreas_TS-A/ct.nii.gz"
REAL_REFERENCE = "ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz"


def _check(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------------- synthetic data
def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# Direction matrices (columns = index axes, in LPS) every run must survive.
GEOMETRIES = {
    "axial": np.diag([-1.0, -1.0, 1.0]),  # the usual RAS-stored CT
    "coronal_acquired": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    "oblique": rotation("x", 20) @ rotation("z", 15),
    "left_handed": np.diag([1.0, 1.0, -1.0]),
}


def phantomImage(direction=GEOMETRIES["axial"], size=(24, 20, 16), spacing=(1.1, 1.4, 2.5)) -> sitk.Image:
    """An asymmetric CT-like volume (int16 HU): air, a body (40 HU), a spine (700 HU) behind and an
    off-centre 'organ' (150 HU) on the patient's left, anterior, superior side. Its physical content
    is the same for every direction matrix (centred near (3, -7, 11) mm LPS)."""
    image = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    image.SetOrigin(tuple(-centre + np.array([3.0, -7.0, 11.0])))
    rel = physicalPointsLps(image) - np.array([3.0, -7.0, 11.0])
    x, y, z = rel[..., 0], rel[..., 1], rel[..., 2]
    body = (x / 12) ** 2 + (y / 10) ** 2 + (z / 22) ** 2 < 1
    spine = ((x / 2.5) ** 2 + ((y - 6) / 2.5) ** 2 < 1) & body
    organ = ((x - 4) / 4.5) ** 2 + ((y + 3) / 3.5) ** 2 + ((z - 5) / 8) ** 2 < 1
    array = np.full(body.shape, -1000, dtype=np.int16)
    array[body] = 40
    array[spine] = 700
    array[organ] = 150
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def physicalPointsLps(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shaped (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(image.GetSize())), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def foregroundPointsRas(labelmap: sitk.Image) -> np.ndarray:
    """RAS coordinates (N x 3) of the nonzero voxels of a SimpleITK labelmap."""
    kji = np.argwhere(sitk.GetArrayViewFromImage(labelmap) != 0)
    direction = np.array(labelmap.GetDirection()).reshape(3, 3)
    lps = np.asarray(labelmap.GetOrigin()) + (kji[:, ::-1] * np.asarray(labelmap.GetSpacing())) @ direction.T
    return lps @ volume_bridge.LPS_FROM_RAS.T


def voxelIndices(pointsRas: np.ndarray, grid: sitk.Image, what: str) -> set:
    """Voxel indices (i, j, k) of `grid` at RAS points that must be voxel centres of that grid."""
    if len(pointsRas) == 0:
        return set()
    lps = pointsRas @ volume_bridge.LPS_FROM_RAS.T
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    continuous = ((lps - np.asarray(grid.GetOrigin())) @ np.linalg.inv(direction).T) / np.asarray(grid.GetSpacing())
    offGrid = float(np.abs(continuous - np.round(continuous)).max())
    _check(offGrid < 1e-3, f"{what}: points are {offGrid:.4f} voxel off the input grid")
    return set(map(tuple, np.round(continuous).astype(int)))


def thresholdModel(cutHu: float = CUT_HU, sliceSize=(64, 64)):
    """(network, card) of a real torch network whose output is known: logit > 0 exactly where the
    CT exceeds `cutHu`, with the MoNet card's preprocessing (window [-150, 200] HU) and labels."""
    import torch
    from torch import nn

    from liteseg.io.modelcard import PANCREAS_LABEL, ModelCard
    from liteseg.segmentation.preprocessing import Preprocessing

    preprocessing = Preprocessing(slice_size=tuple(sliceSize))
    low, high = preprocessing.window

    class ThresholdNet(nn.Module):
        out_channels = 1

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            with torch.no_grad():
                self.conv.weight.fill_(50.0)
                self.conv.bias.fill_(-50.0 * (cutHu - low) / (high - low))

        def forward(self, x):
            return self.conv(x)

    card = ModelCard(
        Path(f"threshold-{cutHu:g}HU.json"),
        {
            "name": f"threshold-{cutHu:g}HU", "version": "test", "network": "threshold", "weights": "", "sha256": "",
            "input": {"preprocessing": preprocessing.to_dict()},
            "output": {"activation": "sigmoid", "threshold": 0.5},
            "labels": [PANCREAS_LABEL],
        },
    )
    return ThresholdNet().eval(), card


def putInStudy(scene, node, patient: str = "Self-test patient", study: str = "Self-test study") -> int:
    """Place a node in a patient/study branch of the subject hierarchy, as DICOM loading does."""
    shNode = scene.GetSubjectHierarchyNode()
    patientItem = shNode.CreateSubjectItem(shNode.GetSceneItemID(), patient)
    studyItem = shNode.CreateStudyItem(patientItem, study)
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, studyItem)
    else:
        shNode.CreateItem(studyItem, node)
    return studyItem


# ---------------------------------------------------------------------- checks
def checkPancreasSegment(segmentationNode, volumeNode, studyItem: Optional[int] = None) -> str:
    """Name, colour, terminology, reference geometry and subject hierarchy place; the segment ID."""
    import slicer

    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentation.GetSegmentIdBySegmentName("Pancreas")
    _check(segmentId, f"no 'Pancreas' segment in {segmentationNode.GetName()}")
    segment = segmentation.GetSegment(segmentId)
    color = np.array(segment.GetColor())
    _check(np.allclose(color, np.array([249, 180, 111]) / 255.0, atol=1e-6), f"pancreas colour is {color * 255}")
    entry = segmentation_writer.segmentTag(segment, slicer.vtkSegment.GetTerminologyEntryTagName())
    fields = entry.split("~")
    _check(len(fields) == 7 and tuple(fields[1:3]) == PANCREAS_TERMINOLOGY, f"terminology entry is {entry!r}")
    reference = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
    _check(reference is volumeNode, "the segmentation's reference geometry is not the input volume")
    parameter = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    expected = _referenceGeometryString(volumeNode)
    _check(parameter == expected, f"reference geometry {parameter!r} differs from the volume's {expected!r}")
    if studyItem is not None:
        shNode = segmentationNode.GetScene().GetSubjectHierarchyNode()
        item = shNode.GetItemByDataNode(segmentationNode)
        _check(item and shNode.GetItemParent(item) == studyItem, "the segmentation is not under the volume's study")
    return segmentId


def _referenceGeometryString(volumeNode) -> str:
    import slicer

    matrix = slicer.util.vtkMatrixFromArray(volume_bridge.ijkToRas(volumeNode))
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, volumeNode.GetImageData().GetExtent())


def checkSameVoxels(segmentationNode, segmentId: str, expected: sitk.Image, what: str) -> int:
    """The segment's voxels in physical space are exactly the foreground of `expected`; their count."""
    actual = voxelIndices(segmentation_writer.segmentPointsRas(segmentationNode, segmentId), expected, what)
    wanted = voxelIndices(foregroundPointsRas(expected), expected, what)
    _check(
        actual == wanted,
        f"{what}: {len(actual - wanted)} voxels segmented that the engine did not find, "
        f"{len(wanted - actual)} found by the engine missing (engine: {len(wanted)} voxels)",
    )
    return len(wanted)


# ---------------------------------------------------------------------- self-tests
def runGeometrySelfTest(scene, log: Log = print, geometries=None) -> dict:
    """Segment the synthetic volume in each geometry with the threshold network; return the
    voxel counts. Each volume is created from the SimpleITK image through the volume bridge."""
    from liteseg.segmentation.inference import segment_image

    network, card = thresholdModel()
    logic = SegmentationLogic(modelLoader=lambda model: (network, card))
    counts = {}
    for name in geometries or GEOMETRIES:
        image = phantomImage(GEOMETRIES[name])
        volume = volume_bridge.addVolumeFromImage(scene, image, f"Self-test CT {name}")
        studyItem = putInStudy(scene, volume, study=f"Self-test study {name}")
        segmentationNode = logic.process(volume, model=card.name)
        segmentId = checkPancreasSegment(segmentationNode, volume, studyItem)
        expected = segment_image(image, network, card.preprocessing, threshold=card.threshold).labelmap
        counts[name] = checkSameVoxels(segmentationNode, segmentId, expected, name)
        truth = int((sitk.GetArrayViewFromImage(image) > CUT_HU).sum())
        _check(abs(counts[name] - truth) <= 0.1 * truth, f"{name}: {counts[name]} voxels, about {truth} expected")
        log(f"{name}: {counts[name]} voxels at the engine's positions")
    return counts


def runBundledModelSelfTest(scene, log: Log = print, model: str = DEFAULT_MODEL) -> int:
    """The bundled model on the oblique synthetic volume: metadata, and the engine's voxels."""
    from liteseg.segmentation.inference import segment_image, with_card_defaults

    logic = SegmentationLogic()
    network, card = logic.loadModel(model)
    image = phantomImage(GEOMETRIES["oblique"], size=(36, 32, 10), spacing=(1.2, 1.2, 4.0))
    volume = volume_bridge.addVolumeFromImage(scene, image, "Self-test CT bundled model")
    studyItem = putInStudy(scene, volume)
    fractions = []
    segmentationNode = logic.process(volume, model=model, progress=lambda f, m: fractions.append(f))
    _check(fractions and fractions[-1] == 1.0 and fractions == sorted(fractions), f"progress went {fractions}")
    segmentId = checkPancreasSegment(segmentationNode, volume, studyItem)
    expected = segment_image(image, network, card.preprocessing, **with_card_defaults(card, {})).labelmap
    count = checkSameVoxels(segmentationNode, segmentId, expected, f"bundled model {model}")
    log(f"{model} v{card.version}: {count} voxels, {logic.lastTimings['total']:.2f} s")
    return count


def runRealCTSelfTest(scene, volumesLogic, dataRoot: Path, log: Log = print, model: str = DEFAULT_MODEL) -> float:
    """The sample CT through Slicer's reader, the bundled model, Dice against the reference."""
    ctPath, referencePath = Path(dataRoot) / REAL_CT, Path(dataRoot) / REAL_REFERENCE
    volume = volumesLogic.AddArchetypeVolume(str(ctPath), "Self-test abdominal CT")
    _check(volume is not None, f"Slicer could not read {ctPath}")
    logic = SegmentationLogic()
    segmentationNode = logic.process(volume, model=model)
    segmentId = checkPancreasSegment(segmentationNode, volume)
    reference = sitk.ReadImage(str(referencePath))
    predicted = voxelIndices(segmentation_writer.segmentPointsRas(segmentationNode, segmentId), reference, "real CT")
    referenceMask = sitk.GetArrayViewFromImage(reference) > 0.5
    inside = sum(1 for i, j, k in predicted if referenceMask[k, j, i])
    dice = 2.0 * inside / max(1, len(predicted) + int(referenceMask.sum()))
    log(f"real CT: Dice {dice:.3f} against the reference pancreas, {logic.lastTimings['total']:.1f} s")
    recorded = logic.lastModel.sample_ct_dice  # liteseg evaluate --record, the card's default setting
    _check(recorded is not None, f"model card {logic.lastModel.path} records no Dice on the sample CT")
    _check(abs(dice - recorded) <= 0.02, f"Dice {dice:.3f}, the model card records {recorded:.3f}")
    return dice
