"""The bundled pancreas model: its card, its checksum, its held-out figures, and the demo on the
real CT; then the bundled LowRes detector."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import real_data

from liteseg.cpu import native_bfloat16
from liteseg.evaluation.metrics import dice
from liteseg.io.modelcard import DEFAULT_MODEL, bundled_cards, find_card, sha256_file
from liteseg.segmentation.demo import run_demo
from liteseg.segmentation.inference import load_model, segment_file


def test_bundled_card_is_honest_and_matches_its_weights():
    card = find_card(DEFAULT_MODEL)
    assert card in bundled_cards() and card.network == "monet" and card.version == "1.0.0"
    assert sha256_file(card.weights_path) == card.data["sha256"]
    assert card.preprocessing.window == (0.0, 200.0) and card.preprocessing.slice_size == (256, 256)
    label = card.labels[0]
    assert (label["name"], label["type"]["code"], label["category"]["code"]) == ("Pancreas", "15776009", "123037004")
    training, validation = card.data["training"], card.data["validation"]
    assert "CC BY 3.0" in training["dataset"]["licence"] and "10.7937/K9/TCIA.2016.tNB1kqBU" in training["dataset"]["licence"]
    trained = {c["patient"] for c in training["data"]}
    held_out = {c["patient"] for c in training["validation_data"]}
    assert len(held_out) == 10 and len(trained) == 43 and not trained & held_out  # 40 NIH + 3 negative slabs
    assert validation["on_training_cases"] is False
    evaluation = card.data["evaluation"]["held_out_slices"]
    assert {p["patient"] for p in evaluation["patients"]} == held_out
    notes = card.data["notes"]
    assert "2D slices only" in notes and "one collection" in notes and "one contrast phase" in notes
    assert card.data["command"].startswith("liteseg train ") and "nih_pancreas_slices.json" in card.data["command"]
    assert card.weights_path.stat().st_size < 2_000_000  # a small model: about 1.6 MB of float32
    runs = card.data["evaluation"]["sample_ct"]["runs"]
    assert [r["localised"] for r in runs] == [True, False]
    if card.localisation is not None:  # kept only when it costs at most 0.01 Dice on the sample CT
        assert runs[0]["dice"] >= runs[1]["dice"] - 0.01
        assert "changed the sample CT's Dice by" in card.data["inference"]["localisation"]["check"]


def test_bundled_first_look_model_is_the_same_recipe_at_128_held_out_on_the_same_patients():
    main, first_look = find_card(DEFAULT_MODEL), find_card("monet-pancreas-nih-128")
    assert first_look in bundled_cards() and sha256_file(first_look.weights_path) == first_look.data["sha256"]
    assert first_look.preprocessing.slice_size == (128, 128) and first_look.preprocessing.window == main.preprocessing.window
    assert "--slice-size 128 128" in first_look.data["command"]
    held_out = {c["patient"] for c in first_look.data["training"]["validation_data"]}
    assert held_out == {c["patient"] for c in main.data["training"]["validation_data"]}
    evaluation = first_look.data["evaluation"]["held_out_slices"]
    main_dice = main.data["evaluation"]["held_out_slices"]["mean_dice"]
    assert {p["patient"] for p in evaluation["patients"]} == held_out and 0.6 < evaluation["mean_dice"] < main_dice
    assert first_look.localisation is None  # it runs every slice when used on its own


def test_the_recorded_held_out_figures_are_reproduced():
    from liteseg.evaluation.slices import evaluate_slice_patients
    from liteseg.training.slice_dataset import cases_from_slice_dataset

    real_data("ct/pancreas_NIH-slices/manifest.csv")
    network, card = load_model()
    recorded = {p["patient"]: p for p in card.data["evaluation"]["held_out_slices"]["patients"]}
    patients = sorted(recorded)[:2]
    dataset = card.path.parents[1] / "Training" / card.data["training"]["dataset"]["file"]
    rows = evaluate_slice_patients(cases_from_slice_dataset(dataset), patients, network, card)
    for row in rows:
        assert row.dice == pytest.approx(recorded[row.patient]["dice"], abs=1e-3)
        assert row.ref_pixels == recorded[row.patient]["ref_pixels"]


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
    # the bundled card records the Dice of the same weights on this CT, which it never saw
    recorded = find_card(DEFAULT_MODEL).sample_ct_dice
    assert result.recorded_dice == recorded and result.card == find_card(DEFAULT_MODEL).path
    assert result.dice == pytest.approx(recorded, abs=0.02)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_pancreas_path))) > 0.5
    assert dice(sitk.GetArrayFromImage(segmentation), reference) == pytest.approx(result.dice)


def test_segmentation_does_not_depend_on_the_file_orientation(tmp_path, sample_ct_path):
    """The same CT stored with flipped and permuted axes gives the same labels in physical space."""
    ct = sitk.ReadImage(str(sample_ct_path))
    reoriented = sitk.DICOMOrient(ct, "PIL")  # other axis order and signs, same physical content
    assert reoriented.GetDirection() != ct.GetDirection()
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(reoriented, str(tmp_path / "reoriented.nii.gz"))
    segment_file(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", localisation=None)  # every slice: more voxels
    segment_file(tmp_path / "reoriented.nii.gz", tmp_path / "seg_reoriented.nii.gz", localisation=None)
    back = sitk.DICOMOrient(sitk.ReadImage(str(tmp_path / "seg_reoriented.nii.gz")), "RAS")
    original = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))
    assert sitk.GetArrayFromImage(original).sum() > 100


# ---------------------------------------------------------------- the bundled LowRes detector

DEEPLESION = "ct/lesions_DeepLesion/CT_Lesion_000002_03_01_035-047"


def bundled_lowres_card():
    from liteseg.detection.lowres import find_lowres_card

    return find_lowres_card(None)


def test_bundled_lowres_card_states_its_input_its_data_and_its_held_out_figures():
    card = bundled_lowres_card()
    assert card in bundled_cards() and card.network == "lowres"
    assert sha256_file(card.weights_path) == card.data["sha256"]
    assert card.data["input"]["preprocessing"] == {"kind": "grey_0_255", "window": None}
    assert "grey levels 0-255" in card.data["title"] and "not Hounsfield units" in card.data["notes"]
    assert "DEMONSTRATION" in card.data["notes"]
    assert {c["patient"] for c in card.data["training"]["data"]} == {"000001", "000002", "000009", "000010", "000015"}
    lopo = card.data["leave_one_patient_out"]
    assert [f["held_out_patient"] for f in lopo["folds"]] == ["000001", "000002", "000009", "000010", "000015"]
    assert (lopo["scans"], lopo["objects"]) == (6, 6) and 0 <= lopo["pooled_average_recall"] <= 1
    assert card.data["command"].startswith("liteseg train --method lowres") and "--leave-one-patient-out" in card.data["command"]
    assert card.weights_path.stat().st_size < 4_000_000  # 726,087 float32 parameters


def test_detect_and_evaluate_a_real_slab_end_to_end(tmp_path, capsys):
    from conftest import real_data

    from liteseg.cli.main import main

    image_path = real_data(f"{DEEPLESION}_img_uint8.nii.gz")
    reference_path = real_data(f"{DEEPLESION}_lesion.nii.gz")
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    output = tmp_path / "pred" / "slab.nii.gz"
    assert main(["detect", str(image_path), str(output)]) == 0
    image, labelmap = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(output))
    assert labelmap.GetSize() == image.GetSize() and labelmap.GetDirection() == image.GetDirection()
    assert np.allclose(labelmap.GetOrigin(), image.GetOrigin()) and np.allclose(labelmap.GetSpacing(), image.GetSpacing())
    rows = (tmp_path / "pred" / "slab_detections.csv").read_text().splitlines()
    assert len(rows) >= 2  # header + at least one detection
    sitk.WriteImage(sitk.ReadImage(str(reference_path)), str(tmp_path / "ref" / "slab.nii.gz"))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--froc", str(tmp_path / "froc")]) == 0
    out = capsys.readouterr().out
    # a training slab of the bundled model: its one lesion is found
    assert "over 1 object(s) in 1 scan(s)" in out and "over 1 hit object(s)" in out
    assert (tmp_path / "froc.csv").is_file() and (tmp_path / "froc.png").is_file()


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_stage2_keeps_the_float32_labelmap_on_real_slabs():
    """The rule of the low-precision paths: labels within Dice 0.005 of float32 (here per slab, on
    every DeepLesion slab of the data, with the bundled weights)."""
    from liteseg.detection.lowres import detect_image, load_detector

    network, preprocessing = load_detector(bundled_lowres_card())
    slabs = sorted(real_data("ct/lesions_DeepLesion").glob("*_img_uint8.nii.gz"))
    assert len(slabs) >= 6
    for path in slabs:
        image = sitk.ReadImage(str(path))
        labels = [sitk.GetArrayFromImage(detect_image(image, network, preprocessing, precision=p).labelmap) > 0
                  for p in ("float32", "bfloat16")]
        assert labels[0].any(), path.name
        assert dice(labels[0], labels[1]) >= 0.995, path.name
