"""Tests of liteseg.evaluation.metrics and liteseg.evaluation.segmentation, on synthetic masks and on the real data."""

import csv
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from liteseg.components import Box, component_boxes, largest_component
from liteseg.errors import LiteSegError
from liteseg.evaluation.metrics import check_same_grid, dice, hausdorff95
from liteseg.evaluation.segmentation import (
    CaseMetrics,
    evaluate_case,
    evaluate_paths,
    format_metrics_table,
    write_csv,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared data folder: $LITESEG_DATA, else <repo root>/../shared/data."""
    return Path(os.environ.get("LITESEG_DATA") or REPO_ROOT.parent / "shared" / "data")


def require_data(relative: str) -> Path:
    """Path of a data file; skip when it is missing, fail instead when $CI is set."""
    path = data_dir() / relative
    if not path.is_file():
        message = f"real data file {path} not found (set LITESEG_DATA to the data folder)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def image(array: np.ndarray, spacing: Optional[Sequence[float]] = None) -> sitk.Image:
    """A SimpleITK image of ``array`` (z, y, x order) with the given x, y, z spacing."""
    result = sitk.GetImageFromArray(array)
    if spacing is not None:
        result.SetSpacing(spacing)
    return result


def write(array: np.ndarray, path: Path, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write ``array`` as an image file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image(array, spacing), str(path))
    return path


# --- Dice ---------------------------------------------------------------------------------


def test_dice_of_known_overlap() -> None:
    pred = np.zeros((4, 5), dtype=np.uint8)
    ref = np.zeros((4, 5), dtype=np.uint8)
    pred[1, 0:5] = 1  # 5 voxels of row 1
    pred[2, 0] = 1  # 6 voxels in all
    ref[1, 1:5] = 1  # 4 voxels overlapping the prediction
    ref[3, 0:2] = 1  # 6 voxels in all
    assert dice(pred, ref) == pytest.approx(2 * 4 / (6 + 6))


def test_dice_edge_cases() -> None:
    empty = np.zeros((3, 3, 3))
    full = np.ones((3, 3, 3), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert dice(full, empty) == 0.0
    assert dice(full, full) == 1.0
    assert dice(full * 2, full) == 1.0  # any nonzero value is foreground
    with pytest.raises(LiteSegError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


# --- HD95 ---------------------------------------------------------------------------------


def shifted_planes(axis: int, shift: int, shape=(8, 9, 10)) -> tuple:
    """Two one-voxel-thick planes perpendicular to array ``axis``, ``shift`` voxels apart."""
    pred = np.zeros(shape, dtype=np.uint8)
    ref = np.zeros(shape, dtype=np.uint8)
    index = [slice(1, -1)] * 3
    index[axis] = 2
    pred[tuple(index)] = 1
    index[axis] = 2 + shift
    ref[tuple(index)] = 1
    return pred, ref


def test_hd95_of_shifted_slabs_uses_anisotropic_spacing() -> None:
    # Array axis 0 is SimpleITK's z, the third spacing value.
    pred, ref = shifted_planes(axis=0, shift=2)
    assert hausdorff95(image(pred, (1.0, 1.0, 3.0)), image(ref, (1.0, 1.0, 3.0))) == pytest.approx(6.0)
    assert hausdorff95(image(pred, (3.0, 3.0, 1.0)), image(ref, (3.0, 3.0, 1.0))) == pytest.approx(2.0)
    # Array axis 2 is SimpleITK's x, the first spacing value.
    pred, ref = shifted_planes(axis=2, shift=2)
    assert hausdorff95(image(pred, (3.0, 1.0, 1.0)), image(ref, (3.0, 1.0, 1.0))) == pytest.approx(6.0)


def test_hd95_of_thick_slabs() -> None:
    # Slabs covering whole z planes: z 2..5 against z 4..7, 3 mm apart. Half of each
    # surface is 2 planes (6 mm) from the other surface, so the 95th percentile is 6 mm.
    pred = np.zeros((10, 6, 6), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2:6] = 1
    ref[4:8] = 1
    assert hausdorff95(image(pred, (1.0, 1.0, 3.0)), image(ref, (1.0, 1.0, 3.0))) == pytest.approx(6.0)


def test_hd95_ignores_a_single_outlier_unlike_hausdorff() -> None:
    ref = np.zeros((20, 20, 20), dtype=np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    pred = ref.copy()
    pred[18, 18, 18] = 1  # one stray voxel among ~300 surface voxels
    p, r = image(pred), image(ref)
    assert hausdorff95(p, r) == 0.0
    full = sitk.HausdorffDistanceImageFilter()
    full.Execute(p, r)
    assert full.GetHausdorffDistance() == pytest.approx(math.sqrt(3 * 9**2))


def test_hd95_identical_2d_and_empty() -> None:
    mask = np.zeros((7, 9), dtype=np.uint8)
    mask[2:5, 3:8] = 1
    assert hausdorff95(image(mask, (0.7, 2.5)), image(mask, (0.7, 2.5))) == 0.0
    empty = np.zeros_like(mask)
    assert math.isnan(hausdorff95(image(mask), image(empty)))
    assert math.isnan(hausdorff95(image(empty), image(empty)))


def test_hd95_of_masks_touching_the_border() -> None:
    # The image border counts as surface, so a mask filling the image has one.
    full = np.ones((4, 1, 1), dtype=np.uint8)
    assert hausdorff95(image(full), image(full)) == 0.0
    half = full.copy()
    half[2:] = 0
    # full -> half: 0, 0, 1, 2 voxels; half -> full: 0, 0. The 95th percentile of
    # [0, 0, 1, 2] interpolates linearly: 1 + 0.85 * (2 - 1).
    assert hausdorff95(image(full), image(half)) == pytest.approx(1.85)


def test_hd95_needs_same_grid() -> None:
    mask = np.ones((3, 3, 3), dtype=np.uint8)
    with pytest.raises(LiteSegError, match="spacing"):
        hausdorff95(image(mask, (1.0, 1.0, 1.0)), image(mask, (1.0, 1.0, 2.0)))


# --- check_same_grid ------------------------------------------------------------------------


def test_check_same_grid() -> None:
    a = image(np.zeros((3, 4, 5), dtype=np.uint8), (0.8, 0.8, 3.0))
    b = image(np.zeros((3, 4, 5), dtype=np.uint8), (0.8, 0.8, 3.0 + 1e-6))
    check_same_grid(a, b, "pair")  # within tolerance
    b.SetOrigin((0.0, 10.0, 0.0))
    with pytest.raises(LiteSegError, match=r"pair: .*origin") as info:
        check_same_grid(a, b, "pair")
    assert "spacing" not in str(info.value)
    c = image(np.zeros((3, 4, 6), dtype=np.uint8), (0.8, 0.8, 3.0))
    c.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    with pytest.raises(LiteSegError, match=r"size .*direction"):
        check_same_grid(a, c, "pair")
    with pytest.raises(LiteSegError, match="dimension"):
        check_same_grid(a, image(np.zeros((4, 5), dtype=np.uint8)), "pair")


# --- evaluation -----------------------------------------------------------------------------


def cube_pair() -> tuple:
    """Prediction: 2x2x2 cube; reference: the cube plus one more 2x2 layer (Dice 16/20)."""
    pred = np.zeros((6, 6, 6), dtype=np.uint8)
    pred[1:3, 1:3, 1:3] = 1
    ref = np.zeros((6, 6, 6), dtype=np.float64)
    ref[1:4, 1:3, 1:3] = 1.0
    return pred, ref


def test_evaluate_case_with_float_reference(tmp_path: Path) -> None:
    pred, ref = cube_pair()
    ref[ref == 1.0] = 0.9999999  # float 0/1 references are rounded
    ref[5, 5, 5] = 0.2
    result = evaluate_case(
        write(pred, tmp_path / "case1.nii.gz"), write(ref, tmp_path / "ref" / "case1.nii.gz")
    )
    assert result == CaseMetrics(
        case="case1", dice=pytest.approx(2 * 8 / (8 + 12)), hd95_mm=pytest.approx(1.0),
        pred_voxels=8, ref_voxels=12,
    )


def test_evaluate_case_merges_reference_labels(tmp_path: Path) -> None:
    pred, ref = cube_pair()
    labels = ref.astype(np.uint8)
    labels[3, 1:3, 1:3] = 2  # "tumour" layer
    labels[5, 0:2, 0:2] = 3  # another structure, never foreground here
    pred_path = write(pred, tmp_path / "p.nrrd")
    ref_path = write(labels, tmp_path / "r.nrrd")
    merged = evaluate_case(pred_path, ref_path, ref_labels=[1, 2])
    assert (merged.ref_voxels, merged.dice) == (12, pytest.approx(16 / 20))
    only_one = evaluate_case(pred_path, ref_path, ref_labels=[1])
    assert (only_one.ref_voxels, only_one.dice, only_one.hd95_mm) == (8, 1.0, 0.0)
    everything = evaluate_case(pred_path, ref_path)
    assert everything.ref_voxels == 16
    with pytest.raises(LiteSegError, match="ref_labels"):
        evaluate_case(pred_path, ref_path, ref_labels=[])


def test_evaluate_case_errors(tmp_path: Path) -> None:
    pred, ref = cube_pair()
    pred_path = write(pred, tmp_path / "p.nii.gz")
    other_grid = write(ref, tmp_path / "r.nii.gz", spacing=(1.0, 1.0, 2.0))
    with pytest.raises(LiteSegError, match="different grids"):
        evaluate_case(pred_path, other_grid)
    with pytest.raises(LiteSegError, match="not found"):
        evaluate_case(pred_path, tmp_path / "missing.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image")
    with pytest.raises(LiteSegError, match="cannot read"):
        evaluate_case(pred_path, garbage)


def test_evaluate_paths_matches_folders_by_case_name(tmp_path: Path) -> None:
    pred, ref = cube_pair()
    write(pred, tmp_path / "pred" / "b.nii.gz")
    write(pred, tmp_path / "pred" / "a.nrrd")
    (tmp_path / "pred" / "notes.txt").write_text("ignored")
    write(ref, tmp_path / "ref" / "a.nii.gz")  # other extension, same case
    write(pred, tmp_path / "ref" / "b.nii.gz")
    write(pred, tmp_path / "ref" / "c.nii.gz")  # reference without prediction: ignored
    rows = evaluate_paths(tmp_path / "pred", tmp_path / "ref")
    assert [(r.case, r.dice) for r in rows] == [("a", pytest.approx(0.8)), ("b", 1.0)]
    single = evaluate_paths(tmp_path / "pred" / "b.nii.gz", tmp_path / "ref" / "b.nii.gz")
    assert [r.case for r in single] == ["b"]


def test_evaluate_paths_errors(tmp_path: Path) -> None:
    pred, _ = cube_pair()
    write(pred, tmp_path / "pred" / "a.nii.gz")
    write(pred, tmp_path / "pred" / "zz.mha")
    write(pred, tmp_path / "ref" / "a.nii.gz")
    with pytest.raises(LiteSegError, match="no reference .* zz$"):
        evaluate_paths(tmp_path / "pred", tmp_path / "ref")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LiteSegError, match="no images"):
        evaluate_paths(tmp_path / "empty", tmp_path / "ref")
    with pytest.raises(LiteSegError, match="both be files or both folders"):
        evaluate_paths(tmp_path / "pred" / "a.nii.gz", tmp_path / "ref")
    with pytest.raises(LiteSegError, match="not found"):
        evaluate_paths(tmp_path / "nowhere", tmp_path / "ref")


def test_write_csv_and_table(tmp_path: Path) -> None:
    rows = [
        CaseMetrics("a", 0.8, 2.0, 8, 12),
        CaseMetrics("b", 0.6, 4.0, 10, 6),
        CaseMetrics("empty", 0.0, float("nan"), 0, 5),
    ]
    path = tmp_path / "out" / "metrics.csv"
    write_csv(rows, path)
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["case", "dice", "hd95_mm", "pred_voxels", "ref_voxels"]
    assert [line[0] for line in lines[1:]] == ["a", "b", "empty", "mean"]
    assert lines[1] == ["a", "0.800000", "2.0000", "8", "12"]
    assert lines[3][2] == "nan"
    mean = lines[4]
    assert float(mean[1]) == pytest.approx(1.4 / 3, abs=1e-6)
    assert float(mean[2]) == pytest.approx(3.0)  # over the cases where HD95 is defined
    assert (float(mean[3]), float(mean[4])) == (6.0, pytest.approx(23 / 3, abs=0.05))
    table = format_metrics_table(rows)
    assert "empty" in table and "0.8000" in table
    assert "HD95 3.00 +- 1.00 mm over 2 case(s)" in table
    assert "Dice 0.4667 +- " in table
    with pytest.raises(LiteSegError):
        write_csv([], path)


# --- real data ------------------------------------------------------------------------------


def test_real_pancreas_mask() -> None:
    path = require_data("ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz")
    mask_image = sitk.ReadImage(str(path))
    mask = sitk.GetArrayFromImage(mask_image)
    assert mask.shape == (112, 101, 122)
    assert dice(mask, mask) == 1.0
    assert hausdorff95(mask_image, mask_image) == 0.0
    result = evaluate_case(path, path)
    assert (result.dice, result.hd95_mm, result.pred_voxels, result.ref_voxels) == (1.0, 0.0, 818, 818)
    # This prediction is in two large pieces at 3 mm plus a few stray voxels.
    components = component_boxes(mask)
    assert [c.voxel_count for c in components] == [425, 1, 390, 2]
    assert components[0].box == Box((80, 59, 56), (96, 68, 69))
    assert components[2].box == Box((93, 45, 27), (103, 65, 52))
    assert len(component_boxes(mask, full_connectivity=False)) == 6
    assert int(largest_component(mask).sum()) == 425
