"""Overlapping tiles of a volume on LowRes's 1/8-resolution grid: cores that partition it, each
grown by a halo of context wide enough that a tile's core equals the untiled pass."""

from __future__ import annotations

import itertools
import math
from typing import Sequence

from liteseg.components import Box
from liteseg.errors import LiteSegError

# Stage-1 context in x8 voxels. A logit of x8 cell i depends on input voxels 8i-68 .. 8i+75
# (4 convolutions at 1/2, 5 at 1/4 and 5 at 1/8 resolution, plus the pooling windows), so a
# tile grown by 9 cells on every side computes its central cells exactly as the untiled pass.
STAGE1_HALO = 9

# Stage-2 context in x8 voxels. A full-resolution logit depends on input voxels up to 28 away
# (4 convolutions at full resolution, 5 at 1/2, the x2 and x8 trilinear upsamplings): 3.5 cells.
STAGE2_HALO = 4


def _axis_tiles(n: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(core start, core stop, tile start, tile stop) along one axis of `n` cells."""
    return [(a, min(a + core, n), max(a - halo, 0), min(a + core + halo, n)) for a in range(0, n, core)]


def plan_tiles(grid: Sequence[int], max_voxels: int, halo: int = STAGE1_HALO,
               option: str = "max_voxels_stage1") -> list[tuple[Box, Box]]:
    """(core, tile) boxes in x8 voxels covering `grid`: the cores partition it and each tile is
    its core grown by `halo`, clipped to the grid.

    Among the per-axis core sizes, the plan computes the fewest cells in all whose largest tile
    holds at most `max_voxels` input voxels (512 per cell), then has the fewest tiles. Raises
    LiteSegError, naming the parameter `option`, when even one-cell cores (tiles of 2 * halo + 1
    cells) do not fit.
    """
    if max_voxels < 1:
        raise LiteSegError(f"{option} must be positive, got {max_voxels}")
    options = []
    for n in (int(n) for n in grid):
        layouts = [_axis_tiles(n, core, halo) for core in sorted({-(-n // k) for k in range(1, n + 1)})]
        options.append([(max(t[3] - t[2] for t in lay), sum(t[3] - t[2] for t in lay), lay) for lay in layouts])
    best_key, best = None, None
    for choice in itertools.product(*options):
        if math.prod(option[0] for option in choice) * 512 > max_voxels:
            continue
        key = (math.prod(option[1] for option in choice), math.prod(len(option[2]) for option in choice))
        if best_key is None or key < best_key:
            best_key, best = key, [option[2] for option in choice]
    if best is None:
        smallest = math.prod(min(option[0] for option in axis) for axis in options) * 512
        raise LiteSegError(f"{option} {max_voxels} is below the smallest tile of this volume ({smallest} voxels)")
    return [
        (Box(tuple(t[0] for t in axes), tuple(t[1] for t in axes)), Box(tuple(t[2] for t in axes), tuple(t[3] for t in axes)))
        for axes in itertools.product(*best)  # type: ignore[arg-type]
    ]
