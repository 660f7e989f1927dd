"""Networks: exact parameter counts from the spec, output shapes, registry and model table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.models import MODELS, build_model
from liteseg.models.attention_unet import attention_unet
from liteseg.models.lowres import LowResNet, LowResStage1, LowResStage2
from liteseg.models.monet import MoNet
from liteseg.models.params import count_parameters, format_model_table, model_table_rows
from liteseg.models.pocketnet import PocketNet
from liteseg.models.unet import unet16

# name -> (trainable, Keras total); Keras total is None where BN statistics are not counted.
EXPECTED = {
    "monet": (401_666, 403_556),
    "unet16": (1_943_761, 1_946_705),
    "unet64": (31_042_369, 31_054_145),
    "attention_unet": (31_741_573, 31_753_349),
    "unet3d": (5_470_850, None),
    "pocket_unet3d": (150_066, None),
    "resnet3d": (5_470_850, None),
    "pocket_resnet3d": (150_066, None),
    "densenet3d": (8_127_266, None),
    "pocket_densenet3d": (241_282, None),
    "unet2d": (1_940_834, None),
    "pocket_unet2d": (53_010, None),
    "resnet2d": (1_940_834, None),
    "pocket_resnet2d": (53_010, None),
    "lowres": (652_962 + 73_125, 654_308 + 73_125),
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Every registered network, built once (U-Net-64 and Attention U-Net are slow to build)."""
    torch.manual_seed(0)
    return {name: spec.build() for name, spec in MODELS.items()}


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {row["name"]: row for row in model_table_rows()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(models: dict[str, nn.Module], name: str) -> None:
    trainable, keras = EXPECTED[name]
    count = count_parameters(models[name])
    assert count.trainable == trainable
    if keras is not None:
        assert count.keras_total == keras
        assert count.bn_running == keras - trainable


def test_lowres_stage_counts() -> None:
    stage1, stage2 = count_parameters(LowResStage1()), count_parameters(LowResStage2())
    assert (stage1.trainable, stage1.bn_running, stage1.keras_total) == (652_962, 1_346, 654_308)
    assert (stage2.trainable, stage2.keras_total) == (73_125, 73_125)


def test_every_model_has_out_channels(models: dict[str, nn.Module]) -> None:
    for name, model in models.items():
        assert model.out_channels == (2 if isinstance(model, PocketNet) else 1), name


def test_monet_keras_details() -> None:
    model = MoNet()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in bns)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 5 and all(d.p == 0.2 for d in drops)  # one per RDDC block
    assert any(isinstance(m, nn.ELU) for m in model.modules())


@torch.no_grad()
@pytest.mark.parametrize("size", [(256, 256), (96, 80), (36, 44)])
def test_monet_forward_shapes(size: tuple[int, int]) -> None:
    model = MoNet().eval()
    out = model(torch.rand(1, 1, *size))
    assert out.shape == (1, 1, *size)
    assert torch.isfinite(out).all()


@torch.no_grad()
def test_unet_forward_shapes() -> None:
    x = torch.rand(2, 1, 64, 48)
    assert unet16().eval()(x).shape == (2, 1, 64, 48)
    assert attention_unet(filters=8).eval()(x).shape == (2, 1, 64, 48)


@torch.no_grad()
@pytest.mark.parametrize("block", ["unet", "resnet", "densenet"])
def test_pocketnet_forward_shapes(block: str) -> None:
    x2d = torch.rand(1, 1, 32, 48)
    assert PocketNet(block, spatial_dims=2).eval()(x2d).shape == (1, 2, 32, 48)
    x3d = torch.rand(1, 1, 5, 32, 16)  # a 5-slice slab: pooling is in-plane only
    assert PocketNet(block, spatial_dims=3).eval()(x3d).shape == (1, 2, 5, 32, 16)


@torch.no_grad()
def test_lowres_shapes_not_multiple_of_8() -> None:
    net = LowResNet().eval()
    x = torch.rand(1, 1, 40, 36, 44)
    feats = net.stage1(x)
    assert feats.x2_inp.shape == (1, 1, 20, 18, 22)
    assert feats.x2.shape == (1, 16, 20, 18, 22)
    assert feats.x4.shape == (1, 32, 10, 9, 11)
    assert feats.x8.shape == (1, 64, 5, 5, 6)
    assert feats.logits8.shape == (1, 1, 5, 5, 6)  # ceil(40/8), ceil(36/8), ceil(44/8)
    assert net(x).shape == x.shape


@torch.no_grad()
def test_lowres_stage2_on_a_box() -> None:
    net = LowResNet().eval()
    feats = net.stage1(torch.rand(1, 1, 40, 36, 44))
    box = feats.crop((1, 2, 4), (3, 5, 6))  # reaches the y and x borders of the ceil-mode grid
    assert box.x8.shape[2:] == (2, 3, 2)
    assert box.x4.shape[2:] == (4, 5, 3)  # clipped to the x4 size (10, 9, 11)
    assert box.x1.shape[2:] == (16, 20, 12)  # clipped to the input size (40, 36, 44)
    assert net.stage2(box).shape == (1, 1, 16, 20, 12)


def test_lowres_stage2_has_no_batchnorm() -> None:
    bn = nn.modules.batchnorm._BatchNorm
    assert not any(isinstance(m, bn) for m in LowResStage2().modules())
    assert any(isinstance(m, bn) for m in LowResStage1().modules())


def test_build_model_unknown_name() -> None:
    with pytest.raises(LiteSegError) as info:
        build_model("nope")
    message = str(info.value)
    assert "nope" in message
    for name in ("monet", "unet16", "pocket_unet3d", "lowres"):
        assert name in message


def test_build_model_passes_options() -> None:
    model = build_model("monet", in_channels=2, out_channels=3)
    assert model.out_channels == 3
    assert model(torch.rand(1, 2, 16, 16)).shape == (1, 3, 16, 16)


def test_model_table(rows: dict[str, dict]) -> None:
    assert set(rows) == set(MODELS)
    monet = rows["monet"]
    assert monet["keras_total"] == 403_556 and monet["paper"] == "403,556"
    assert 1.5 < monet["state_dict_mb"] < 1.8  # paper: 1.8 MB (Keras h5)
    assert "not reproducible" in rows["pocket_unet2d"]["note"]
    assert rows["pocket_unet2d"]["paper"] == "36K"
    text = format_model_table(list(rows.values()))
    assert "403,556" in text and "31,054,145" in text
    assert len(text.splitlines()) == len(rows) + 2


def test_lowres_stage2_keeps_channels_last_activations_through_its_concatenations():
    """A channels-last copy (as `liteseg detect` runs it) must not fall back to channels-first
    activations after concatenating the one-channel input (each convolution would convert them)."""
    network = LowResNet().eval().to(memory_format=torch.channels_last_3d)
    layouts = []
    for block in (network.stage2.refine2, network.stage2.refine1):
        block.register_forward_pre_hook(lambda module, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    volume = torch.rand(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = network(volume)
        reference = LowResNet().eval()
        reference.load_state_dict(network.state_dict())
        torch.testing.assert_close(logits, reference(volume), rtol=1e-4, atol=1e-4)
    assert layouts == [True, True]
