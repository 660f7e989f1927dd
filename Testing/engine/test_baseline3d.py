"""The 3D U-Net sliding-window baseline: windows, averaging, detections, training steps."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from liteseg.components import Box
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.detection.sliding_window import detect_sliding_window, sliding_window_logits, window_starts
from liteseg.errors import LiteSegError
from liteseg.models.pocketnet import PocketNet
from liteseg.models.unet3d import unet3d
from liteseg.training.patches import PatchVolume
from liteseg.training.unet3d_trainer import train_unet3d

GREY = DetectionPreprocessing("grey_0_255", None)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Bright(nn.Module):
    """Logit 20 * (x - 0.5): the bright voxels are the objects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x - 0.5)


@pytest.mark.parametrize("size, window, overlap, expected", [
    (64, 64, 0.5, [0]), (40, 64, 0.5, [0]), (128, 64, 0.5, [0, 32, 64]), (100, 64, 0.5, [0, 18, 36]),
    (512, 64, 0.5, list(range(0, 449, 32))), (96, 32, 0.0, [0, 32, 64]),
])
def test_window_starts_cover_with_the_overlap(size, window, overlap, expected):
    starts = window_starts(size, window, overlap)
    assert starts == expected
    assert starts[0] == 0 and min(size, starts[-1] + window) == size
    assert all(b - a <= window * (1 - overlap) for a, b in zip(starts, starts[1:]))


def test_unet3d_has_lowres_depth_and_keeps_the_size():
    network = unet3d().eval()
    assert network.out_channels == 1 and len(network.encoders) == 3
    assert sum(p.numel() for p in network.parameters()) == sum(
        p.numel() for p in PocketNet("unet", 3, False, out_channels=1, depth=3, scale=(2, 2, 2)).parameters())
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 8, 16, 24)).shape == (1, 1, 8, 16, 24)


def test_sliding_window_equals_one_pass_for_a_pointwise_network_and_averages_overlaps():
    volume = np.random.default_rng(0).random((16, 48, 40), dtype=np.float32)
    np.testing.assert_allclose(sliding_window_logits(Bright(), volume, (8, 16, 16)), 20 * (volume - 0.5), rtol=1e-5, atol=1e-5)

    class Position(nn.Module):  # logit = the window's own first voxel: overlaps show the averaging
        def forward(self, x):
            return x[..., :1, :1, :1].expand_as(x)

    ramp = np.zeros((8, 8, 24), np.float32)
    ramp[..., :] = np.arange(24, dtype=np.float32)
    logits = sliding_window_logits(Position(), ramp, (8, 8, 16), overlap=0.5)  # window starts 0 and 8
    np.testing.assert_allclose(logits[0, 0], [0] * 8 + [4] * 8 + [8] * 8)
    with pytest.raises(LiteSegError, match="multiples of 8"):
        sliding_window_logits(Bright(), volume, (8, 12, 16))


def test_detect_sliding_window_finds_each_object_on_the_input_grid():
    array = np.zeros((16, 40, 46), np.uint8)
    array[2:6, 5:12, 30:41] = 255
    array[9:14, 20:30, 4:9] = 200
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.7, 2.0))
    image.SetOrigin((10.0, -5.0, 3.0))
    result = detect_sliding_window(image, Bright(), GREY, window=(8, 16, 16))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap), array > 0)
    assert result.labelmap.GetSpacing() == image.GetSpacing() and result.labelmap.GetOrigin() == image.GetOrigin()
    assert {d.box for d in result.detections} == {Box((2, 5, 30), (6, 12, 41)), Box((9, 20, 4), (14, 30, 9))}
    for d in result.detections:
        assert d.mask.all() and d.volume_ml == pytest.approx(d.mask.size * 0.8 * 0.7 * 2.0 / 1000)
    assert {round(d.max_probability, 4) for d in result.detections} == {
        round(1 / (1 + np.exp(-20 * (v / 255 - 0.5))), 4) for v in (255, 200)}
    dark = np.full((8, 16, 16), 40, np.uint8)
    dark[4, 4, 4] = 90  # not empty, nothing above the threshold
    empty = detect_sliding_window(sitk.GetImageFromArray(dark), Bright(), GREY, (8, 16, 16))
    assert empty.detections == [] and not sitk.GetArrayFromImage(empty.labelmap).any()


def test_training_steps_lower_the_loss_on_a_bright_ball():
    z, y, x = np.indices((16, 32, 32))
    label = ((z - 8) ** 2 + (y - 16) ** 2 + (x - 16) ** 2 <= 25).astype(np.uint8)
    volume = PatchVolume.from_arrays(np.where(label == 1, 0.9, 0.1).astype(np.float32), label)
    losses = []
    network = train_unet3d([volume], steps=30, batch_size=2, patch_size=(16, 32, 32),
                           progress=lambda step, loss: losses.append(loss))
    assert len(losses) == 30 and not network.training
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    with pytest.raises(LiteSegError):
        train_unet3d([volume], steps=0, batch_size=2, patch_size=(16, 32, 32))
