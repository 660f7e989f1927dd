"""The benchmark's bookkeeping (FLOP counts, table); its timings are printed, never asserted."""

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
