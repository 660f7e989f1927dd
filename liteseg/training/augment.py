"""Random affine augmentation of a batch of slices (the MoNet paper's rotation, zoom and shift)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    rotation: float = 10.0,
    zoom: float = 0.25,
    shift: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (+-`rotation` degrees), zoom (factor 1 +- `zoom`) and shift (+-`shift` of the size)
    each slice of a float batch (N, C, H, W) about its centre, drawn from `generator`.

    Images are sampled bilinearly, labels with nearest neighbour (they stay 0/1); outside the
    slice both are 0.
    """
    n, _, height, width = images.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * limit

    angle = uniform(math.radians(rotation))
    scale = 1 + uniform(zoom)
    shift_x, shift_y = uniform(2 * shift), uniform(2 * shift)  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Rotation in pixel units expressed in normalised coordinates (correct for non-square slices).
    theta = torch.stack(
        [
            torch.stack([cos, -sin * height / width, shift_x], dim=1),
            torch.stack([sin * width / height, cos, shift_y], dim=1),
        ],
        dim=1,
    ).to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped_images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped_labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped_images, warped_labels
