"""Detection metrics of `liteseg evaluate --froc`: object Dice, FROC curve and average recall.

Each prediction is a labelmap written by `liteseg detect` with its detections CSV beside it
(`detection.default_csv_path`). A detection's voxels are the labelmap's foreground inside
its box (a neighbouring object reaching into the box counts too); matching, FROC and object
Dice are those of `froc`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from liteseg.components import Box
from liteseg.detection.results import DETECTION_CSV_COLUMNS, default_csv_path
from liteseg.errors import LiteSegError
from liteseg.evaluation.froc import FrocCurve, ScanMatch, average_recall, froc_curve, match_scan, object_dice
from liteseg.evaluation.segmentation import paired_paths, read_pair

_BOX_COLUMNS = ("box_k_start", "box_j_start", "box_i_start", "box_k_stop", "box_j_stop", "box_i_stop")


@dataclass
class DetectionCase:
    """One scan: its ground-truth objects, detections, hits, false positives and object Dice."""

    case: str
    objects: int
    detections: int
    objects_hit: int
    false_positives: int
    object_dice: Optional[float]


def read_detections_csv(path: Path) -> tuple[list[Box], list[float]]:
    """Boxes (array index order) and maximum probabilities of a `liteseg detect` CSV."""
    if not path.is_file():
        raise LiteSegError(f"detections CSV not found: {path} (written by liteseg detect beside its labelmap)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != DETECTION_CSV_COLUMNS:
            raise LiteSegError(f"{path} is not a liteseg detections CSV (columns {reader.fieldnames})")
        rows = list(reader)
    boxes = [Box(tuple(int(r[c]) for c in _BOX_COLUMNS[:3]), tuple(int(r[c]) for c in _BOX_COLUMNS[3:])) for r in rows]
    return boxes, [float(r["max_probability"]) for r in rows]


def evaluate_detections(pred: Path, ref: Path, ref_labels: Sequence[int] | None = None
                        ) -> tuple[list[DetectionCase], list[float], FrocCurve]:
    """Per-scan rows, the Dice of every hit object and the pooled FROC curve of one labelmap
    against one reference, or of a folder of them (`evaluation.paired_paths`)."""
    rows, dices, scans = [], [], []
    for pred_path, ref_path in paired_paths(pred, ref):
        name, _, _, labelmap, gt = read_pair(pred_path, ref_path, ref_labels)
        boxes, scores = read_detections_csv(default_csv_path(pred_path))
        for box in boxes:
            if any(a < 0 or b > n or a >= b for a, b, n in zip(box.start, box.stop, labelmap.shape)):
                raise LiteSegError(f"case {name}: detection box {box} lies outside the labelmap {labelmap.shape}")
        scan: ScanMatch = match_scan(gt, boxes, scores, [labelmap[b.slices()] for b in boxes])
        hit = object_dice(labelmap, gt)
        scans.append(scan)
        dices.extend(hit)
        found = set().union(*scan.hits) if scan.hits else set()
        rows.append(DetectionCase(name, scan.n_objects, len(boxes), len(found), sum(not h for h in scan.hits),
                                  float(np.mean(hit)) if hit else None))
    return rows, dices, froc_curve(scans)


def format_detection_table(rows: Sequence[DetectionCase], dices: Sequence[float], curve: FrocCurve) -> str:
    """Per-scan lines, then the pooled average recall and object Dice."""
    width = max(len("case"), *(len(r.case) for r in rows))
    lines = [f"{'case':<{width}}  objects  detections  hit  FP  object_dice"]
    for r in rows:
        dice = "-" if r.object_dice is None else f"{r.object_dice:.4f}"
        lines.append(f"{r.case:<{width}}  {r.objects:>7}  {r.detections:>10}  {r.objects_hit:>3}  {r.false_positives:>2}  {dice:>11}")
    lines.append(f"average recall (0-5 FP/scan, step 0.01) {average_recall(curve):.4f} over {curve.n_objects} object(s) "
                 f"in {curve.n_scans} scan(s)")
    lines.append("object Dice " + (f"{np.mean(dices):.4f} over {len(dices)} hit object(s)" if dices else "- (no object hit)"))
    return "\n".join(lines)
