"""PocketNet (Celaya et al. 2022): U-Net / ResNet / DenseNet blocks in a depth-4 U-shaped network,
with the number of feature maps kept constant (Pocket) or doubled at every level."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

BlockKind = Literal["unet", "resnet", "densenet"]


def _conv(spatial_dims: int, in_ch: int, out_ch: int, kernel: int = 3) -> nn.Module:
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return conv(in_ch, out_ch, kernel, padding=kernel // 2)


class PocketBlock(nn.Module):
    """Two 3x3(x3) convolutions, each followed by ReLU, combined as the block kind says.

    unet: conv, conv. resnet: conv, conv, add (the second output plus the first). densenet:
    conv, concat, conv, concat, 1x1 conv. The released code's ResNet block concatenates and
    applies a 1x1 conv (5,667,698 / 155,602 in 3D); we follow the paper's addition block, whose
    count the paper reports (5.5M / 0.150M).
    """

    def __init__(self, kind: BlockKind, spatial_dims: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.kind = kind
        second_in = in_ch + out_ch if kind == "densenet" else out_ch
        self.conv1 = _conv(spatial_dims, in_ch, out_ch)
        self.conv2 = _conv(spatial_dims, second_in, out_ch)
        if kind == "densenet":
            self.pointwise = _conv(spatial_dims, in_ch + 2 * out_ch, out_ch, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = torch.relu(self.conv1(x))
        if self.kind == "unet":
            return torch.relu(self.conv2(c1))
        if self.kind == "resnet":
            return c1 + torch.relu(self.conv2(c1))
        x1 = torch.cat([x, c1], dim=1)
        x2 = torch.cat([x1, torch.relu(self.conv2(x1))], dim=1)
        return torch.relu(self.pointwise(x2))


class PocketNet(nn.Module):
    """Depth-4 U-shaped network with PocketNet blocks; returns logits (N, out_channels, ...).

    2D: pools 2x2, so H and W must be multiples of 16. 3D: the paper trains on 256x256x5
    slabs, and its 3D counts (5,470,850 / 150,066) need 2x2 transposed convolutions, so pooling
    and upsampling act in-plane only: (1, 2, 2) on (D, H, W); H and W multiples of 16, any D.
    PyTorch's default initialisation is used (the paper draws weights from a standard normal).
    `scale` overrides the pooling/upsampling factor, e.g. (2, 2, 2) for an isotropic 3D U-Net.
    """

    def __init__(
        self,
        block: BlockKind = "unet",
        spatial_dims: int = 3,
        constant_width: bool = True,
        in_channels: int = 1,
        out_channels: int = 2,
        filters: int = 16,
        depth: int = 4,
        scale: int | tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        self.out_channels = out_channels
        widths = [filters if constant_width else filters * 2**i for i in range(depth + 1)]
        if scale is None:
            scale = 2 if spatial_dims == 2 else (1, 2, 2)
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.pool = pool(scale)
        self.encoders = nn.ModuleList()
        prev = in_channels
        for w in widths[:-1]:
            self.encoders.append(PocketBlock(block, spatial_dims, prev, w))
            prev = w
        self.bottleneck = PocketBlock(block, spatial_dims, widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(up(widths[level + 1], widths[level], scale, stride=scale))
            self.decoders.append(PocketBlock(block, spatial_dims, 2 * widths[level], widths[level]))
        self.head = _conv(spatial_dims, widths[0], out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
