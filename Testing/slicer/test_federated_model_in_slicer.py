"""Weights that come out of a federated run load in the MoNetSegmentation logic unchanged: a tiny
Flower simulation (two sites of a CSV dataset of phantom CTs, one round) writes its card, and the
logic segments a volume node with it exactly as the engine does."""

import csv

import pytest
import SimpleITK as sitk

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)
pytest.importorskip("flwr", reason="federated training needs the optional extra: pip install 'liteseg[federated]'")

from slicer_fixtures import core  # noqa: E402,F401  (pytest fixtures)

from liteseg.federated.config import FederatedConfig  # noqa: E402
from liteseg.federated.launch import simulate  # noqa: E402
from liteseg.segmentation.inference import load_model, segment_image  # noqa: E402

from LiteSegSlicerLib import segmentation_selftest as selftest  # noqa: E402
from LiteSegSlicerLib import volume_bridge  # noqa: E402
from LiteSegSlicerLib.segmentation_logic import SegmentationLogic  # noqa: E402
from LiteSegSlicerLib.selftest_common import GEOMETRIES  # noqa: E402


def test_a_federated_model_card_segments_in_the_slicer_logic(core, tmp_path):
    rows = []
    for patient, geometry in enumerate(("axial", "left_handed", "axial", "left_handed")):
        image = selftest.phantomImage(GEOMETRIES[geometry])
        label = sitk.Cast(image == 150, sitk.sitkUInt8)
        sitk.WriteImage(image, str(tmp_path / f"ct{patient}.nii.gz"))
        sitk.WriteImage(label, str(tmp_path / f"label{patient}.nii.gz"))
        rows.append((f"ct{patient}.nii.gz", f"label{patient}.nii.gz", f"P{patient}"))
    with open(tmp_path / "cases.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("image", "label", "patient"), *rows])
    config = FederatedConfig(dataset=str(tmp_path / "cases.csv"), output=str(tmp_path / "run"), rounds=1,
                             site_shares=(1, 1), val_fraction=0.5, batch_size=4, threads=1, foreground_prior=0.05)
    card_path = simulate(config)

    logic = SegmentationLogic()
    volume = volume_bridge.addVolumeFromImage(core.scene, selftest.phantomImage(GEOMETRIES["oblique"]), "ct")
    node = logic.process(volume, model=str(card_path))
    network, card = load_model(card_path)
    assert logic.lastModel.name == card.name == "monet-pancreas-federated"
    expected = segment_image(volume_bridge.volumeToImage(volume), network, card.preprocessing, threshold=card.threshold).labelmap
    segment_id = selftest.checkPancreasSegment(node, volume)
    selftest.checkSameVoxels(node, segment_id, expected, "federated MoNet")
