"""Connected components of binary masks and the boxes around them.

Arrays are numpy arrays in array index order (for a SimpleITK image that is z, y, x); 2D and
3D masks are supported. Labelling and box measurement are done by SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import SimpleITK as sitk

from liteseg.errors import LiteSegError

IntOrInts = Union[int, Sequence[int]]


def _per_axis(value: IntOrInts, ndim: int, what: str) -> tuple[int, ...]:
    """Expand an int or a sequence of ints to one int per axis."""
    values = (value,) * ndim if np.isscalar(value) else tuple(value)  # type: ignore[arg-type]
    if len(values) != ndim:
        raise LiteSegError(f"{what} needs 1 or {ndim} values, got {len(values)}")
    if any(int(v) != v for v in values):
        raise LiteSegError(f"{what} must be whole numbers, got {values}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of array indices: start inclusive, stop exclusive."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != len(stop):
            raise LiteSegError(f"box start {start} and stop {stop} differ in dimension")
        if any(a < 0 or a > b for a, b in zip(start, stop)):
            raise LiteSegError(f"invalid box: start {start}, stop {stop}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    def slices(self) -> tuple[slice, ...]:
        """Slices that cut the box out of an array: ``array[box.slices()]``."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of voxels along each axis."""
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def scaled(self, factor: IntOrInts, shape: Sequence[int]) -> Box:
        """Map a low-resolution box to a grid ``factor`` times finer, clipped to ``shape``."""
        ndim = len(self.start)
        factors = _per_axis(factor, ndim, "scale factor")
        if any(f < 1 for f in factors):
            raise LiteSegError(f"scale factor must be positive, got {factors}")
        limits = _per_axis(tuple(shape), ndim, "shape")
        return Box(
            tuple(min(a * f, n) for a, f, n in zip(self.start, factors, limits)),
            tuple(min(b * f, n) for b, f, n in zip(self.stop, factors, limits)),
        )


@dataclass(frozen=True)
class Component:
    """One connected component: its label, size and (margin-grown) bounding box."""

    label: int
    voxel_count: int
    box: Box


def _binary_image(mask: np.ndarray) -> sitk.Image:
    """Validate a 2D/3D mask and return it as a 0/1 UInt8 SimpleITK image."""
    array = np.asarray(mask)
    if array.ndim not in (2, 3):
        raise LiteSegError(f"mask must be 2D or 3D, got {array.ndim}D with shape {array.shape}")
    if array.size == 0:
        raise LiteSegError(f"mask has no voxels (shape {array.shape})")
    return sitk.GetImageFromArray((array != 0).astype(np.uint8))


def _connected(mask: np.ndarray, full_connectivity: bool) -> tuple[sitk.Image, int]:
    """Label the components of ``mask``; returns the SimpleITK label image and the count."""
    labeller = sitk.ConnectedComponentImageFilter()
    labeller.SetFullyConnected(full_connectivity)
    labels = labeller.Execute(_binary_image(mask))
    return labels, int(labeller.GetObjectCount())


def label_components(mask: np.ndarray, full_connectivity: bool = True) -> tuple[np.ndarray, int]:
    """Label the nonzero voxels' connected components 1..N (int32 array, N).

    Full connectivity joins voxels that touch by a face, edge or corner (26 neighbours in 3D,
    8 in 2D); otherwise only by a face (6 in 3D, 4 in 2D).
    """
    labels, count = _connected(mask, full_connectivity)
    return sitk.GetArrayFromImage(labels).astype(np.int32), count


def component_boxes(
    mask: np.ndarray, margin: IntOrInts = 0, full_connectivity: bool = True
) -> list[Component]:
    """Connected components of ``mask``, sorted by label, each with its bounding box.

    The box is the tight box of the component grown by ``margin`` voxels per side (one value
    or one per axis) and clipped to the array. An empty mask gives an empty list.
    """
    ndim = np.ndim(mask)
    labels, count = _connected(mask, full_connectivity)
    margins = _per_axis(margin, ndim, "margin")
    if any(m < 0 for m in margins):
        raise LiteSegError(f"margin must be non-negative, got {margins}")
    if count == 0:
        return []
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetComputePerimeter(False)
    stats.Execute(labels)
    shape = np.shape(mask)
    components = []
    for label in sorted(stats.GetLabels()):
        bbox = stats.GetBoundingBox(label)  # SimpleITK order: x, y, (z) starts then sizes
        start = bbox[:ndim][::-1]
        size = bbox[ndim:][::-1]
        box = Box(
            tuple(max(a - m, 0) for a, m in zip(start, margins)),
            tuple(min(a + s + m, n) for a, s, m, n in zip(start, size, margins, shape)),
        )
        components.append(Component(int(label), int(stats.GetNumberOfPixels(label)), box))
    return components


def largest_component(mask: np.ndarray, full_connectivity: bool = True) -> np.ndarray:
    """A uint8 0/1 mask keeping only the largest connected component (ties: lowest label)."""
    labels, count = label_components(mask, full_connectivity)
    if count == 0:
        return np.zeros(labels.shape, dtype=np.uint8)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return (labels == int(np.argmax(sizes))).astype(np.uint8)


def union_box(boxes: Sequence[Box]) -> Box | None:
    """The smallest box containing all ``boxes``; None when there are none."""
    if not boxes:
        return None
    ndims = {len(box.start) for box in boxes}
    if len(ndims) != 1:
        raise LiteSegError(f"cannot unite boxes of different dimensions {sorted(ndims)}")
    return Box(
        tuple(min(axis) for axis in zip(*(box.start for box in boxes))),
        tuple(max(axis) for axis in zip(*(box.stop for box in boxes))),
    )
