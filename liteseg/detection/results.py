"""What detection returns and writes: detections (box, mask, centre, size, volume, probability),
the labelmap on the input grid, and the detections CSV."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from liteseg.components import Box
from liteseg.io.geometry import SliceOrientation
from liteseg.io.images import case_name

DETECTION_CSV_COLUMNS = (
    "index",
    "max_probability",
    "volume_ml",
    "centre_l_mm",
    "centre_p_mm",
    "centre_s_mm",
    "centre_r_mm",
    "centre_a_mm",
    "box_k_start",
    "box_k_stop",
    "box_j_start",
    "box_j_stop",
    "box_i_start",
    "box_i_stop",
    "size_k_mm",
    "size_j_mm",
    "size_i_mm",
)


@dataclass
class Detection:
    """One detected object, in the image's own array index order (k, j, i) = (z, y, x).

    `box` is the region stage 2 refined (the stage-1 component's box grown by the margin and
    clipped to the image, in full-resolution voxels), `mask` the object's voxels inside it (the
    final map's components in the box that touch the component's own stage-1 cells), `size_mm`
    the box's extent along the array axes (k, j, i), `centre` the centroid of the object's
    voxels in physical LPS mm, `max_probability` the final map's highest probability over them.
    """

    index: int
    box: Box
    centre: tuple[float, float, float]
    size_mm: tuple[float, float, float]
    volume_ml: float
    max_probability: float
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def centre_ras(self) -> tuple[float, float, float]:
        """The centre in RAS mm (Slicer's coordinates)."""
        x, y, z = self.centre
        return (-x, -y, z)


@dataclass
class DetectionResult:
    """A uint8 0/1 labelmap on exactly the input grid, the detections and seconds per stage."""

    labelmap: sitk.Image
    detections: list[Detection]
    seconds: dict[str, float] = field(default_factory=dict)


def _to_image_box(box: Box, orientation: SliceOrientation, canonical_shape: Sequence[int]) -> Box:
    """A canonical-order box in the image's array order (axes permuted, flipped ones mirrored)."""
    start, stop = [0, 0, 0], [0, 0, 0]
    for c, axis in enumerate(orientation.permutation):
        a, b, n = box.start[c], box.stop[c], canonical_shape[c]
        start[axis], stop[axis] = (n - b, n - a) if orientation.flip[c] else (a, b)
    return Box(tuple(start), tuple(stop))


def make_detection(index: int, image: sitk.Image, orientation: SliceOrientation, canonical_shape: Sequence[int],
                   box: Box, mask: np.ndarray, peak_logit: float) -> Detection:
    """A `Detection` of `image` from a canonical-order box, the object's voxels in it and its
    highest logit."""
    array_spacing = np.array(image.GetSpacing()[::-1])
    image_box = _to_image_box(box, orientation, canonical_shape)
    image_mask = np.ascontiguousarray(orientation.from_canonical(mask))
    centroid = np.asarray(image_box.start) + np.argwhere(image_mask).mean(axis=0)
    centre = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centroid[::-1]])
    return Detection(
        index=index,
        box=image_box,
        centre=tuple(float(v) for v in centre),  # type: ignore[arg-type]
        size_mm=tuple(float(v) for v in np.asarray(image_box.shape) * array_spacing),  # type: ignore[arg-type]
        volume_ml=int(np.count_nonzero(mask)) * float(np.prod(array_spacing)) / 1000.0,
        max_probability=0.5 * (1.0 + math.tanh(peak_logit / 2.0)),
        mask=image_mask,
    )


def labelmap_image(foreground: np.ndarray, orientation: SliceOrientation, like: sitk.Image) -> sitk.Image:
    """A uint8 0/1 image of a canonical-order mask on the grid of `like`."""
    labelmap = sitk.GetImageFromArray(np.ascontiguousarray(orientation.from_canonical(foreground), dtype=np.uint8))
    labelmap.CopyInformation(like)
    return labelmap


def write_detections_csv(detections: Sequence[Detection], path: str | Path) -> Path:
    """One row per detection (columns `DETECTION_CSV_COLUMNS`; an empty list writes the header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DETECTION_CSV_COLUMNS)
        for d in detections:
            box = [v for pair in zip(d.box.start, d.box.stop) for v in pair]
            writer.writerow(
                [
                    d.index,
                    f"{d.max_probability:.6f}",
                    f"{d.volume_ml:.6f}",
                    *(f"{v:.3f}" for v in d.centre),
                    *(f"{v:.3f}" for v in d.centre_ras[:2]),
                    *box,
                    *(f"{v:.3f}" for v in d.size_mm),
                ]
            )
    return path


def default_csv_path(output: Path) -> Path:
    """`OUTPUT` without its image extension, plus `_detections.csv`, in the same folder."""
    return output.with_name(f"{case_name(output)}_detections.csv")
