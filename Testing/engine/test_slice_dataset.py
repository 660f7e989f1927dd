"""2D slice datasets: orientation and grey levels exactly as inference sees a CT, proven on real
data; negative volumes; per-patient evaluation and the sample-CT checks of `liteseg evaluate`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import real_data

from liteseg.cli.main import main
from liteseg.errors import LiteSegError
from liteseg.evaluation.slices import (
    PatientDice,
    VolumeCheck,
    evaluate_slice_patients,
    far_slice_mask,
    held_out_patients,
    record_evaluation,
)
from liteseg.io.geometry import slice_orientation
from liteseg.io.modelcard import ModelCard, load_network
from liteseg.segmentation.inference import _model_input
from liteseg.segmentation.localisation import Localisation
from liteseg.segmentation.preprocessing import Preprocessing, resize_slices
from liteseg.training import TrainConfig, split_by_patient, train
from liteseg.training.datasets import Slices, load_slices, select_slices
from liteseg.training.slice_dataset import (
    GreyLevels,
    NegativeVolume,
    cases_from_slice_dataset,
    is_slice_dataset,
    read_grey,
    stacked_image,
)

WINDOW = Preprocessing(window=(0.0, 200.0))
NIH_DATASET = Path(__file__).resolve().parents[2] / "Resources" / "Training" / "nih_pancreas_slices.json"


def write_picture(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def write_dataset(folder: Path, slices: dict[str, list[tuple[np.ndarray, np.ndarray]]], rows: str = "posterior_to_anterior",
                  negatives: list[dict] = ()) -> Path:
    """Pictures (grey, 0/255 mask) per patient, a manifest and a description, as the NIH data are stored."""
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("patient", "file", "variant"))
        for patient, pairs in slices.items():
            for number, (grey, mask) in enumerate(pairs):
                name = f"{patient}-{number}.png"
                write_picture(grey, folder / "images" / name)
                write_picture(mask, folder / "masks" / name)
                writer.writerow((patient, name, "full"))
    description = folder / "slices.json"
    description.write_text(json.dumps({"slices": {"manifest": "manifest.csv", "rows": rows, "mask_threshold": 127,
                                                  "grey_levels": {"hu_per_grey": 1.0, "hu_at_grey_0": 0.0}},
                                       "negative_volumes": list(negatives)}))
    return description


def as_nih_file(canonical_slice: np.ndarray) -> np.ndarray:
    """What the NIH JPEGs hold for a canonical HU slice: clip(HU, 0, 255), rows posterior -> anterior."""
    return np.clip(canonical_slice, 0, 255)[::-1]


def test_a_real_ct_slice_written_like_the_nih_files_reads_back_as_the_network_input(tmp_path, sample_ct_path, sample_pancreas_path):
    ct, reference = sitk.ReadImage(str(sample_ct_path)), sitk.ReadImage(str(sample_pancreas_path))
    orientation = slice_orientation(ct)
    volume = orientation.to_canonical(sitk.GetArrayViewFromImage(ct))
    organ = orientation.to_canonical(sitk.GetArrayViewFromImage(reference)) > 0.5
    k = int(np.argmax(organ.sum(axis=(1, 2))))
    description = write_dataset(tmp_path, {"P": [(as_nih_file(volume[k]), organ[k][::-1] * 255)]})

    slices = load_slices(cases_from_slice_dataset(description)[0], (1,), WINDOW)

    expected = _model_input(volume, np.array([k]), WINDOW.normalizer(volume), WINDOW.slice_size).to(torch.float16)
    assert torch.equal(slices.images, expected)
    expected_mask = resize_slices(torch.from_numpy(organ[k : k + 1, None].astype(np.float32)), WINDOW.slice_size, labels=True)
    assert torch.equal(slices.labels, expected_mask.to(torch.uint8)) and slices.labels.sum() > 0
    # the row order matters: read without the flip, the slice is not the network's input
    unflipped = write_dataset(tmp_path, {"P": [(as_nih_file(volume[k]), organ[k][::-1] * 255)]}, rows="anterior_to_posterior")
    assert not torch.equal(load_slices(cases_from_slice_dataset(unflipped)[0], (1,), WINDOW).images, expected)


def test_a_stack_of_canonical_slices_is_its_own_canonical_view():
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    image = stacked_image(array)
    assert np.array_equal(slice_orientation(image).to_canonical(sitk.GetArrayViewFromImage(image)), array)


@pytest.mark.parametrize("hu_file, jpeg, patient", [("img_001.npy", "PANCREAS_0001-1124.jpg", "PANCREAS_0001"),
                                                     ("img_005.npy", "PANCREAS_0002-1090.jpg", "PANCREAS_0002")])
def test_the_hu_slices_agree_with_their_jpeg_twins(hu_file, jpeg, patient):
    hu = np.load(real_data(f"ct/pancreas_NIH-HU-slices/{hu_file}")).astype(np.float32)
    mask = np.load(real_data(f"ct/pancreas_NIH-HU-slices/mask_{hu_file[4:]}")) > 0
    real_data("ct/pancreas_NIH-slices/manifest.csv")
    case = next(c for c in cases_from_slice_dataset(NIH_DATASET) if c.patient == patient)
    index = [s.image.name for s in case.slices].index(jpeg)

    read_hu, read_mask = case.read_slice(index)

    # the HU files share the JPEGs' row order (posterior -> anterior): canonical is the flip
    difference = np.abs(read_hu - np.clip(hu[::-1], 0, 255))
    assert difference.mean() < 2.0 and np.median(difference) <= 1.0  # JPEG noise, not a different mapping
    assert np.abs(read_hu - np.clip(hu, 0, 255)).mean() > 10  # without the flip they disagree
    assert np.array_equal(read_mask > 0, mask[::-1])


def test_the_nih_description_lists_fifty_patients_and_the_negative_slabs():
    real_data("ct/pancreas_NIH-slices/manifest.csv")
    cases = cases_from_slice_dataset(NIH_DATASET)
    patients = [c for c in cases if not c.train_only]
    assert len(patients) == 50 and sum(len(c.slices) for c in patients) == 855
    negatives = [c for c in cases if c.train_only]
    assert len(negatives) == 3 and all(isinstance(c, NegativeVolume) for c in negatives)
    assert is_slice_dataset(NIH_DATASET)
    train_cases, val_cases = split_by_patient(cases, 0.2, seed=0)
    assert len(val_cases) == 10 and not any(c.train_only for c in val_cases)
    assert set(negatives) <= set(train_cases)
    with pytest.raises(LiteSegError, match="not in the data set"):
        split_by_patient(cases, 0.2, val_patients=(negatives[0].patient,))


def test_a_window_outside_the_stored_grey_levels_and_colour_pictures_are_refused(tmp_path):
    grey = np.full((32, 32), 40, np.uint8)
    description = write_dataset(tmp_path, {"P": [(grey, np.zeros((32, 32)))]})
    with pytest.raises(LiteSegError, match=r"holds only 0 to 255 HU.*window is \[-150, 200\]"):
        load_slices(cases_from_slice_dataset(description)[0], (1,), Preprocessing())
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "colour.png"))
    with pytest.raises(LiteSegError, match="colour picture"):
        read_grey(tmp_path / "colour.png")
    with pytest.raises(LiteSegError, match="not found"):
        read_grey(tmp_path / "missing.png")
    assert GreyLevels(400 / 255, -160).faithful_hu == pytest.approx((-160, 240))


def test_negative_volume_grey_levels_map_to_hu(tmp_path):
    grey = np.full((3, 8, 8), 102, np.uint8)  # 102 in a L40 W400 window = 0 HU
    grey[0, 0, 0] = 255
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "slab.nii.gz"))
    image, reference = NegativeVolume("N", tmp_path / "slab.nii.gz", GreyLevels(400 / 255, -160)).read((1,), WINDOW)
    hu = sitk.GetArrayViewFromImage(image)
    assert hu[0, 0, 0] == pytest.approx(240.0, abs=0.01) and hu[1] == pytest.approx(0.0, abs=0.01)
    assert not sitk.GetArrayViewFromImage(reference).any()


def test_empty_slices_are_drawn_only_from_slices_without_foreground():
    labels = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    labels[:2, :, 2:4, 2:4] = 1
    slices = Slices(torch.zeros(4, 1, 8, 8, dtype=torch.float16), labels)
    assert slices.foreground.dtype == torch.bool and slices.foreground.tolist() == [True, True, False, False]
    drawn = select_slices(slices, 5.0, torch.Generator().manual_seed(0))
    assert sorted(drawn.tolist()) == [0, 1, 2, 3]
    assert len(select_slices(slices, 0.5, torch.Generator().manual_seed(0))) == 3


def test_far_slices_are_those_30_mm_from_every_reference_slice():
    def reference(filled: slice) -> sitk.Image:
        array = np.zeros((40, 4, 4), np.uint8)
        array[filled, 1:3, 1:3] = 1
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.0, 1.0, 3.0))
        return image

    assert np.flatnonzero(far_slice_mask(reference(slice(8, 11)))).tolist() == list(range(20, 40))
    assert np.flatnonzero(far_slice_mask(reference(slice(0, 1)))).tolist() == list(range(10, 40))
    with pytest.raises(LiteSegError, match="no foreground"):
        far_slice_mask(reference(slice(0, 0)))


@pytest.mark.parametrize("localised_dice, kept", [(0.795, True), (0.81, True), (0.785, False)])
def test_recorded_localisation_follows_the_at_most_0_01_rule(tmp_path, localised_dice, kept):
    card_path = tmp_path / "card.json"
    card_path.write_text(json.dumps({"name": "m", "version": "1", "network": "monet", "weights": "m.pt", "sha256": "0",
                                     "input": {}, "output": {"threshold": 0.5}, "labels": [],
                                     "inference": {"localisation": {"step_mm": 20, "margin_px": 8}}}))
    rows = [PatientDice("A", 3, 0.7, 10, 12), PatientDice("B", 4, 0.9, 11, 10)]
    checks = [VolumeCheck("localised", True, localised_dice, 80.0, 40, 0.5, 1.0),
              VolumeCheck("whole volume", False, 0.80, 82.0, 40, 2.0, 3.0)]
    localisation = Localisation(15.0, 32, "m-128")  # the first look by another model, recorded with it
    data = record_evaluation(ModelCard.read(card_path), "slices.json", rows, checks, localisation, "liteseg evaluate")
    assert ModelCard.read(card_path).data == data
    assert data["evaluation"]["held_out_slices"]["mean_dice"] == pytest.approx(0.8)
    assert [r["setting"] for r in data["evaluation"]["sample_ct"]["runs"]] == ["localised", "whole volume"]
    card = ModelCard.read(card_path)
    assert card.localisation == (localisation if kept else None)
    assert ("coarse pass of the model m-128" in data["inference"]["localisation"]["check"]) if kept else "inference" not in data
    assert card.sample_ct_dice == (localised_dice if kept else 0.80)  # the figure of the card's default setting


def synthetic_slices(patients: int, per_patient: int, seed: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Canonical grey slices (fat 0, body 60, a 150 HU 'organ' disc that is the mask), stored
    like the NIH files with their rows flipped."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:64, :64]
    data = {}
    for p in range(patients):
        pairs = []
        for _ in range(per_patient):
            cy, cx = rng.integers(20, 44, size=2)
            organ = (rows - cy) ** 2 + (cols - cx) ** 2 < 36
            grey = np.where((rows - 32) ** 2 + (cols - 32) ** 2 < 900, 60, 0) + rng.integers(0, 5, (64, 64))
            grey[organ] = 150
            pairs.append((grey[::-1], (organ * 255)[::-1]))
        data[f"P{p}"] = pairs
    return data


def test_training_on_a_slice_dataset_and_evaluating_its_held_out_patients(tmp_path, capsys):
    description = write_dataset(tmp_path, synthetic_slices(4, 3, seed=0))
    config = TrainConfig(output=tmp_path / "run", name="slices", preprocessing=Preprocessing(window=(0.0, 200.0), slice_size=(64, 64)),
                         epochs=2, batch_size=4, num_threads=1, val_fraction=0.5, label_values=(1,), precision="bfloat16")
    card_path = train(config, cases_from_slice_dataset(description), "liteseg train test")
    card = ModelCard.read(card_path)
    held_out = held_out_patients(card)
    assert len(held_out) == 2 and {c["patient"] for c in card.data["training"]["data"]}.isdisjoint(held_out)
    assert card.data["training"]["recipe"]["precision"].startswith("bfloat16")
    assert [c["patient"] for c in card.data["validation"]["cases"]] == held_out

    rows = evaluate_slice_patients(cases_from_slice_dataset(description), held_out, load_network(card), card)
    assert [r.patient for r in rows] == held_out and all(r.slices == 3 and r.ref_pixels > 0 for r in rows)
    # the trainer's validation Dice and the evaluation are the same computation
    # (the trainer runs the eager network, evaluation the fast backend: equal up to float rounding)
    assert [r.dice for r in rows] == pytest.approx([c["dice"] for c in card.data["validation"]["cases"]], abs=0.01)

    assert main(["evaluate", "--slices", str(description), "--model", str(card_path), "--csv", str(tmp_path / "d.csv"),
                 "--record"]) == 0
    printed = capsys.readouterr().out
    assert "per-patient Dice over 2 held-out patient(s)" in printed and "localisation by default: off" in printed
    assert len(list(csv.DictReader(open(tmp_path / "d.csv")))) == 2
    recorded = ModelCard.read(card_path).data["evaluation"]["held_out_slices"]
    assert [p["patient"] for p in recorded["patients"]] == held_out
    assert recorded["mean_dice"] == pytest.approx(np.mean([r.dice for r in rows]), abs=0.01)
    with pytest.raises(LiteSegError, match="not in the slice dataset"):
        evaluate_slice_patients(cases_from_slice_dataset(description), ["Q"], load_network(card), card)
    assert main(["evaluate", "--slices", str(description), "--model", str(card_path), "--localiser", "m-128"]) == 2
    assert "--localiser is checked on the sample CT: give --sample-ct too" in capsys.readouterr().err


def test_liteseg_train_takes_a_slice_dataset_with_its_network_window_and_precision(tmp_path, capsys):
    description = write_dataset(tmp_path, synthetic_slices(2, 2, seed=1))
    description.write_text(json.dumps({**json.loads(description.read_text()), "description": "two synthetic patients",
                                       "licence": "CC0"}))
    output = tmp_path / "run"
    assert main(["--threads", "1", "train", str(description), "--output", str(output), "--name", "pocket",
                 "--network", "pocket_unet2d", "--window", "0", "200", "--precision", "bfloat16", "--epochs", "1",
                 "--val-fraction", "0.5", "--label-values", "1"]) == 0
    card = ModelCard.read(output / "pocket.json")
    assert card.network == "pocket_unet2d" and card.preprocessing.window == (0.0, 200.0)
    assert card.data["training"]["dataset"] == {"file": "slices.json", "description": "two synthetic patients", "licence": "CC0"}
    assert card.data["validation"]["cases"][0]["hd95_mm"] is None  # stacked slices have no spacing
    assert main(["train", str(description), "--output", str(tmp_path / "bad"), "--epochs", "1"]) == 2
    assert "window is [-150, 200]" in capsys.readouterr().err
