"""2D Attention U-Net (64 filters), the MoNet paper's baseline: U-Net-64 with gated skips."""

from __future__ import annotations

import torch
from torch import nn

from liteseg.models.unet import UNet2d


class AttentionGate(nn.Module):
    """sigmoid(Conv1x1(ReLU(Conv1x1(skip) + Conv1x1(up)))) * skip; no BN.

    The intermediate width equals the channels of ``up`` (which here equal the skip's).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.theta_skip = nn.Conv2d(channels, channels, 1)
        self.phi_up = nn.Conv2d(channels, channels, 1)
        self.psi = nn.Conv2d(channels, 1, 1)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        attn = torch.sigmoid(self.psi(torch.relu(self.theta_skip(skip) + self.phi_up(up))))
        return skip * attn


def attention_unet(filters: int = 64, **kwargs) -> UNet2d:
    """Attention U-Net: 31,741,573 trainable, 31,753,349 Keras total with 64 filters."""
    return UNet2d(filters=filters, gate=AttentionGate, **kwargs)
