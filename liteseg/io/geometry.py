"""Orientation of image arrays: find the axial axis from the direction matrix, never assume it.

A SimpleITK image's array is indexed (k, j, i) = (z, y, x) of its *index* axes, which may point
anywhere in the patient. `SliceOrientation` views such an array in a canonical order that only
permutes and flips axes (no interpolation, so it is exactly invertible):

- canonical axis 0 runs inferior -> superior (the axial slice index),
- canonical axis 1 runs anterior -> posterior (image rows),
- canonical axis 2 runs right -> left (image columns),

i.e. the usual radiological display of an axial slice (patient's right on the left of the screen).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from liteseg.errors import InvalidImageError

# Canonical axis c follows LPS physical axis 2 - c: S for slices, P for rows, L for columns.
_PHYSICAL_AXIS_OF_CANONICAL = (2, 1, 0)


@dataclass(frozen=True)
class SliceOrientation:
    """Axis permutation and flips from an image array (z, y, x) to canonical (S, P, L) order."""

    permutation: tuple[int, int, int]  # canonical axis c is array axis permutation[c]
    flip: tuple[bool, bool, bool]  # canonical axis c is reversed after the transpose

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of `array` (z, y, x order) in canonical (S, P, L) order."""
        view = array.transpose(self.permutation)
        return np.flip(view, axis=self._flipped_axes()) if any(self.flip) else view

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of a canonical-order array in the image's own (z, y, x) order."""
        view = np.flip(array, axis=self._flipped_axes()) if any(self.flip) else array
        return view.transpose(np.argsort(self.permutation))

    def canonical_shape(self, array_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Shape of the canonical view of an array of `array_shape` (z, y, x)."""
        return tuple(int(array_shape[a]) for a in self.permutation)  # type: ignore[return-value]

    def canonical_spacing(self, image: sitk.Image) -> tuple[float, float, float]:
        """Voxel spacing in mm along the canonical (S, P, L) axes."""
        array_spacing = tuple(reversed(image.GetSpacing()))
        return tuple(float(array_spacing[a]) for a in self.permutation)  # type: ignore[return-value]

    def paste_slices(self, image: sitk.Image, first: int, block: np.ndarray) -> None:
        """Write canonical slices `first`, `first + 1`, ... (`block`: slices, rows, cols, of the
        image's pixel type) into `image` in place, so that a result volume is filled slab by
        slab without a whole-volume array beside it."""
        axis = self.permutation[0]  # the array axis of the slices
        n_slices = sitk.GetArrayViewFromImage(image).shape[axis]
        start = n_slices - first - len(block) if self.flip[0] else first
        image_block = sitk.GetImageFromArray(np.ascontiguousarray(self.from_canonical(block)))
        index = [slice(None)] * 3
        index[2 - axis] = slice(start, start + len(block))  # SimpleITK indexes (x, y, z)
        image[tuple(index)] = image_block

    def _flipped_axes(self) -> tuple[int, ...]:
        return tuple(c for c, f in enumerate(self.flip) if f)


def slice_orientation(image: sitk.Image) -> SliceOrientation:
    """Find which array axis is axial (and which are rows and columns) from the direction matrix.

    The index axes are matched to the physical L, P, S axes by the assignment that maximises the
    summed absolute cosines, so oblique acquisitions go to their closest orthogonal view.
    """
    if image.GetDimension() != 3:
        raise InvalidImageError(f"expected a 3D image, got {image.GetDimension()}D")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)  # column i = index axis i
    best = max(
        itertools.permutations(range(3)),
        key=lambda index_of_physical: sum(abs(direction[p, index_of_physical[p]]) for p in range(3)),
    )
    permutation = []
    flip = []
    for physical in _PHYSICAL_AXIS_OF_CANONICAL:
        index_axis = best[physical]
        permutation.append(2 - index_axis)  # array axes are index axes reversed
        flip.append(bool(direction[physical, index_axis] < 0))
    return SliceOrientation(tuple(permutation), tuple(flip))  # type: ignore[arg-type]
