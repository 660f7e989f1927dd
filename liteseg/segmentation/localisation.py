"""A cheap first look at the whole volume that bounds where the organ can be.

The network runs on every k-th slice only (k slices about `step_mm` apart, the LowRes idea of a
low-resolution pass, here along the slice axis); the slices and in-plane box that hold its
foreground, widened by one coarse step and by `margin_px` model pixels of context, are the only
region the full pass then segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

DEFAULT_STEP_MM = 20.0
DEFAULT_MARGIN_PX = 32
MULTIPLE = 16  # crops keep sizes a multiple of the 2D networks' total downsampling (MoNet 4; U-Nets, PocketNet 16)


@dataclass(frozen=True)
class Localisation:
    """Options of the localisation pass (`step_mm` between coarse slices, `margin_px` in the
    model's slice grid around the coarse foreground box)."""

    step_mm: float = DEFAULT_STEP_MM
    margin_px: int = DEFAULT_MARGIN_PX

    def step(self, slice_spacing_mm: float) -> int:
        """Coarse step in slices (at least 1) for slices `slice_spacing_mm` apart."""
        return max(1, int(round(self.step_mm / slice_spacing_mm)))


@dataclass(frozen=True)
class Region:
    """Slices [first, stop) of the canonical volume and box [row0, row1) x [col0, col1) of the
    model's slice grid that the full pass segments."""

    first: int
    stop: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def n_slices(self) -> int:
        return self.stop - self.first

    def fraction_of(self, n_slices: int, slice_size: tuple[int, int]) -> float:
        """Share of the full pass's pixels that this region holds."""
        return self.n_slices * (self.row1 - self.row0) * (self.col1 - self.col0) / (n_slices * slice_size[0] * slice_size[1])


def coarse_indices(n_slices: int, step: int) -> np.ndarray:
    """Every `step`-th slice, centred so both ends are at most step // 2 slices from a sample."""
    return np.arange((n_slices - 1) % step // 2, n_slices, step)


def _widened(low: int, high: int, margin: int, size: int) -> tuple[int, int]:
    """[low, high) widened by `margin` each side inside [0, size), grown to a multiple of MULTIPLE."""
    low, high = max(0, low - margin), min(size, high + margin)
    while (high - low) % MULTIPLE and (high < size or low > 0):
        if high < size:
            high += 1
        else:
            low -= 1
    return low, high


def find_region(
    coarse_masks: np.ndarray, indices: np.ndarray, n_slices: int, step: int, margin_px: int
) -> Optional[Region]:
    """The region to segment from the foreground masks (k, rows, cols) of the coarse slices
    `indices`; None when no coarse slice holds foreground."""
    hits = indices[coarse_masks.reshape(len(indices), -1).any(axis=1)]
    if hits.size == 0:
        return None
    union = coarse_masks.any(axis=0)
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    row0, row1 = _widened(int(rows[0]), int(rows[-1]) + 1, margin_px, union.shape[0])
    col0, col1 = _widened(int(cols[0]), int(cols[-1]) + 1, margin_px, union.shape[1])
    first, stop = max(0, int(hits[0]) - step), min(n_slices, int(hits[-1]) + step + 1)
    return Region(first, stop, row0, row1, col0, col1)
