"""2D U-Net baseline of the MoNet paper: 4 poolings, f * 2**i filters per level."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

DEPTH = 4


class UNetBlock(nn.Sequential):
    """Conv3x3 (bias) -> ReLU -> BN -> [SpatialDropout] -> Conv3x3 -> ReLU -> BN."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers += [
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01),
        ]
        super().__init__(*layers)


class PlainSkip(nn.Module):
    """Passes the skip connection through unchanged (the plain U-Net's "gate")."""

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return skip


class UNet2d(nn.Module):
    """U-Net with ``DEPTH`` poolings; H and W must be multiples of 16. Returns logits.

    Spatial dropout only in the encoder and bottleneck blocks. ``gate(channels)`` builds the
    module applied as ``gate(skip, up)`` to each skip before the concatenation [up, skip].
    """

    def __init__(
        self,
        filters: int = 64,
        in_channels: int = 1,
        out_channels: int = 1,
        dropout: float = 0.3,
        gate: Callable[[int], nn.Module] = lambda channels: PlainSkip(),
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        widths = [filters * 2**i for i in range(DEPTH + 1)]
        self.encoders = nn.ModuleList()
        prev = in_channels
        for w in widths[:-1]:
            self.encoders.append(UNetBlock(prev, w, dropout))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = UNetBlock(widths[-2], widths[-1], dropout)
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(2 * w, w, 2, stride=2))
            self.gates.append(gate(w))
            self.decoders.append(UNetBlock(2 * w, w))
        self.head = nn.Conv2d(filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, gate, dec, skip in zip(self.ups, self.gates, self.decoders, reversed(skips)):
            x = up(x)
            x = dec(torch.cat([x, gate(skip, x)], dim=1))
        return self.head(x)


def unet16(**kwargs) -> UNet2d:
    """U-Net-16: 1,943,761 trainable, 1,946,705 Keras total."""
    return UNet2d(filters=16, **kwargs)


def unet64(**kwargs) -> UNet2d:
    """U-Net-64: 31,042,369 trainable, 31,054,145 Keras total."""
    return UNet2d(filters=64, **kwargs)
