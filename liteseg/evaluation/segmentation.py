"""Logic of ``liteseg evaluate``: compare predicted masks with reference masks."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk

from liteseg.errors import InvalidImageError, LiteSegError
from liteseg.evaluation.metrics import check_same_grid, dice, hausdorff95
from liteseg.io.images import IMAGE_SUFFIXES, case_name, image_suffix, label_mask, read_image

CSV_HEADER = ("case", "dice", "hd95_mm", "pred_voxels", "ref_voxels")


@dataclass
class CaseMetrics:
    """Metrics of one case; hd95_mm is NaN when the prediction or the reference is empty."""

    case: str
    dice: float
    hd95_mm: float
    pred_voxels: int
    ref_voxels: int


def read_mask(path: Path, what: str) -> sitk.Image:
    """Read a scalar label image (one-line LiteSegErrors for missing, unreadable or vector files)."""
    if not path.is_file():
        raise LiteSegError(f"{what} file not found: {path}")
    image = read_image(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(f"{what} {path} has vector pixels; a label image is needed")
    return image


def _mask_image(mask: np.ndarray, like: sitk.Image) -> sitk.Image:
    """A UInt8 0/1 image of ``mask`` with the geometry of ``like``."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(like)
    return image


class MaskPair(NamedTuple):
    """A prediction and its reference on one grid, as images and as boolean arrays."""

    case: str
    pred_image: sitk.Image
    ref_image: sitk.Image
    pred: np.ndarray
    ref: np.ndarray


def read_pair(pred_path: Path, ref_path: Path, ref_labels: Sequence[int] | None = None) -> MaskPair:
    """Read a prediction and its reference and check they share a grid.

    Prediction foreground is every nonzero voxel. Reference voxels are rounded to the nearest
    integer (float 0/1 files are common) and are foreground when their value is in
    ``ref_labels`` (None: nonzero), so e.g. ``[1, 2]`` merges pancreas and tumour.
    """
    pred_path, ref_path = Path(pred_path), Path(ref_path)
    if ref_labels is not None and len(ref_labels) == 0:
        raise LiteSegError("ref_labels is empty; give at least one label or None for nonzero")
    pred_image = read_mask(pred_path, "prediction")
    ref_image = read_mask(ref_path, "reference")
    name = case_name(pred_path)
    check_same_grid(pred_image, ref_image, f"case {name}: prediction and reference")
    pred = sitk.GetArrayViewFromImage(pred_image) != 0
    ref = label_mask(sitk.GetArrayViewFromImage(ref_image), ref_labels)
    return MaskPair(name, pred_image, ref_image, pred, ref)


def evaluate_case(
    pred_path: Path, ref_path: Path, ref_labels: Sequence[int] | None = None
) -> CaseMetrics:
    """Dice and HD95 of one prediction against its reference (`read_pair`)."""
    name, pred_image, ref_image, pred, ref = read_pair(pred_path, ref_path, ref_labels)
    return CaseMetrics(
        case=name,
        dice=dice(pred, ref),
        hd95_mm=hausdorff95(_mask_image(pred, pred_image), _mask_image(ref, ref_image)),
        pred_voxels=int(np.count_nonzero(pred)),
        ref_voxels=int(np.count_nonzero(ref)),
    )


def _images_by_case(folder: Path) -> dict[str, Path]:
    """Image files directly inside ``folder``, keyed by case name."""
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path)
        if not image_suffix(path) or name.startswith(".") or not path.is_file():
            continue
        if name in cases:
            raise LiteSegError(f"two images for case {name} in {folder}: {cases[name].name}, {path.name}")
        cases[name] = path
    return cases


def paired_paths(pred: Path, ref: Path) -> list[tuple[Path, Path]]:
    """(prediction, reference) files: one file and one file, or every prediction in a folder and
    the reference of the same case name in another folder.

    In folders, cases are matched by file name without the image extension (.nii.gz, .nii,
    .nrrd, .mha, .mhd); every prediction needs a reference, extra references are ignored.
    """
    pred, ref = Path(pred), Path(ref)
    for path, what in ((pred, "prediction"), (ref, "reference")):
        if not path.exists():
            raise LiteSegError(f"{what} path not found: {path}")
    if pred.is_file() and ref.is_file():
        return [(pred, ref)]
    if not (pred.is_dir() and ref.is_dir()):
        raise LiteSegError(f"prediction and reference must both be files or both folders: {pred}, {ref}")
    preds = _images_by_case(pred)
    refs = _images_by_case(ref)
    if not preds:
        raise LiteSegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in prediction folder {pred}")
    unmatched = sorted(name for name in preds if name not in refs)
    if unmatched:
        raise LiteSegError(f"no reference in {ref} for predictions: {', '.join(unmatched)}")
    return [(preds[name], refs[name]) for name in sorted(preds)]


def evaluate_paths(
    pred: Path, ref: Path, ref_labels: Sequence[int] | None = None
) -> list[CaseMetrics]:
    """Dice and HD95 of one file against one file, or of every prediction in a folder against
    the folder of references (`paired_paths`)."""
    return [evaluate_case(p, r, ref_labels) for p, r in paired_paths(pred, ref)]


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _std(values: Sequence[float]) -> float:
    """Population standard deviation of the finite values; NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.std(finite)) if finite else float("nan")


def write_csv(rows: Sequence[CaseMetrics], path: Path) -> None:
    """Write one line per case and a final ``mean`` line (HD95 mean over cases where defined)."""
    if not rows:
        raise LiteSegError("no cases to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for row in rows:
            writer.writerow(
                [row.case, f"{row.dice:.6f}", f"{row.hd95_mm:.4f}", row.pred_voxels, row.ref_voxels]
            )
        writer.writerow(
            [
                "mean",
                f"{_mean([r.dice for r in rows]):.6f}",
                f"{_mean([r.hd95_mm for r in rows]):.4f}",
                f"{_mean([r.pred_voxels for r in rows]):.1f}",
                f"{_mean([r.ref_voxels for r in rows]):.1f}",
            ]
        )


def format_metrics_table(rows: Sequence[CaseMetrics]) -> str:
    """A text table of the cases followed by mean +- std of Dice and HD95."""
    if not rows:
        raise LiteSegError("no cases to show")
    width = max(len("case"), *(len(r.case) for r in rows))
    lines = [f"{'case':<{width}}  {'dice':>6}  {'hd95_mm':>8}  {'pred_voxels':>11}  {'ref_voxels':>10}"]
    for r in rows:
        lines.append(
            f"{r.case:<{width}}  {r.dice:>6.4f}  {r.hd95_mm:>8.2f}  {r.pred_voxels:>11d}  {r.ref_voxels:>10d}"
        )
    dices = [r.dice for r in rows]
    hds = [r.hd95_mm for r in rows]
    defined = sum(1 for v in hds if np.isfinite(v))
    lines.append(f"Dice {_mean(dices):.4f} +- {_std(dices):.4f} over {len(rows)} case(s)")
    lines.append(f"HD95 {_mean(hds):.2f} +- {_std(hds):.2f} mm over {defined} case(s) with both masks non-empty")
    return "\n".join(lines)
