"""Registry of the segmentation networks, by CLI name. All networks return logits."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from liteseg.errors import LiteSegError
from liteseg.models.attention_unet import attention_unet
from liteseg.models.lowres import LowResNet
from liteseg.models.monet import MoNet
from liteseg.models.pocketnet import PocketNet
from liteseg.models.unet import unet16, unet64


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: how to build it and what its paper reports."""

    name: str
    build: Callable[..., nn.Module]  # called with no arguments for the defaults
    spatial_dims: int
    paper: str
    note: str = ""


# (dims, block) -> (full, pocket) parameter figures of the PocketNet paper (2 classes, depth 4,
# 16 initial filters).
_POCKET_PAPER = {
    (3, "unet"): ("5.5M", "0.150M"),
    (3, "resnet"): ("5.5M", "0.150M"),
    (3, "densenet"): ("8.1M", "0.241M"),
    (2, "unet"): ("544K", "36K"),
    (2, "resnet"): ("544K", "36K"),
    (2, "densenet"): ("626K", "42K"),
}


def _pocket_specs() -> list[ModelSpec]:
    specs = []
    for (dims, block), figures in _POCKET_PAPER.items():
        for constant_width, figure in zip((False, True), figures):
            notes = ["addition block, as the paper counts"] if block == "resnet" else []
            if dims == 2:
                notes.append(f"differs from the paper's {figure}: not reproducible")
            specs.append(
                ModelSpec(
                    name=f"{'pocket_' if constant_width else ''}{block}{dims}d",
                    build=partial(PocketNet, block, dims, constant_width),
                    spatial_dims=dims,
                    paper=figure,
                    note="; ".join(notes),
                )
            )
    return specs


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("monet", MoNet, 2, "403,556"),
        ModelSpec("unet16", unet16, 2, "1,946,705", "MoNet-paper baseline"),
        ModelSpec("unet64", unet64, 2, "31,054,145", "MoNet-paper baseline"),
        ModelSpec("attention_unet", attention_unet, 2, "31,753,349", "MoNet-paper baseline"),
        *_pocket_specs(),
        ModelSpec(
            "lowres",
            LowResNet,
            3,
            "-",
            "stage 1 652,962 (+1,346 BN stats) + stage 2 73,125",
        ),
    ]
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the registered network ``name``; ``kwargs`` go to its constructor."""
    try:
        spec = MODELS[name]
    except KeyError:
        raise LiteSegError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None
    return spec.build(**kwargs)
