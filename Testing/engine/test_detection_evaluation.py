"""`liteseg evaluate --froc`: detections CSV + labelmap against a reference, checked by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from liteseg.cli.main import main
from liteseg.components import Box
from liteseg.detection.results import Detection, write_detections_csv
from liteseg.errors import LiteSegError
from liteseg.evaluation.detection import evaluate_detections, read_detections_csv


def detection(index: int, box: Box, labelmap: np.ndarray, probability: float) -> Detection:
    return Detection(index, box, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.0, probability, labelmap[box.slices()])


def write_case(folder, name: str) -> None:
    """Reference: objects A (27 voxels) and B; prediction: A found (18 of its voxels, probability
    0.9) plus a false positive (0.4); B missed."""
    reference = np.zeros((12, 20, 20), np.uint8)
    reference[1:4, 1:4, 1:4] = 1  # A
    reference[8:10, 12:16, 12:16] = 1  # B
    labelmap = np.zeros_like(reference)
    labelmap[1:3, 1:4, 1:4] = 1  # 18 voxels inside A
    labelmap[6:8, 2:4, 14:18] = 1  # false positive
    folder.mkdir(exist_ok=True)
    for array, path in ((reference, folder / "ref"), (labelmap, folder / "pred")):
        path.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path / f"{name}.nii.gz"))
    boxes = [Box((0, 0, 0), (4, 5, 5)), Box((5, 1, 13), (9, 5, 19))]
    write_detections_csv([detection(1, boxes[0], labelmap, 0.9), detection(2, boxes[1], labelmap, 0.4)],
                         folder / "pred" / f"{name}_detections.csv")


def test_hand_checked_scan(tmp_path):
    write_case(tmp_path, "scan1")
    boxes, scores = read_detections_csv(tmp_path / "pred" / "scan1_detections.csv")
    assert boxes == [Box((0, 0, 0), (4, 5, 5)), Box((5, 1, 13), (9, 5, 19))] and scores == [0.9, 0.4]
    rows, dices, curve = evaluate_detections(tmp_path / "pred", tmp_path / "ref")
    (row,) = rows
    assert (row.case, row.objects, row.detections, row.objects_hit, row.false_positives) == ("scan1", 2, 2, 1, 1)
    assert dices == pytest.approx([2 * 18 / (18 + 27)]) and row.object_dice == pytest.approx(0.8)
    # keeping 0.9: recall 1/2 at 0 FP; keeping 0.4 too: still 1/2 at 1 FP
    np.testing.assert_allclose(curve.fp_per_scan, [0, 0, 1])
    np.testing.assert_allclose(curve.recall, [0, 0.5, 0.5])


def test_cli_writes_froc_csv_and_png(tmp_path, capsys):
    write_case(tmp_path, "scan1")
    prefix = tmp_path / "out" / "froc"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--froc", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "average recall (0-5 FP/scan, step 0.01) 0.5000 over 2 object(s) in 1 scan(s)" in out
    assert "object Dice 0.8000 over 1 hit object(s)" in out
    with (tmp_path / "out" / "froc.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["threshold"], float(r["fp_per_scan"]), float(r["recall"])) for r in rows] == [
        ("inf", 0.0, 0.0), ("0.900000", 0.0, 0.5), ("0.400000", 1.0, 0.5)]
    assert (tmp_path / "out" / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_or_foreign_csv_and_boxes_outside_are_refused(tmp_path):
    write_case(tmp_path, "scan1")
    csv_path = tmp_path / "pred" / "scan1_detections.csv"
    text = csv_path.read_text()
    csv_path.write_text(text.replace("box_k_start", "k0"))
    with pytest.raises(LiteSegError, match="not a liteseg detections CSV"):
        evaluate_detections(tmp_path / "pred", tmp_path / "ref")
    csv_path.write_text(text.replace(",0,4,0,5,0,5,", ",0,40,0,5,0,5,"))
    with pytest.raises(LiteSegError, match="outside the labelmap"):
        evaluate_detections(tmp_path / "pred", tmp_path / "ref")
    csv_path.unlink()
    with pytest.raises(LiteSegError, match="detections CSV not found"):
        evaluate_detections(tmp_path / "pred", tmp_path / "ref")
