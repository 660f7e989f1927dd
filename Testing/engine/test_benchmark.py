"""The benchmark's bookkeeping (FLOP counts, table); its timings are printed, never asserted."""

import numpy as np
import pytest

from liteseg.benchmarks.segmentation import NetworkRow, flops_per_slice, format_network_table, time_slices
from liteseg.models import build_model


def test_flops_per_slice_match_the_spec_gmac():
    # methods.md: 4.76 GMAC (MoNet) and 3.01 GMAC (U-Net-16) per 256x256 slice; 1 MAC = 2 FLOP
    assert flops_per_slice(build_model("monet")) / 2e9 == pytest.approx(4.76, abs=0.01)
    assert flops_per_slice(build_model("unet16")) / 2e9 == pytest.approx(3.01, abs=0.01)


def test_table_puts_our_ratios_beside_the_papers():
    rows = [NetworkRow("unet64", 30.0, 96.2, 124.3), NetworkRow("monet", 10.0, 9.5, 1.7)]
    table = format_network_table(rows, n_slices=150, matmul=300.0)
    unet64 = next(line for line in table.splitlines() if line.startswith("unet64"))
    # 3.00x MoNet here, 45.34 s / 14.88 s = 3.05x in the paper; 96.2 GFLOP x 150 / 30 s = 481 GFLOP/s
    assert "3.00" in unet64 and "45.34" in unet64 and "3.05" in unet64 and "481.0" in unet64
    assert "160.3%" in unet64  # of a 300 GFLOP/s matmul rate


def test_time_slices_runs_every_batch_including_a_short_last_one():
    seen = []

    class Recorder(build_model("pocket_unet2d").__class__):
        def forward(self, x):
            seen.append(x.shape[0])
            return x

    network = Recorder()
    seconds = time_slices(network, n_slices=7, batch_size=3, repeats=2)
    assert len(seconds) == 2
    assert seen == [3] + [3, 3, 1] * 2  # warm-up batch, then two runs of 3 + 3 + 1 slices


def test_time_to_cancel_times_the_run_its_longest_report_gap_and_the_return_after_a_click():
    import threading
    import time

    from liteseg.benchmarks.cancel import time_to_cancel
    from liteseg.errors import Cancelled

    def run(progress, cancel: threading.Event, steps: int = 10) -> None:
        for step in range(1, steps + 1):
            time.sleep(0.2 if step == 5 else 0.02)  # one long step
            if cancel.is_set():
                raise Cancelled("cancelled")
            progress(step / steps, f"step {step}")

    row = time_to_cancel("toy", run, at=0.5)
    assert row.job == "toy" and 0.35 <= row.seconds < 1.0
    assert 0.19 <= row.longest_gap < 0.5  # the long step
    assert row.at == 0.5 and row.to_return is not None and 0.0 <= row.to_return <= row.longest_gap + 0.05
    ended = time_to_cancel("short", lambda progress, cancel: None, at=0.5)
    assert ended.to_return is None and ended.longest_gap == ended.seconds


def test_peer_windows_cover_the_volume_at_most_a_step_apart_and_weigh_the_centre_most():
    from liteseg.benchmarks.peer import gaussian_importance, window_steps

    assert window_steps(100, 128) == [0] and window_steps(128, 128) == [0]
    for size, patch in ((300, 128), (129, 112), (1000, 112)):
        starts = window_steps(size, patch)
        assert starts[0] == 0 and starts[-1] == size - patch
        assert max(np.diff(starts)) <= 0.8 * patch + 1 and len(starts) == len(set(starts))
    weights = gaussian_importance((9, 7, 11))
    assert weights.shape == (9, 7, 11) and float(weights.max()) == pytest.approx(10.0)
    assert float(weights[4, 3, 5]) == pytest.approx(10.0) and float(weights.min()) > 0
    assert float(weights[0, 3, 5]) < float(weights[2, 3, 5]) < float(weights[4, 3, 5])


def test_peer_sliding_window_equals_one_pass_where_one_window_covers_and_pads_small_volumes():
    import torch

    from liteseg.benchmarks import peer

    class Classes(torch.nn.Module):  # position-independent: every window sees the same per-voxel logits
        def forward(self, x):
            return torch.cat([x * k for k in torch.linspace(-1, 1, peer.CLASSES)], dim=1)

    volume = torch.linspace(-1, 1, 6 * 5 * 7).reshape(6, 5, 7)
    labels, windows = peer.sliding_window_labels(Classes(), volume, patch=(4, 4, 4))
    expected = torch.where(volume > 0, peer.CLASSES - 1, 0).numpy()
    assert windows == 8 and labels.shape == (6, 5, 7)
    np.testing.assert_array_equal(labels[volume.numpy() != 0], expected[volume.numpy() != 0])
    small, windows = peer.sliding_window_labels(Classes(), volume[:2, :3, :3], patch=(4, 4, 4))
    assert windows == 1 and small.shape == (2, 3, 3)


def test_without_dynamic_network_architectures_the_peer_says_how_to_install_it(monkeypatch):
    import sys

    from liteseg.benchmarks.peer import peer_network
    from liteseg.errors import LiteSegError

    monkeypatch.setitem(sys.modules, "dynamic_network_architectures.architectures.unet", None)
    with pytest.raises(LiteSegError, match=r"pip install --no-deps dynamic_network_architectures==0.4.4 einops"):
        peer_network()


def test_the_backend_table_shows_each_change_against_float32_and_says_when_the_rule_is_broken():
    from liteseg.benchmarks.precision import BackendRow, format_backend_table

    rows = [BackendRow("fast", patient_dice={"P1": 0.70, "P2": 0.60}, sample_dice=0.50, seconds=10.0),
            BackendRow("openvino", patient_dice={"P1": 0.701, "P2": 0.598}, sample_dice=0.503, seconds=4.0),
            BackendRow("openvino-bf16", patient_dice={"P1": 0.69, "P2": 0.60}, sample_dice=0.50, seconds=2.0),
            BackendRow("int8", skipped="not built")]
    lines = format_backend_table(rows, "a note").splitlines()
    assert lines[3].split() == ["openvino", "4.00", "0.6495", "0.0020", "0.5030", "+0.0030", "yes"]
    assert lines[4].split()[-1] == "NO" and lines[4].split()[3] == "0.0100"
    assert lines[5] == "int8           not run: not built"
    assert lines[-2:] == ["held-out patients: P1, P2", "a note"]


def test_openvino_keeps_the_sample_ct_dice_of_float32_and_missing_slices_are_said(sample_ct_path, sample_pancreas_path,
                                                                                 tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from liteseg.benchmarks.precision import backend_rows
    from liteseg.segmentation.inference import load_model

    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    rows, note = backend_rows(*load_model(), sample_ct_path, sample_pancreas_path, tmp_path / "missing.json")
    assert note.startswith("held-out patients not checked: dataset not found")
    fast, openvino = rows[0], rows[1]
    assert fast.backend == "fast" and openvino.backend == "openvino" and not openvino.skipped
    assert fast.sample_dice > 0 and abs(openvino.sample_dice - fast.sample_dice) <= 0.005


@pytest.mark.parametrize("z_direction", [1.0, -1.0])
def test_the_ct_without_target_is_the_longest_run_of_slices_far_from_the_reference(tmp_path, z_direction):
    import SimpleITK as sitk

    from liteseg.benchmarks.segmentation import without_target

    array = np.arange(40, dtype=np.int16)[:, None, None] * np.ones((1, 8, 6), np.int16)  # value = slice index
    label = np.zeros(array.shape, np.uint8)
    label[25:29, 2:5, 2:4] = 1
    paths = []
    for name, values in (("ct", array), ("ref", label)):
        image = sitk.GetImageFromArray(values)
        image.SetSpacing((1.0, 1.0, 3.0))
        image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, z_direction))
        paths.append(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    slab_path, empty_path = without_target(*paths, tmp_path)
    slab, empty = sitk.ReadImage(str(slab_path)), sitk.ReadImage(str(empty_path))
    assert slab.GetSize() == (6, 8, 16) and empty.GetSize() == slab.GetSize() and empty.GetOrigin() == slab.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(slab)[:, 0, 0], np.arange(16))  # slices 0-15: >= 30 mm from 25
    assert not sitk.GetArrayFromImage(empty).any()
    assert slab.TransformIndexToPhysicalPoint((0, 0, 0)) == sitk.ReadImage(str(paths[0])).TransformIndexToPhysicalPoint((0, 0, 0))


def test_a_fresh_process_returns_the_result_raises_the_error_and_reports_a_crash():
    import math
    import os

    from liteseg.benchmarks.fresh_process import run_in_fresh_process
    from liteseg.errors import LiteSegError

    assert run_in_fresh_process(os.getpid) != os.getpid()
    assert run_in_fresh_process(math.factorial, 10) == 3628800
    with pytest.raises(ValueError, match="math domain error"):
        run_in_fresh_process(math.sqrt, -1.0)
    with pytest.raises(LiteSegError, match=r"process of _exit failed \(exit 3\)"):
        run_in_fresh_process(os._exit, 3)


def test_the_job_bench_runs_the_whole_job_in_a_fresh_process_and_scores_it(sample_ct_path, sample_pancreas_path):
    from liteseg.benchmarks.segmentation import FIRST_LOOK_MODEL, JobSetting, bench_job

    row = bench_job(sample_ct_path, sample_pancreas_path, JobSetting("fast, localised", "fast", None, True), 1)
    assert list(row.seconds) == ["read", "preprocess", "localise", "inference", "postprocess", "write"]
    assert row.dice > 0 and 0 < row.fraction < 1 and row.peak_mb > 100 and not row.message
    looked = bench_job(sample_ct_path, sample_pancreas_path, JobSetting("128", "fast", None, True, FIRST_LOOK_MODEL), 1)
    assert list(looked.seconds) == list(row.seconds) and 0 < looked.fraction < 1 and looked.fraction != row.fraction
