"""Training of the 3D U-Net baseline (`models.unet3d`) on the LowRes patch sampler with soft Dice
plus binary cross-entropy and Adam: a benchmark baseline, not a shipped model (no checkpoints, no
model card)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from liteseg.errors import LiteSegError
from liteseg.models.pocketnet import PocketNet
from liteseg.models.unet3d import unet3d
from liteseg.training.losses import dice_loss
from liteseg.training.patches import PatchVolume, random_flips, sample_batch


def unet3d_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Soft Dice (over the batch) plus binary cross-entropy."""
    return dice_loss(logits, labels) + F.binary_cross_entropy_with_logits(logits, labels)


def train_unet3d(volumes: Sequence[PatchVolume], steps: int, batch_size: int, patch_size: Sequence[int],
                 seed: int = 0, lr: float = 1e-3, flip: bool = True,
                 progress: Optional[Callable[[int, float], None]] = None) -> PocketNet:
    """The baseline trained for `steps` batches of lesion-centred-with-probability-0.5 patches
    with Adam (`lr`, then lr/10 for the last fifth); `progress(step, loss)`. Adam rather than
    LowRes's SGD: with SGD at 1e-2 the loss did not fall within a few hundred batches."""
    if steps < 1 or batch_size < 1:
        raise LiteSegError(f"steps and batch size must be at least 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = unet3d().train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr if step <= round(0.8 * steps) else lr / 10
        images, labels, _ = sample_batch(volumes, batch_size, patch_size, generator)
        if flip:
            images, labels = random_flips(images, labels, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = unet3d_loss(network(images), labels)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, float(loss.item()))
    return network.eval()
