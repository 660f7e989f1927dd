"""The trainer: case lists, patient split, label merging, augmentation, loss, and tiny real trainings."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from liteseg.cli.train import cases_from_args, configure_parser, train_config
from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard, load_network, sha256_file
from liteseg.models import build_model
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.training import (
    Case,
    TrainConfig,
    case_from_pair,
    cases_from_decathlon,
    cases_from_pairs_csv,
    split_by_patient,
    train,
)
from liteseg.training.augment import random_affine
from liteseg.training.datasets import load_slices, merge_labels
from liteseg.training.losses import dice_loss

SMALL = Preprocessing(slice_size=(64, 64))


def synthetic_case(folder: Path, name: str, shift: int = 0, label_dtype=np.uint8, tumour: bool = False) -> Case:
    """A CT-like volume, array (32, 48, 40): air -1000 HU, a 40 HU body, a 150 HU organ labelled 1
    (optionally with a tumour part labelled 2), written with a RAS-like direction."""
    z, y, x = np.mgrid[:32, :48, :40]
    body = ((y - 24) / 20) ** 2 + ((x - 20) / 17) ** 2 < 1
    organ = ((z - 16) / 6) ** 2 + ((y - 20 - shift) / 6) ** 2 + ((x - 24 + shift) / 7) ** 2 < 1
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct[organ] = 150
    label = organ.astype(label_dtype)
    if tumour:
        label[organ & (x > 24 - shift)] = 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for array, suffix in ((ct, ""), (label, "_seg")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 3.0))
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        path = folder / f"{name}{suffix}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return Case(name, paths[0], paths[1])


def tiny_config(output: Path, **options) -> TrainConfig:
    return TrainConfig(output=output, preprocessing=SMALL, batch_size=4, num_threads=1, **options)


def test_split_by_patient_is_deterministic_and_keeps_patients_together():
    cases = [Case(f"p{i:02d}", Path(f"p{i:02d}_{k}.nii.gz"), Path(f"l{i:02d}_{k}.nii.gz")) for i in range(20) for k in range(1 + i % 2)]
    train_cases, val_cases = split_by_patient(cases, 0.3, seed=7)
    assert (train_cases, val_cases) == split_by_patient(cases, 0.3, seed=7)
    train_patients, val_patients = {c.patient for c in train_cases}, {c.patient for c in val_cases}
    assert not train_patients & val_patients
    assert len(val_patients) == 6 and len(train_patients) == 14
    assert len(train_cases) + len(val_cases) == len(cases)
    assert {c.patient for c in split_by_patient(cases, 0.3, seed=8)[1]} != val_patients


def test_split_without_validation_and_single_patient():
    cases = [Case("a", Path("a.nii.gz"), Path("a_seg.nii.gz"))]
    assert split_by_patient(cases, 0.0) == (cases, cases)
    with pytest.raises(LiteSegError, match="validation fraction of 0"):
        split_by_patient(cases, 0.3)


def test_decathlon_folder_and_pairs_csv(tmp_path, monkeypatch):
    for sub, name in (("imagesTr", "pancreas_001.nii.gz"), ("labelsTr", "pancreas_001.nii.gz"),
                      ("imagesTr", "pancreas_004.nii.gz"), ("labelsTr", "pancreas_004.nii.gz")):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / name).touch()
    training = [{"image": f"./imagesTr/pancreas_00{i}.nii.gz", "label": f"./labelsTr/pancreas_00{i}.nii.gz"} for i in (1, 4)]
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Pancreas", "training": training, "test": []}))
    cases = cases_from_decathlon(tmp_path)
    assert [c.patient for c in cases] == ["pancreas_001", "pancreas_004"]
    assert cases[1].label.resolve() == (tmp_path / "labelsTr" / "pancreas_004.nii.gz").resolve()

    csv = tmp_path / "lists" / "pairs.csv"
    csv.parent.mkdir()
    csv.write_text("image,label,patient\n../imagesTr/pancreas_001.nii.gz,../labelsTr/pancreas_001.nii.gz,P1\n"
                   "../imagesTr/pancreas_004.nii.gz,../labelsTr/pancreas_004.nii.gz,\n")
    cases = cases_from_pairs_csv(csv)
    assert [c.patient for c in cases] == ["P1", "pancreas_004"]
    assert cases[0].image.resolve() == (tmp_path / "imagesTr" / "pancreas_001.nii.gz").resolve()

    args = argparse.ArgumentParser()
    configure_parser(args)
    parsed = args.parse_args([str(csv), "--output", str(tmp_path / "out"), "--max-cases", "1"])
    assert parsed.label_values == [1, 2] and parsed.epochs == 50 and parsed.batch_size == 8
    assert [c.patient for c in cases_from_args(parsed)] == ["P1"]
    assert train_config(parsed).preprocessing.slice_size == (256, 256)
    low = train_config(args.parse_args([str(csv), "--output", "out", "--slice-size", "128", "96", "--window", "0", "200"]))
    assert low.preprocessing == Preprocessing(window=(0.0, 200.0), slice_size=(128, 96))
    low.check()
    for bad in (["100", "128"], ["0", "0"]):
        with pytest.raises(LiteSegError, match="slice size must be multiples of 16"):
            train_config(args.parse_args([str(csv), "--output", "out", "--slice-size", *bad])).check()
    data_csv = tmp_path / "data.csv"  # $LITESEG_DATA/ paths are inside the data folder, wherever the CSV is
    data_csv.write_text("image,label\n$LITESEG_DATA/imagesTr/pancreas_004.nii.gz,$LITESEG_DATA/labelsTr/pancreas_004.nii.gz\n")
    monkeypatch.setenv("LITESEG_DATA", str(tmp_path))
    (case,) = cases_from_pairs_csv(data_csv)
    assert case.image == tmp_path / "imagesTr" / "pancreas_004.nii.gz" and case.patient == "pancreas_004"
    (csv.parent / "missing.csv").write_text("image,label\nnowhere.nii.gz,nowhere_seg.nii.gz\n")
    with pytest.raises(LiteSegError, match="training file not found"):
        cases_from_pairs_csv(csv.parent / "missing.csv")


def test_label_merging_float_labels_and_grid_check(tmp_path):
    assert merge_labels(np.array([0, 1, 2, 3]), (1, 2)).tolist() == [0, 1, 1, 0]
    assert merge_labels(np.array([0.0, 0.9999999, 1.0000001, 2.0]), (1,)).tolist() == [0, 1, 1, 0]

    merged = load_slices(synthetic_case(tmp_path, "tumour", tumour=True), (1, 2), SMALL)
    organ_only = load_slices(synthetic_case(tmp_path, "tumour", tumour=True), (1,), SMALL)
    as_float = load_slices(synthetic_case(tmp_path, "float", label_dtype=np.float64), (1, 2), SMALL)
    assert merged.images.dtype == torch.float16 and merged.labels.dtype == torch.uint8
    assert merged.images.shape == (32, 1, 64, 64)
    assert set(merged.labels.unique().tolist()) == {0, 1}
    aligned = (merged.images.float() > 0.8) == merged.labels.bool()  # the 150 HU organ is the label
    assert aligned.float().mean() > 0.99
    assert organ_only.labels.sum() < merged.labels.sum()
    assert torch.equal(merged.labels, as_float.labels)  # same organ, label stored as float64

    case = synthetic_case(tmp_path, "moved")
    label = sitk.ReadImage(str(case.label))
    label.SetOrigin((0.0, 0.0, 5.0))
    sitk.WriteImage(label, str(case.label))
    with pytest.raises(LiteSegError, match="case moved"):
        load_slices(case, (1,), SMALL)


def test_augmentation_identity_and_binary_labels():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 40, generator=generator)
    labels = (torch.rand(4, 1, 32, 40, generator=generator) > 0.7).float()
    same_images, same_labels = random_affine(images, labels, generator, rotation=0, zoom=0, shift=0)
    assert torch.allclose(same_images, images, atol=1e-5)
    assert torch.equal(same_labels, labels)
    warped_images, warped_labels = random_affine(images, labels, generator)
    assert set(warped_labels.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(warped_labels, labels)
    assert warped_images.shape == images.shape


def test_dice_loss_perfect_and_opposite():
    target = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    logits = (target * 2 - 1) * 30
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-logits, target).item() == pytest.approx(1.0, abs=1e-2)


def test_tiny_training_writes_weights_card_checkpoint_and_curve(tmp_path):
    cases = [synthetic_case(tmp_path / "data", "a", tumour=True), synthetic_case(tmp_path / "data", "b", shift=3)]
    output = tmp_path / "run"
    card_path = train(tiny_config(output, epochs=2, val_fraction=0.5, notes="test run"), cases, "liteseg train test")
    assert card_path == output / "monet-pancreas-ct.json"
    for name in ("monet-pancreas-ct.pt", "checkpoint.pt", "training_curve.png"):
        assert (output / name).is_file(), name
    assert (output / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = ModelCard.read(card_path)
    assert card.data["sha256"] == sha256_file(output / "monet-pancreas-ct.pt")
    assert card.preprocessing == SMALL
    assert card.data["labels"][0]["name"] == "Pancreas"
    training, validation = card.data["training"], card.data["validation"]
    assert training["epochs"] == 2 and training["best_epoch"] in (1, 2)
    assert len(training["data"]) == 1 and len(training["validation_data"]) == 1
    assert training["data"][0]["patient"] != training["validation_data"][0]["patient"]
    assert not validation["on_training_cases"] and len(validation["cases"]) == 1
    assert 0.0 <= validation["mean_dice"] <= 1.0
    assert card.data["command"] == "liteseg train test" and card.data["notes"] == "test run"
    network = load_network(card)
    assert network(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(LiteSegError, match="already holds"):
        train(tiny_config(output, epochs=2, val_fraction=0.5), cases, "again")


def test_a_two_channel_network_is_trained_with_one_output_and_learns(tmp_path):
    """PocketNet's default head has two channels (softmax); the binary recipe builds it with one.
    With two, the sigmoid Dice broadcast over both and the loss stayed at 0.9996 for ten epochs."""
    solo = synthetic_case(tmp_path / "data", "solo")
    card_path = train(tiny_config(tmp_path / "run", network="pocket_unet2d", epochs=3, val_fraction=0.0,
                                  passes_per_epoch=4), [case_from_pair(solo.image, solo.label)], "pocket")
    card = ModelCard.read(card_path)
    assert card.data["network_options"] == {"out_channels": 1}
    history = card.data["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.01
    assert load_network(card)(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="differ in shape"):
        dice_loss(torch.zeros(2, 2, 8, 8), torch.zeros(2, 1, 8, 8))


def test_resume_continues_exactly(tmp_path):
    solo = synthetic_case(tmp_path / "data", "solo")
    cases = [case_from_pair(solo.image, solo.label)]
    train(tiny_config(tmp_path / "resumed", epochs=1, val_fraction=0.0), cases, "first")
    card_path = train(tiny_config(tmp_path / "resumed", epochs=2, val_fraction=0.0), cases, "second", resume=True)
    train(tiny_config(tmp_path / "straight", epochs=2, val_fraction=0.0), cases, "straight")

    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    card = ModelCard.read(card_path)
    assert card.data["validation"]["on_training_cases"] is True
    assert "validated on the training cases" in card.data["training"]["split"]
    with pytest.raises(LiteSegError, match="lr"):
        train(tiny_config(tmp_path / "resumed", epochs=3, val_fraction=0.0, lr=1e-3), cases, "x", resume=True)


def test_output_prior_sets_the_first_predictions_to_the_prior():
    from liteseg.models import build_model
    from liteseg.training.trainer import set_output_prior

    network = build_model("monet").train()
    set_output_prior(network, 0.01)
    # in training mode the head's BatchNorm standardises its input, then adds the prior's bias
    probability = torch.sigmoid(network(torch.rand(4, 1, 64, 64)))
    assert network.head[1].bias.item() == pytest.approx(np.log(0.01 / 0.99))
    assert probability.mean().item() < 0.1


def test_passes_per_epoch_multiplies_the_steps_and_is_recorded(tmp_path):
    solo = synthetic_case(tmp_path / "data", "solo")
    cases = [case_from_pair(solo.image, solo.label)]
    card_path = train(
        tiny_config(tmp_path / "run", epochs=1, val_fraction=0.0, passes_per_epoch=3, foreground_prior=0.05),
        cases, "passes",
    )
    recipe = ModelCard.read(card_path).data["training"]["recipe"]
    assert "3 time(s) per epoch" in recipe["slices"]
    assert recipe["output_bias_init"] == "logit(0.05) (prior initialisation)"
    with pytest.raises(LiteSegError, match="passes per epoch"):
        tiny_config(tmp_path / "bad", passes_per_epoch=0).check()
    with pytest.raises(LiteSegError, match="foreground prior"):
        tiny_config(tmp_path / "bad", foreground_prior=1.5).check()


def test_split_by_named_validation_patients_holds_out_exactly_those():
    cases = [Case(patient, Path(f"i{i}.nii"), Path(f"l{i}.nii")) for i, patient in enumerate("AABCD")]
    train_cases, val_cases = split_by_patient(cases, 0.3, seed=0, val_patients=("A",))
    assert [c.patient for c in val_cases] == ["A", "A"]
    assert [c.patient for c in train_cases] == ["B", "C", "D"]
    with pytest.raises(LiteSegError, match="not in the data set"):
        split_by_patient(cases, 0.3, val_patients=("Z",))
    with pytest.raises(LiteSegError, match="nothing is left to train on"):
        split_by_patient(cases, 0.3, val_patients=tuple("ABCD"))


def test_bfloat16_training_steps_and_warns_where_the_cpu_only_emulates_it():
    from liteseg.training.datasets import Slices
    from liteseg.training.trainer import train_epoch

    torch.manual_seed(0)
    network = build_model("pocket_unet2d", in_channels=1, out_channels=1)
    before = [p.detach().clone() for p in network.parameters()]
    labels = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    labels[:, :, 10:20, 10:20] = 1
    slices = Slices(torch.rand(2, 1, 32, 32).half(), labels)
    optimizer = torch.optim.NAdam(network.parameters(), lr=1e-3)
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = train_epoch(network, optimizer, slices, torch.arange(2), 2, torch.Generator().manual_seed(0),
                           torch.device("cpu"), True, None)
    assert 0.0 < loss <= 1.0 and any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))
    emulated = [w for w in caught if "bfloat16 training is emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
