"""A cheap first look at the whole volume that bounds where the organ can be.

A network runs on every k-th slice only (k slices about `step_mm` apart, the LowRes idea of a
low-resolution pass, here along the slice axis): the segmenting network itself, or a cheaper
`model` trained for the first look (e.g. the same network at 128x128). The slices and in-plane box
around each connected part of its foreground, widened by one coarse step and by `margin_px`
pixels of the segmenting model's slice grid, are the only regions the full pass then segments.
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
    """Options of the localisation pass: `step_mm` between coarse slices, `margin_px` in the
    segmenting model's slice grid around the coarse foreground box, and the `model` (a bundled
    model name or model card path) that runs the first look; None: the segmenting network."""

    step_mm: float = DEFAULT_STEP_MM
    margin_px: int = DEFAULT_MARGIN_PX
    model: Optional[str] = None

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

    def overlaps(self, other: "Region") -> bool:
        return (self.first < other.stop and other.first < self.stop and self.row0 < other.row1
                and other.row0 < self.row1 and self.col0 < other.col1 and other.col0 < self.col1)

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


def find_regions(
    coarse_masks: np.ndarray, indices: np.ndarray, n_slices: int, step: int, margin_px: int
) -> list[Region]:
    """The regions to segment from the foreground masks (k, rows, cols) of the coarse slices
    `indices`: one per connected component of the coarse foreground (the coarse slices stacked,
    so that a component goes on over consecutive coarse slices; LowRes's box per component), its
    slices widened by one step each way and its box by `margin_px`; regions that overlap are
    merged into the box holding both. Empty when no coarse slice holds foreground."""
    from liteseg.components import component_boxes  # SimpleITK: not at import, model cards are listed without it

    rows, cols = coarse_masks.shape[1:]
    regions = []
    for component in component_boxes(coarse_masks):
        (first, row0, col0), (last, row1, col1) = component.box.start, component.box.stop
        row0, row1 = _widened(row0, row1, margin_px, rows)
        col0, col1 = _widened(col0, col1, margin_px, cols)
        regions.append(Region(max(0, int(indices[first]) - step), min(n_slices, int(indices[last - 1]) + step + 1),
                              row0, row1, col0, col1))
    return _merged(regions, (rows, cols))


def _merged(regions: list[Region], grid: tuple[int, int]) -> list[Region]:
    """`regions` with every overlapping pair replaced by the box holding both, sorted by first slice."""
    regions = list(regions)
    while True:
        pair = next(((a, b) for a in range(len(regions)) for b in range(a + 1, len(regions))
                     if regions[a].overlaps(regions[b])), None)
        if pair is None:
            return sorted(regions, key=lambda r: (r.first, r.row0, r.col0))
        b, a = regions.pop(pair[1]), regions.pop(pair[0])
        row0, row1 = _widened(min(a.row0, b.row0), max(a.row1, b.row1), 0, grid[0])
        col0, col1 = _widened(min(a.col0, b.col0), max(a.col1, b.col1), 0, grid[1])
        regions.append(Region(min(a.first, b.first), max(a.stop, b.stop), row0, row1, col0, col1))


def regions_fraction(regions: list[Region], n_slices: int, slice_size: tuple[int, int]) -> float:
    """Share of the full pass's pixels that non-overlapping `regions` hold."""
    return sum(region.fraction_of(n_slices, slice_size) for region in regions)


def covered_slices(regions: list[Region]) -> int:
    """How many slices `regions` cover (a slice of several regions counted once)."""
    return sum(stop - first for first, stop in region_slices(regions))


def region_slices(regions: list[Region]) -> list[tuple[int, int]]:
    """The runs [first, stop) of consecutive slices that `regions` cover, in order."""
    runs: list[tuple[int, int]] = []
    for first, stop in sorted((r.first, r.stop) for r in regions):
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], stop))
        else:
            runs.append((first, stop))
    return runs
