"""Detection metrics: object-wise Dice, FROC curve and average recall (LowRes paper, LUNA16 style).

Everything works on numpy arrays and plain lists so that each number can be checked by hand.
Ground-truth objects are the 26-connected components of a reference mask.

Matching rule: a detection is a true positive when its voxels (its mask inside its box, or the
whole box when no mask is given) overlap at least one voxel of a ground-truth object; it then
finds every object it overlaps. A detection overlapping nothing is a false positive. Further
detections of an already found object are neither new finds nor false positives (as in
LUNA16). The FROC curve keeps the detections whose score is at least a threshold, for every
distinct score from the highest down; recall = found objects / all objects of all scans,
false positives per scan = false positives / number of scans (scans without objects count).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from liteseg.components import Box, label_components
from liteseg.errors import LiteSegError
from liteseg.evaluation.metrics import dice

FROC_CSV_COLUMNS = ("threshold", "fp_per_scan", "recall")
_RATE_TOLERANCE = 1e-9  # FP rates are ratios of counts: compare them to the grid with slack


@dataclass(frozen=True)
class ScanMatch:
    """One scan's detections (score and the ground-truth objects each overlaps) and its number
    of ground-truth objects."""

    scores: tuple[float, ...]
    hits: tuple[frozenset[int], ...]
    n_objects: int


@dataclass(frozen=True)
class FrocCurve:
    """Operating points, from no detection kept (threshold +inf) to all kept."""

    thresholds: np.ndarray
    fp_per_scan: np.ndarray
    recall: np.ndarray
    n_scans: int
    n_objects: int


def match_scan(
    gt_mask: np.ndarray,
    boxes: Sequence[Box],
    scores: Sequence[float],
    masks: Optional[Sequence[np.ndarray]] = None,
) -> ScanMatch:
    """Match one scan's detections (boxes in array index order, optional masks shaped like
    their boxes) to the 26-connected objects of `gt_mask` (nonzero = object)."""
    if len(boxes) != len(scores) or (masks is not None and len(masks) != len(boxes)):
        raise LiteSegError(f"{len(boxes)} boxes, {len(scores)} scores and {len(masks or [])} masks do not match")
    labels, count = label_components(np.asarray(gt_mask) != 0)
    hits = []
    for number, box in enumerate(boxes):
        region = labels[box.slices()]
        if masks is not None:
            mask = np.asarray(masks[number], dtype=bool)
            if mask.shape != region.shape:
                raise LiteSegError(f"detection mask shape {mask.shape} differs from its box {region.shape}")
            region = region[mask]
        hits.append(frozenset(int(v) for v in np.unique(region) if v))
    return ScanMatch(tuple(float(s) for s in scores), tuple(hits), count)


def froc_curve(scans: Sequence[ScanMatch]) -> FrocCurve:
    """FROC operating points over all scans (see the module docstring for the rule)."""
    if not scans:
        raise LiteSegError("no scans to evaluate")
    n_objects = sum(scan.n_objects for scan in scans)
    if n_objects == 0:
        raise LiteSegError("the reference masks hold no object: recall is undefined")
    entries = sorted(
        ((score, number, hit) for number, scan in enumerate(scans) for score, hit in zip(scan.scores, scan.hits)),
        key=lambda entry: -entry[0],
    )
    thresholds, fps, recalls = [np.inf], [0.0], [0.0]
    found: set[tuple[int, int]] = set()
    false_positives = 0
    for position, (score, number, hit) in enumerate(entries):
        found.update((number, label) for label in hit)
        false_positives += not hit
        if position + 1 == len(entries) or entries[position + 1][0] != score:
            thresholds.append(score)
            fps.append(false_positives / len(scans))
            recalls.append(len(found) / n_objects)
    return FrocCurve(np.array(thresholds), np.array(fps), np.array(recalls), len(scans), n_objects)


def recall_at(curve: FrocCurve, fp_rates: Sequence[float]) -> np.ndarray:
    """The highest recall reached with at most each of `fp_rates` false positives per scan."""
    index = np.searchsorted(curve.fp_per_scan, np.asarray(fp_rates, dtype=float) + _RATE_TOLERANCE, side="right")
    return curve.recall[index - 1]


def average_recall(curve: FrocCurve, max_fp: float = 5.0, step: float = 0.01) -> float:
    """Mean recall over the false-positive rates 0, step, ..., max_fp per scan (the paper's
    0..5 in steps of 0.01: 501 rates)."""
    if step <= 0 or max_fp < 0:
        raise LiteSegError(f"need step > 0 and max_fp >= 0, got step {step}, max_fp {max_fp}")
    rates = np.arange(int(round(max_fp / step)) + 1) * step
    return float(recall_at(curve, rates).mean())


def object_dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> list[float]:
    """Dice of each ground-truth object hit by the prediction, in label order.

    An object is hit when a predicted voxel overlaps it; its Dice is taken against the union
    of the predicted 26-connected components that overlap it. Objects missed are left out (they
    count in the recall); the object Dice of a data set is the mean over all its hit objects.
    """
    pred = np.asarray(pred_mask) != 0
    gt = np.asarray(gt_mask) != 0
    if pred.shape != gt.shape:
        raise LiteSegError(f"prediction shape {pred.shape} differs from reference shape {gt.shape}")
    gt_labels, gt_count = label_components(gt)
    pred_labels, _ = label_components(pred)
    values = []
    for label in range(1, gt_count + 1):
        obj = gt_labels == label
        touching = np.unique(pred_labels[obj])
        touching = touching[touching > 0]
        if touching.size:
            values.append(dice(np.isin(pred_labels, touching), obj))
    return values


def write_froc_csv(curve: FrocCurve, path: str | Path) -> Path:
    """One row per operating point: threshold (inf for none kept), FP per scan, recall."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FROC_CSV_COLUMNS)
        for threshold, fp, recall in zip(curve.thresholds, curve.fp_per_scan, curve.recall):
            writer.writerow([f"{threshold:.6f}" if np.isfinite(threshold) else "inf", f"{fp:.6f}", f"{recall:.6f}"])
    return path


def plot_froc(curve: FrocCurve, path: str | Path, max_fp: float = 5.0) -> Path:
    """A PNG of recall against false positives per scan (0..max_fp), with the average recall
    (matplotlib Agg, imported here)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = np.append(curve.fp_per_scan, max(max_fp, curve.fp_per_scan[-1]))
    recalls = np.append(curve.recall, curve.recall[-1])
    figure = Figure(figsize=(5, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step(fps, recalls, where="post")
    axes.set(
        xlim=(0, max_fp),
        ylim=(0, 1.02),
        xlabel="false positives per scan",
        ylabel="recall",
        title=f"FROC: average recall {average_recall(curve, max_fp):.3f} (0-{max_fp:g} FP/scan)\n"
        f"{curve.n_objects} objects, {curve.n_scans} scans",
    )
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    return path
