"""LowRes (Zakazov et al.): a two-stage 3D network for fast CPU segmentation.

Stage 1 works at 1/2 resolution and predicts 1/8-resolution logits (used to find boxes);
stage 2 decodes stage-1 features inside a box back to full resolution. Both take and return
single-channel images (N, 1, D, H, W) and logits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Scale of each feature level relative to the x8 grid, in LowResFeatures field order.
_LEVEL_SCALE = {"x1": 8, "x2_inp": 4, "x2": 4, "x4": 2, "x8": 1, "logits8": 1}


class LowResFeatures(NamedTuple):
    """Stage-1 outputs: the input, its 2x average pool, the x2/x4/x8 features and x8 logits."""

    x1: torch.Tensor  # (N, 1, D, H, W)
    x2_inp: torch.Tensor  # (N, 1, ceil(D/2), ...)
    x2: torch.Tensor  # (N, 16, ceil(D/2), ...)
    x4: torch.Tensor  # (N, 32, ceil(D/4), ...)
    x8: torch.Tensor  # (N, 64, ceil(D/8), ...)
    logits8: torch.Tensor  # (N, 1, ceil(D/8), ...)

    def crop(self, start: tuple[int, ...], stop: tuple[int, ...]) -> LowResFeatures:
        """Crop every level to the box [start, stop) given in x8 voxels (scaled x2/x4/x8 for
        the finer levels and clipped to their sizes, which ceil-mode pooling makes uneven)."""
        cropped = []
        for name, tensor in zip(self._fields, self):
            s = _LEVEL_SCALE[name]
            index = tuple(
                slice(a * s, min(b * s, n)) for a, b, n in zip(start, stop, tensor.shape[2:])
            )
            cropped.append(tensor[(..., *index)])
        return LowResFeatures(*cropped)

    def to(self, dtype: torch.dtype) -> LowResFeatures:
        """Every level converted to `dtype` (the same tensors when they already have it)."""
        return LowResFeatures(*(tensor.to(dtype) for tensor in self))


class PreAct3d(nn.Sequential):
    """BatchNorm -> ReLU -> Conv3d ('same' padding)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, bias: bool = True) -> None:
        super().__init__(
            nn.BatchNorm3d(in_ch),
            nn.ReLU(),
            nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias),
        )


class ResBlock3d(nn.Module):
    """Two pre-activated convolutions plus identity. Without BN (stage 2) the convs get a bias."""

    def __init__(self, channels: int, kernel: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        if batch_norm:
            self.body = nn.Sequential(
                PreAct3d(channels, channels, kernel, bias=False),
                PreAct3d(channels, channels, kernel, bias=False),
            )
        else:
            pad = kernel // 2
            self.body = nn.Sequential(
                nn.ReLU(),
                nn.Conv3d(channels, channels, kernel, padding=pad),
                nn.ReLU(),
                nn.Conv3d(channels, channels, kernel, padding=pad),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _in_layout_of(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """`x` in the memory layout of `block`'s first weight. A channels-last copy of the network (as
    `liteseg detect` runs it) would otherwise get channels-first activations from the
    concatenations with the one-channel input, and every convolution of the residual blocks
    after them would convert its input (1.2x on LowRes stage 2)."""
    weight = next(block.parameters())
    if weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Trilinear upsampling to the exact spatial size of ``like`` (not a blind x2)."""
    return F.interpolate(x, size=like.shape[2:], mode="trilinear", align_corners=False)


class LowResStage1(nn.Module):
    """Low-resolution path: 652,962 trainable parameters (+1,346 BN running statistics).

    All pools use ceil mode, so any input size works; level sizes are ceil(size / 2**k).
    The stand-alone pre-activations keep their conv bias and the ResBlocks' convs have none:
    the spec does not say, and this is what reproduces its count.
    """

    out_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool3d(2, ceil_mode=True)
        self.maxpool = nn.MaxPool3d(2, ceil_mode=True)
        self.level2 = nn.Sequential(
            nn.Conv3d(1, 16, 3, padding=1, bias=False), PreAct3d(16, 16), ResBlock3d(16)
        )
        self.level4 = nn.Sequential(PreAct3d(16, 32), ResBlock3d(32), ResBlock3d(32))
        self.level8 = nn.Sequential(
            PreAct3d(32, 64), ResBlock3d(64), ResBlock3d(64), ResBlock3d(64, kernel=1)
        )
        self.head = nn.Sequential(PreAct3d(64, 1, kernel=1, bias=False), nn.BatchNorm3d(1))

    def forward(self, x: torch.Tensor) -> LowResFeatures:
        x2_inp = self.avgpool(x)
        x2 = self.level2(x2_inp)
        x4 = self.level4(self.maxpool(x2))
        x8 = self.level8(self.avgpool(x4))
        return LowResFeatures(x, x2_inp, x2, x4, x8, self.head(x8))


class LowResStage2(nn.Module):
    """Detailed path (no BatchNorm): 73,125 trainable parameters.

    Takes stage-1 features cropped to one box (``LowResFeatures.crop``) and returns the
    full-resolution logits of that box, shaped like ``features.x1``.
    """

    out_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.reduce8 = nn.Sequential(nn.ReLU(), nn.Conv3d(64, 32, 1, bias=False))
        self.reduce4 = nn.Sequential(nn.ReLU(), nn.Conv3d(32, 17, 1, bias=False))
        self.refine2 = nn.Sequential(
            ResBlock3d(17, batch_norm=False),
            ResBlock3d(17, batch_norm=False),
            nn.ReLU(),
            nn.Conv3d(17, 16, 3, padding=1, bias=False),
        )
        self.refine1 = nn.Sequential(
            ResBlock3d(17, batch_norm=False),
            ResBlock3d(17, batch_norm=False),
            ResBlock3d(17, kernel=1, batch_norm=False),
            nn.Conv3d(17, 1, 1, bias=False),
        )

    def forward(self, features: LowResFeatures) -> torch.Tensor:
        f = features
        h = _upsample_to(self.reduce8(f.x8), f.x4) + f.x4
        h = _upsample_to(self.reduce4(h), f.x2) + torch.cat([f.x2, f.x2_inp], dim=1)
        h = _upsample_to(self.refine2(_in_layout_of(h, self.refine2)), f.x1)
        return self.refine1(_in_layout_of(torch.cat([h, f.x1], dim=1), self.refine1))


class LowResNet(nn.Module):
    """Both stages; ``forward`` runs stage 2 over the whole volume and returns full-res logits."""

    out_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = LowResStage1()
        self.stage2 = LowResStage2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(x))
