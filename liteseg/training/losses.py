"""Training losses."""

from __future__ import annotations

import torch


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss 1 - (2 sum(p y) + smooth) / (sum p + sum y + smooth), p = sigmoid(logits),
    summed over the whole batch (as the Keras MoNet code does). Shapes must match: a two-channel
    head against a one-channel target would broadcast and never learn."""
    if logits.shape != target.shape:
        raise ValueError(f"dice_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    probability = torch.sigmoid(logits)
    target = target.to(probability.dtype)
    intersection = (probability * target).sum()
    return 1 - (2 * intersection + smooth) / (probability.sum() + target.sum() + smooth)
