"""Segmentation metrics: Dice overlap and the 95th-percentile Hausdorff distance in mm."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from liteseg.errors import LiteSegError

_GRID_TOLERANCE = 1e-4


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two binary masks (nonzero = foreground); 1.0 when both are empty."""
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise LiteSegError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    p = pred != 0
    r = ref != 0
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / total


def check_same_grid(a: sitk.Image, b: sitk.Image, what: str) -> None:
    """Raise LiteSegError unless ``a`` and ``b`` share size, spacing, origin and direction.

    Floating-point geometry is compared within 1e-4 (relative or absolute).
    """
    if a.GetDimension() != b.GetDimension():
        raise LiteSegError(f"{what}: dimension differs ({a.GetDimension()}D vs {b.GetDimension()}D)")
    differences = []
    if a.GetSize() != b.GetSize():
        differences.append(f"size {a.GetSize()} vs {b.GetSize()}")
    for name, get in (
        ("spacing", sitk.Image.GetSpacing),
        ("origin", sitk.Image.GetOrigin),
        ("direction", sitk.Image.GetDirection),
    ):
        x, y = get(a), get(b)
        if not np.allclose(x, y, rtol=_GRID_TOLERANCE, atol=_GRID_TOLERANCE):
            differences.append(f"{name} {tuple(round(v, 6) for v in x)} vs {tuple(round(v, 6) for v in y)}")
    if differences:
        raise LiteSegError(f"{what}: images are on different grids: " + "; ".join(differences))


def _padded_binary(image: sitk.Image) -> sitk.Image:
    """Nonzero voxels as a UInt8 0/1 image, padded by one background voxel on every side.

    The padding makes faces on the image border part of the surface, as in the usual
    surface-distance implementations.
    """
    binary = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    pad = [1] * image.GetDimension()
    return sitk.ConstantPad(binary, pad, pad, 0)


def _directed_surface_distances(source: sitk.Image, target: sitk.Image) -> np.ndarray:
    """Distances in mm from each surface voxel of ``source`` to the surface of ``target``."""
    contour = sitk.LabelContour(source, backgroundValue=0)
    distance = sitk.SignedMaurerDistanceMap(
        target, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    # Array views do not keep their image alive: both images are held in locals above.
    surface = sitk.GetArrayViewFromImage(contour) != 0
    return np.abs(sitk.GetArrayViewFromImage(distance)[surface])


def hausdorff95(pred: sitk.Image, ref: sitk.Image) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two masks (nonzero = foreground).

    Surface voxels are the foreground voxels with a face neighbour in the background; each
    direction's distances (voxel centre to nearest surface voxel centre of the other mask,
    with the image spacing) give a 95th percentile, and the larger of the two is returned.
    NaN when either mask is empty; the grids must match.
    """
    check_same_grid(pred, ref, "prediction and reference")
    p = _padded_binary(pred)
    r = _padded_binary(ref)
    if not sitk.GetArrayViewFromImage(p).any() or not sitk.GetArrayViewFromImage(r).any():
        return float("nan")
    return float(
        max(
            np.percentile(_directed_surface_distances(p, r), 95),
            np.percentile(_directed_surface_distances(r, p), 95),
        )
    )
