"""The bundled demonstration weights: their card, their checksum, and the demo on the real CT."""

import numpy as np
import pytest
import SimpleITK as sitk

from liteseg.demo import run_demo
from liteseg.inference import load_model, segment_file
from liteseg.modelcard import DEFAULT_MODEL, bundled_cards, find_card, sha256_file
from liteseg.metrics import dice


def test_bundled_card_is_honest_and_matches_its_weights():
    card = find_card(DEFAULT_MODEL)
    assert card in bundled_cards()
    assert card.network == "monet"
    assert sha256_file(card.weights_path) == card.data["sha256"]
    assert card.preprocessing.window == (-150.0, 200.0) and card.preprocessing.slice_size == (256, 256)
    label = card.labels[0]
    assert (label["name"], label["type"]["code"], label["category"]["code"]) == ("Pancreas", "15776009", "123037004")
    notes = card.data["notes"]
    assert "DEMONSTRATION" in notes and "ONE public" in notes and "Task07" in notes
    assert card.data["validation"]["on_training_cases"] is True
    assert card.data["command"].startswith("liteseg train ")
    assert card.weights_path.stat().st_size < 2_000_000  # a small model: about 1.6 MB of float32
    assert card.localisation is not None and card.localisation.margin_px > 0  # checked: see its "check"
    assert "never lowered it by more than 0.01" in card.data["inference"]["localisation"]["check"]


def test_demo_segments_the_sample_ct_on_its_grid(tmp_path, monkeypatch, sample_ct_path, sample_pancreas_path):
    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LITESEG_OFFLINE", "1")
    result = run_demo(tmp_path / "demo")
    ct = sitk.ReadImage(str(sample_ct_path))
    segmentation = sitk.ReadImage(str(result.segmentation))
    assert segmentation.GetSize() == ct.GetSize()
    np.testing.assert_allclose(segmentation.GetOrigin(), ct.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(segmentation.GetDirection(), ct.GetDirection(), atol=1e-6)
    assert segmentation.GetPixelID() == sitk.sitkUInt8
    picture = sitk.ReadImage(str(result.picture))
    assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetSize()[0] > 3 * 101
    # the bundled card records the Dice of the same weights on the same case
    recorded = find_card(DEFAULT_MODEL).data["validation"]["mean_dice"]
    assert result.dice == pytest.approx(recorded, abs=0.02)
    assert result.dice > 0.5
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_pancreas_path))) > 0.5
    assert dice(sitk.GetArrayFromImage(segmentation), reference) == pytest.approx(result.dice)


def test_segmentation_does_not_depend_on_the_file_orientation(tmp_path, sample_ct_path):
    """The same CT stored with flipped and permuted axes gives the same labels in physical space."""
    ct = sitk.ReadImage(str(sample_ct_path))
    reoriented = sitk.DICOMOrient(ct, "PIL")  # other axis order and signs, same physical content
    assert reoriented.GetDirection() != ct.GetDirection()
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(reoriented, str(tmp_path / "reoriented.nii.gz"))
    segment_file(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz")
    segment_file(tmp_path / "reoriented.nii.gz", tmp_path / "seg_reoriented.nii.gz")
    back = sitk.DICOMOrient(sitk.ReadImage(str(tmp_path / "seg_reoriented.nii.gz")), "RAS")
    original = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))
    assert sitk.GetArrayFromImage(original).sum() > 100
