"""MoNetSegmentation's self-test body, without Qt: it needs a scene (and, for the real CT, the Volumes
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
from typing import Optional

import numpy as np
import SimpleITK as sitk

from . import segmentation_writer, volume_bridge
from .models import DEFAULT_MODEL
from .segmentation_logic import SegmentationLogic
from .selftest_common import (  # noqa: F401  (GEOMETRIES, rotation, putInStudy, dataRootWith: for the tests too)
    GEOMETRIES,
    Log,
    check as _check,
    dataRootWith,
    foregroundPointsRas,
    physicalPointsLps,
    putInStudy,
    rotation,
    voxelIndices,
)

CUT_HU = 95.0  # the threshold network's cut: between soft tissue (40 HU) and the organ (150 HU)
PANCREAS_TERMINOLOGY = ("SCT^123037004^Anatomical Structure", "SCT^15776009^Pancreas")
REAL_CT = "ct/pancreas_TS-A/ct.nii.gz"
REAL_REFERENCE = "ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz"


# ---------------------------------------------------------------------- synthetic data
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


def thresholdModel(cutHu: float = CUT_HU, sliceSize=(64, 64)):
    """(network, card) of a real torch network whose output is known: logit > 0 exactly where the
    CT exceeds `cutHu`, with the MoNet card's preprocessing (window [-150, 200] HU) and labels."""
    import torch
    from torch import nn

    from liteseg.io.labels import PANCREAS_LABEL
    from liteseg.io.modelcard import ModelCard
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
