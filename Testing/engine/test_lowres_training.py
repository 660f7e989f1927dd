"""LowRes training: patch sampling, stage-1 target and loss, stage-1 freezing, a tiny real
training (weights, card, checkpoint, curve, resume) and the card loading into detection."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from liteseg.benchmarks.detection import compare_lopo, format_comparison, time_large_volume
from liteseg.cli.train_lowres import configure_lowres_parser, lowres_config
from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.errors import LiteSegError
from liteseg.models.lowres import LowResNet
from liteseg.training.datasets import Case
from liteseg.training.lowres_lopo import fold_configs, train_lowres_lopo
from liteseg.training.lowres_trainer import (
    LowResTrainConfig,
    make_optimizers,
    max_pooled_target,
    set_stage,
    stage1_loss,
    train_lowres,
    training_step,
)
from liteseg.training.patches import PatchVolume, canonical_volume, random_flips, sample_batch, sample_patch

GREY = DetectionPreprocessing("grey_0_255", None)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blob_arrays(shape=(24, 64, 64), centres=((8, 20, 20), (14, 44, 40), (10, 24, 48)), radius=4):
    """Grey-level volume (background 40, noise-free) with bright balls labelled 1."""
    z, y, x = np.indices(shape)
    label = np.zeros(shape, np.uint8)
    for c in centres:
        label[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2] = 1
    image = np.where(label == 1, 220, 40).astype(np.uint8)
    return image, label


def write_case(folder, name="blobs") -> Case:
    image, label = blob_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for array, suffix in ((image, ""), (label, "_seg")):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((0.8, 0.8, 2.0))
        path = folder / f"{name}{suffix}.nii.gz"
        sitk.WriteImage(itk, str(path))
        paths.append(path)
    return Case(name, *paths)


# ---------------------------------------------------------------- patches


def test_patch_shape_and_padding_of_a_thin_slab():
    image = np.full((5, 40, 40), 0.5, np.float32)
    label = np.zeros((5, 40, 40), np.uint8)
    label[2, 10, 10] = 1
    volume = PatchVolume.from_arrays(image, label)
    generator = torch.Generator().manual_seed(0)
    for on_lesion in (True, False):
        patch = sample_patch(volume, (16, 32, 32), generator, on_lesion=on_lesion)
        assert patch.image.shape == patch.label.shape == (1, 16, 32, 32)
        assert patch.image.dtype == torch.float32
        # 5 slices inside a 16-slice patch: 11 padded slices of 0, the rest 0.5
        per_slice = patch.image[0].mean(dim=(1, 2))
        assert int((per_slice == 0.5).sum()) == 5 and int((per_slice == 0).sum()) == 11
        assert -11 <= patch.start[0] <= 0
        if on_lesion:
            assert patch.on_lesion and patch.label.sum() == 1
            assert 0 <= patch.start[1] <= 8 and patch.start[1] == 0  # centre 10 - 16 clamped to 0
    big = sample_patch(volume, (4, 8, 8), generator, on_lesion=True)
    assert big.image.shape == (1, 4, 8, 8) and big.label.sum() == 1  # lesion voxel inside the patch
    with pytest.raises(LiteSegError, match="patch size"):
        sample_patch(volume, (16, 32), generator)


def test_lesion_centred_fraction_is_near_the_probability_and_seeded():
    image = np.zeros((16, 64, 64), np.float32)
    label = np.zeros_like(image, dtype=np.uint8)
    label[8, 32, 32] = 1
    volumes = [PatchVolume.from_arrays(image, label), PatchVolume.from_arrays(image, np.zeros_like(label))]
    generator = torch.Generator().manual_seed(3)
    images, labels, centred = sample_batch(volumes, 400, (8, 8, 8), generator)
    assert images.shape == labels.shape == (400, 1, 8, 8, 8)
    assert 0.43 < centred / 400 < 0.57
    # every lesion-centred patch holds the lesion; a uniform 8^3 patch of 16x64x64 rarely does
    assert int(labels.flatten(1).any(1).sum()) >= centred
    again = sample_batch(volumes, 400, (8, 8, 8), torch.Generator().manual_seed(3))
    assert again[2] == centred and torch.equal(again[0], images)
    never = sample_batch(volumes, 50, (8, 8, 8), generator, lesion_probability=0.0)[2]
    assert never == 0


def test_canonical_volume_follows_the_direction_matrix():
    image_array, label_array = blob_arrays((8, 10, 12), centres=((2, 3, 4),), radius=0)
    image = sitk.GetImageFromArray(image_array)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-like: rows and columns flipped
    label = sitk.GetImageFromArray(label_array)
    label.CopyInformation(image)
    volume = canonical_volume(image, label, GREY)
    assert volume.shape == (8, 10, 12)
    assert volume.lesion_voxels.tolist() == [[2, 10 - 1 - 3, 12 - 1 - 4]]
    assert float(volume.image[2, 6, 7]) == pytest.approx(220 / 255, abs=1e-3)


# ---------------------------------------------------------------- losses and freezing


def test_max_pooled_target_shape_and_content():
    labels = torch.zeros(1, 1, 13, 20, 17)
    labels[0, 0, 12, 0, 16] = 1
    target = max_pooled_target(labels)
    assert target.shape == (1, 1, 2, 3, 3)
    assert target.sum() == 1 and target[0, 0, 1, 0, 2] == 1
    net = LowResNet().eval()
    with torch.no_grad():
        logits8 = net.stage1(torch.rand(1, 1, 13, 20, 17)).logits8
    assert logits8.shape == target.shape
    zero = torch.zeros(1, 1, 2, 3, 3)
    plain = stage1_loss(zero, labels, 1.0)
    assert float(plain) == pytest.approx(np.log(2))
    weighted = stage1_loss(zero, labels, 10.0)  # one positive cell of 18 weighted x10
    assert float(weighted) == pytest.approx(np.log(2) * (17 + 10) / 18)


def test_stage2_step_leaves_stage1_and_its_batchnorm_statistics_unchanged():
    torch.manual_seed(0)
    net = LowResNet()
    config = LowResTrainConfig(output="unused")
    optimizers = make_optimizers(net, config)
    images, labels = torch.rand(2, 1, 16, 16, 16), (torch.rand(2, 1, 16, 16, 16) > 0.9).float()
    set_stage(net, 1)
    training_step(net, optimizers[1], 1, images, labels, 10.0)  # BN statistics move in stage 1
    stage1 = {k: v.clone() for k, v in net.stage1.state_dict().items()}
    stage2 = {k: v.clone() for k, v in net.stage2.state_dict().items()}
    set_stage(net, 2)
    assert not net.stage1.training and net.stage2.training
    assert not any(p.requires_grad for p in net.stage1.parameters())
    all_params = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)  # even over both stages
    for optimizer in (optimizers[2], all_params):
        training_step(net, optimizer, 2, images, labels, 10.0)
    for k, v in net.stage1.state_dict().items():
        assert torch.equal(v, stage1[k]), k  # weights, running mean/var, num_batches_tracked
    assert any(not torch.equal(v, stage2[k]) for k, v in net.stage2.state_dict().items())


def test_lr_schedule_is_the_papers_scaled():
    config = LowResTrainConfig(output="unused", stage1_epochs=100, stage2_epochs=10)
    assert [config.lr_at(e) for e in (1, 80, 81, 100)] == [1e-2, 1e-2, 1e-3, 1e-3]
    assert [config.stage_of(e) for e in (100, 101, 110)] == [(1, 100), (2, 1), (2, 10)]
    assert [config.lr_at(e) for e in (108, 109)] == [1e-2, 1e-3]
    with pytest.raises(LiteSegError, match="at least 1 epoch"):
        LowResTrainConfig(output="unused", stage2_epochs=0).check()


def test_random_flips_mirror_image_and_label_together_in_plane_only():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 3, 4, 5)
    labels = (images > 0.5).float()
    flipped, flipped_labels = random_flips(images, labels, generator)
    assert torch.equal(flipped_labels, (flipped > 0.5).float())  # the label follows its image
    kinds = set()
    for b in range(64):
        matches = [dims for dims in ([], [2], [3], [2, 3]) if torch.equal(flipped[b], images[b].flip(dims) if dims else images[b])]
        assert len(matches) == 1  # exactly one in-plane mirroring, never along the slices
        kinds.add(tuple(matches[0]))
    assert kinds == {(), (2,), (3,), (2, 3)}
    assert torch.equal(random_flips(images, labels, torch.Generator().manual_seed(0))[0], flipped)  # seeded


# ---------------------------------------------------------------- end to end


def tiny_config(output, **options) -> LowResTrainConfig:
    base = dict(output=output, name="lowres-tiny", stage1_epochs=2, stage2_epochs=1, iterations_per_epoch=2,
                batch_size=2, patch_size=(16, 32, 32), preprocessing=GREY, val_fraction=0.0, num_threads=1)
    return LowResTrainConfig(**{**base, **options})


def test_tiny_training_writes_a_card_detection_loads_and_resume_continues(tmp_path):
    case = write_case(tmp_path / "data")
    output = tmp_path / "run"
    card_path = train_lowres(tiny_config(output), [case], "test")
    for name in ("lowres-tiny.pt", "lowres-tiny.json", "checkpoint.pt", "training_curve.png"):
        assert (output / name).is_file(), name
    data = json.loads(card_path.read_text())
    assert data["network"] == "lowres" and data["input"]["preprocessing"] == GREY.to_dict()
    assert data["output"] == {"activation": "sigmoid", "threshold": 0.5}
    assert data["labels"][0]["type"]["code"] == "52988006" and data["labels"][0]["category"]["code"] == "49755003"
    history = data["training"]["history"]
    assert [(h["epoch"], h["stage"]) for h in history] == [(1, 1), (2, 1), (3, 2)]
    assert all(h["lr"] == 1e-2 for h in history)
    assert set(data["validation"]) >= {"mean_object_dice", "mean_average_recall", "mean_dice", "cases"}

    card = find_lowres_card(card_path)
    network, preprocessing = load_detector(card)
    assert preprocessing == GREY
    image = sitk.ReadImage(str(case.image))
    result = detect_image(image, network, preprocessing)
    assert result.labelmap.GetSize() == image.GetSize()

    # an existing run is not overwritten; resume with one more stage-2 epoch continues the history
    with pytest.raises(LiteSegError, match=r"already holds .*\(resume=True to continue it\)"):
        train_lowres(tiny_config(output), [case], "test")
    with pytest.raises(LiteSegError, match="options changed"):
        train_lowres(tiny_config(output, lr=0.5), [case], "test", resume=True)
    with pytest.raises(LiteSegError, match="stage 1 epochs cannot change"):
        train_lowres(tiny_config(output, stage1_epochs=3), [case], "test", resume=True)
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and set(checkpoint) >= {"stage1", "stage2", "optimizer1", "optimizer2", "rng"}
    card_path = train_lowres(tiny_config(output, stage2_epochs=2), [case], "resumed", resume=True)
    resumed = json.loads(card_path.read_text())
    assert [h["epoch"] for h in resumed["training"]["history"]] == [1, 2, 3, 4]
    assert resumed["training"]["history"][:3] == history
    assert resumed["command"] == "resumed" and resumed["sha256"] != data["sha256"]


def test_cli_options_make_the_config(tmp_path):
    parser = argparse.ArgumentParser()
    configure_lowres_parser(parser)
    args = parser.parse_args(["--image", "a.nii.gz", "--label", "b.nii.gz", "--output", str(tmp_path),
                              "--patch-size", "16", "64", "64", "--preprocessing", "grey_0_255",
                              "--stage1-epochs", "3", "--stage2-epochs", "2", "--iterations", "5"])
    config = lowres_config(args, 0.0)
    assert config.patch_size == (16, 64, 64) and config.preprocessing == GREY
    assert (config.stage1_epochs, config.stage2_epochs, config.iterations_per_epoch, config.epochs) == (3, 2, 5, 5)
    assert config.lr == 1e-2 and config.lr_final == 1e-3 and config.batch_size == 32
    args = parser.parse_args(["--output", str(tmp_path), "--window", "-100", "200"])
    assert lowres_config(args, 0.3).preprocessing == DetectionPreprocessing("hu_window", (-100.0, 200.0))
    args = parser.parse_args(["--output", str(tmp_path), "--preprocessing", "grey_0_255", "--window", "0", "1"])
    with pytest.raises(LiteSegError, match="--window"):
        lowres_config(args, 0.3)


def test_leave_one_patient_out_trains_each_fold_and_pools_the_held_out_froc(tmp_path):
    cases = [write_case(tmp_path / "data", name) for name in ("p1", "p2")]
    output = tmp_path / "lopo"
    config = tiny_config(output, flip=True, val_fraction=0.3)
    folds = fold_configs(config, cases)
    assert [(p, c.val_patients, c.output) for p, c in folds] == [
        ("p1", ("p1",), output / "folds" / "p1"), ("p2", ("p2",), output / "folds" / "p2")]
    card_path = train_lowres_lopo(config, cases, "lopo test")
    data = json.loads(card_path.read_text())
    assert card_path == output / "lowres-tiny.json" and data["validation"]["on_training_cases"]
    assert [c["patient"] for c in data["training"]["data"]] == ["p1", "p2"]
    lopo = data["leave_one_patient_out"]
    assert [f["held_out_patient"] for f in lopo["folds"]] == ["p1", "p2"]
    assert [[c["patient"] for c in f["cases"]] for f in lopo["folds"]] == [["p1"], ["p2"]]
    for patient in ("p1", "p2"):
        fold_card = json.loads((output / "folds" / patient / "lowres-tiny.json").read_text())
        assert [c["patient"] for c in fold_card["training"]["data"]] == [{"p1": "p2", "p2": "p1"}[patient]]
    assert (lopo["patients"], lopo["scans"], lopo["objects"]) == (2, 2, 6)  # three balls per case
    assert lopo["objects_hit"] == sum(c["objects_hit"] for f in lopo["folds"] for c in f["cases"])
    rows = (output / "lowres-tiny_lopo_froc.csv").read_text().splitlines()
    assert rows[0] == "threshold,fp_per_scan,recall" and rows[1] == "inf,0.000000,0.000000"
    assert (output / "lowres-tiny_lopo_froc.png").stat().st_size > 0
    assert "mirrored in-plane" in data["training"]["recipe"]["patches"]

    # a finished run resumes without training again (same weights), an unfinished one is refused without --resume
    before = data["sha256"]
    again = json.loads(train_lowres_lopo(config, cases, "lopo test", resume=True).read_text())
    assert again["sha256"] == before

    def timeless(folds):  # detection seconds vary between runs
        return [{**f, "cases": [{k: v for k, v in c.items() if k != "seconds"} for c in f["cases"]]} for f in folds]

    assert timeless(again["leave_one_patient_out"]["folds"]) == timeless(lopo["folds"])
    with pytest.raises(LiteSegError, match=r"already holds .*\(resume=True to continue it\)"):
        train_lowres_lopo(config, cases, "lopo test")
    with pytest.raises(LiteSegError, match="at least 2 patients"):
        fold_configs(config, cases[:1])

    # the side-by-side comparison with the 3D U-Net reads this run's folds
    rows = compare_lopo(output, cases, steps=2, batch_size=1)
    assert [r.method for r in rows] == ["LowRes (two stages)", "3D U-Net, sliding window"]
    assert [r.objects for r in rows] == [6, 6] and rows[0].objects_hit == lopo["objects_hit"]
    assert rows[0].average_recall == pytest.approx(lopo["pooled_average_recall"])
    assert rows[0].parameters == 652_962 + 73_125 and rows[1].parameters == 1_400_561
    cached = output / "unet3d" / "p1.pt"
    stamp = cached.stat().st_mtime_ns
    assert compare_lopo(output, cases, steps=2, batch_size=1)[1].objects_hit == rows[1].objects_hit
    assert cached.stat().st_mtime_ns == stamp  # loaded, not trained again
    size, lowres_seconds, unet_seconds = time_large_volume(output, cases[0], repeats=2)
    assert size == (64, 64, 48) and lowres_seconds > 0 and unet_seconds > 0
    table = format_comparison(rows, (size, lowres_seconds, unet_seconds), 1)
    assert "3D U-Net, sliding window" in table and "64x64x48" in table
    with pytest.raises(LiteSegError, match="val_patients must be empty"):
        fold_configs(tiny_config(output, val_patients=("p1",)), cases)
