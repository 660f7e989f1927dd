"""Detection metrics on hand-checkable cases: matching, FROC, average recall, object Dice."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from liteseg.components import Box
from liteseg.errors import LiteSegError
from liteseg.evaluation.froc import (
    FROC_CSV_COLUMNS,
    ScanMatch,
    average_recall,
    froc_curve,
    match_scan,
    object_dice,
    plot_froc,
    recall_at,
    write_froc_csv,
)


def two_scans() -> list[ScanMatch]:
    """Scan A: objects 1, 2; detections 0.9 -> 1, 0.8 FP, 0.6 -> 2, 0.5 -> 1 again.
    Scan B: object 1; detections 0.7 FP, 0.4 -> 1."""
    a = ScanMatch((0.9, 0.8, 0.6, 0.5), (frozenset({1}), frozenset(), frozenset({2}), frozenset({1})), 2)
    b = ScanMatch((0.7, 0.4), (frozenset(), frozenset({1})), 1)
    return [a, b]


def test_froc_curve_of_two_scans():
    curve = froc_curve(two_scans())
    assert curve.thresholds.tolist() == [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert curve.fp_per_scan.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]  # the repeat at 0.5 is no FP
    assert curve.recall.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert (curve.n_scans, curve.n_objects) == (2, 3)
    assert recall_at(curve, [0, 0.49, 0.5, 0.99, 1.0, 5.0]).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 1, 1])
    # Rates 0.00..0.99 (100 of them) reach 1/3, rates 1.00..5.00 (401) reach 1.
    assert average_recall(curve) == pytest.approx((100 / 3 + 401) / 501)
    assert average_recall(curve, max_fp=0.5, step=0.25) == pytest.approx(1 / 3)


def test_equal_scores_form_one_operating_point_and_empty_scans_count():
    scans = [
        ScanMatch((0.5, 0.5), (frozenset({1}), frozenset()), 1),
        ScanMatch((), (), 0),
        ScanMatch((), (), 1),
        ScanMatch((0.3,), (frozenset(),), 0),
    ]
    curve = froc_curve(scans)
    assert curve.thresholds.tolist() == [np.inf, 0.5, 0.3]
    assert curve.fp_per_scan.tolist() == [0.0, 0.25, 0.5]
    assert curve.recall.tolist() == [0.0, 0.5, 0.5]
    assert average_recall(curve) == pytest.approx((501 - 25) * 0.5 / 501)  # rates below 0.25 find nothing


def test_froc_needs_objects():
    with pytest.raises(LiteSegError, match="no object"):
        froc_curve([ScanMatch((0.9,), (frozenset(),), 0)])
    with pytest.raises(LiteSegError, match="no scans"):
        froc_curve([])


def test_match_scan_by_mask_and_by_box():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[1:3, 1:3, 1:3] = 1  # object 1
    gt[6:9, 6:9, 6:9] = 1  # object 2
    gt[9, 1, 1] = 1  # object 3 (labels follow raster order, k slowest): a single voxel
    box_a = Box((0, 0, 0), (5, 5, 5))  # holds object 1 only
    box_b = Box((4, 4, 4), (7, 7, 7))  # touches object 2 at its corner (6, 6, 6)
    box_c = Box((5, 0, 0), (10, 10, 10))  # spans objects 2 and 3
    mask_b = np.zeros((3, 3, 3), bool)
    mask_b[0, 0, 0] = True  # only (4, 4, 4): misses object 2
    by_box = match_scan(gt, [box_a, box_b, box_c], [0.9, 0.8, 0.7])
    assert by_box.hits == (frozenset({1}), frozenset({2}), frozenset({2, 3}))
    assert by_box.n_objects == 3
    by_mask = match_scan(gt, [box_a, box_b], [0.9, 0.8], [np.ones((5, 5, 5), bool), mask_b])
    assert by_mask.hits == (frozenset({1}), frozenset())
    with pytest.raises(LiteSegError, match="differs from its box"):
        match_scan(gt, [box_a], [0.9], [mask_b])
    with pytest.raises(LiteSegError, match="do not match"):
        match_scan(gt, [box_a], [0.9, 0.8])


def test_gt_objects_are_26_connected():
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0, 0, 0] = gt[1, 1, 1] = 1  # corner neighbours: one object
    assert match_scan(gt, [], []).n_objects == 1


def test_object_dice_over_hit_objects():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[0:2, 0:2, 0:2] = 1  # 8 voxels, predicted as 4 of them + 4 outside
    gt[8:10, 8:10, 8:10] = 1  # missed
    pred = np.zeros_like(gt)
    pred[0:2, 0:2, 1:3] = 1
    pred[5, 5, 5] = 1  # a false positive touching no object
    assert object_dice(pred, gt) == pytest.approx([2 * 4 / 16])
    assert object_dice(gt, gt) == [1.0, 1.0]
    assert object_dice(np.zeros_like(gt), gt) == []
    with pytest.raises(LiteSegError, match="shape"):
        object_dice(pred[:5], gt)


def test_object_dice_takes_all_predicted_components_touching_the_object():
    gt = np.zeros((3, 3, 10), np.uint8)
    gt[1, 1, 0:6] = 1
    pred = np.zeros_like(gt)
    pred[1, 1, 0:2] = 1
    pred[1, 1, 4:8] = 1  # second component: 2 voxels inside, 2 outside
    assert object_dice(pred, gt) == pytest.approx([2 * 4 / (6 + 6)])


def test_csv_and_plot(tmp_path):
    curve = froc_curve(two_scans())
    path = write_froc_csv(curve, tmp_path / "froc.csv")
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == FROC_CSV_COLUMNS
    assert rows[1] == ["inf", "0.000000", "0.000000"]
    assert rows[-1] == ["0.400000", "1.000000", "1.000000"]
    assert len(rows) == 1 + len(curve.thresholds)
    picture = plot_froc(curve, tmp_path / "plots" / "froc.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
