"""Inference backends: the fast path gives the naive path's results up to float rounding."""

import numpy as np
import pytest
import torch
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.models import build_model
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.segmentation.runtime import batch_for, fold_batchnorm, make_runner


def with_trained_statistics(network: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine terms, so folding matters."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
    return network.eval()


@pytest.mark.parametrize("name", ["monet", "unet16", "attention_unet"])
def test_fast_backend_matches_eager_up_to_rounding(name):
    torch.manual_seed(0)
    network = with_trained_statistics(build_model(name))
    batch = torch.rand(3, 1, 64, 96)
    eager = make_runner(network, "eager")(batch)
    fast = make_runner(network, "fast")(batch)
    assert fast.shape == eager.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, eager, rtol=1e-3, atol=1e-3)


def test_folding_removes_every_conv_batchnorm_pair_and_keeps_the_original():
    network = with_trained_statistics(build_model("monet"))
    folded = fold_batchnorm(network)
    batchnorms = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms == []  # MoNet: every BatchNorm follows a (transposed) convolution
    assert sum(isinstance(m, nn.BatchNorm2d) for m in network.modules()) == 30  # the original is untouched
    batch = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(batch), network(batch), rtol=1e-3, atol=1e-3)


def test_unknown_backend_and_batch_sizes():
    with pytest.raises(LiteSegError, match="unknown backend"):
        make_runner(build_model("monet"), "tensorrt")
    assert batch_for((256, 256), "fast") == 2 and batch_for((128, 128), "fast") == 8
    assert batch_for((600, 600), "fast") == 1 and batch_for((256, 256), "eager") == 16


def test_batchwise_normaliser_equals_whole_volume_normalisation():
    volume = np.random.default_rng(1).integers(-50, 900, (37, 20, 24)).astype(np.int16)
    volume[:5] = 0
    for preprocessing in (Preprocessing(), Preprocessing(modality="MR", window=None)):
        normalise = preprocessing.normalizer(volume)
        parts = np.concatenate([normalise(volume[start : start + 16]) for start in range(0, 37, 16)])
        assert parts.dtype == np.float32
        if preprocessing.modality == "MR":
            foreground = volume[volume != 0].astype(np.float64)
            expected = (volume - foreground.mean()) / foreground.std()
        else:
            expected = (np.clip(volume, -150, 200) + 150) / 350
        np.testing.assert_allclose(parts, expected, rtol=1e-5, atol=1e-5)
