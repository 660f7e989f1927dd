"""MoNet (Knolle et al. 2021): a shallow 2D U-Net-like network with repeated decreasingly
dilated convolutions (RDDC). 401,666 trainable parameters, 403,556 counted the Keras way."""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3  # Keras defaults: epsilon 1e-3, momentum 0.99 (= PyTorch momentum 0.01)
BN_MOMENTUM = 0.01


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class CBE(nn.Sequential):
    """Conv2d (no bias, 'same' padding) -> BatchNorm -> ELU."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1
    ) -> None:
        # kernel 3 (any dilation): padding = dilation; kernel 4 stride 2: padding 1 halves the size.
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=False),
            _bn(out_ch),
            nn.ELU(alpha=1.0),
        )


class RDDC(nn.Module):
    """Repeated decreasingly dilated convolutions (dilations 4, 3, 2, 1) with spatial dropout."""

    def __init__(self, channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.cbe4 = CBE(channels, channels, dilation=4)
        self.cbe3 = CBE(channels, channels, dilation=3)
        self.cbe2 = CBE(channels, channels, dilation=2)
        self.cbe1 = CBE(channels, channels, dilation=1)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.drop(self.cbe4(x))
        c2 = self.drop(self.cbe3(x + c1))
        c3 = self.drop(self.cbe2(c2))
        # Spec/released code: return c4 (an earlier revision returned x + c4, same count).
        return self.cbe1(c2 + c3)


class UpCBE(nn.Sequential):
    """ConvTranspose2d (4x4, stride 2, no bias) -> BatchNorm -> ELU: doubles the size."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
            _bn(channels),
            nn.ELU(alpha=1.0),
        )


class MoNet(nn.Module):
    """MoNet 2D. Input (N, C, H, W) with H and W multiples of 4; returns logits (N, out, H, W).

    The head is a 1x1 conv (no bias) -> BatchNorm; the caller applies sigmoid (or softmax).
    The paper's figure ("up-conv 2x2" halving channels) disagrees with its parameter count;
    we follow the spec (the released code), which gives 403,556.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.enc0 = nn.Sequential(CBE(in_channels, 16), RDDC(16, dropout))
        self.down0 = CBE(16, 16, kernel=4, stride=2)
        self.enc1 = nn.Sequential(CBE(16, 32), RDDC(32, dropout))
        self.down1 = CBE(32, 32, kernel=4, stride=2)
        self.bottleneck = nn.Sequential(CBE(32, 64), RDDC(64, dropout))
        self.up1 = UpCBE(64)
        self.dec1 = nn.Sequential(CBE(96, 32), RDDC(32, dropout))
        self.up0 = UpCBE(32)
        self.dec0 = nn.Sequential(CBE(48, 16), RDDC(16, dropout))
        self.head = nn.Sequential(nn.Conv2d(16, out_channels, 1, bias=False), _bn(out_channels))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # Keras he_uniform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip0 = self.enc0(x)
        skip1 = self.enc1(self.down0(skip0))
        h = self.bottleneck(self.down1(skip1))
        h = self.dec1(torch.cat([skip1, self.up1(h)], dim=1))
        h = self.dec0(torch.cat([skip0, self.up0(h)], dim=1))
        return self.head(h)
