"""`liteseg bench`: CPU speed of the networks and of the whole "Segment pancreas" job, in one run.

Prints tables; nothing here is a test. Figures vary with the machine and its load: compare
ratios measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import SimpleITK as sitk
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import build_model
from .params import state_dict_megabytes

# MoNet paper: Table 2 (seconds for 150 slices of 256x256 on an 8-core 2.4 GHz i9 CPU) and
# Table 3 (serialised Keras h5 size in MB).
PAPER_FIGURES = {
    "unet64": (45.34, 118.6),
    "unet16": (7.03, 7.6),
    "attention_unet": (53.30, 121.3),
    "monet": (14.88, 1.8),
}
SLICE = (256, 256)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate (best of `repeats`), in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def flops_per_slice(network: nn.Module, size: tuple[int, int] = SLICE) -> float:
    """Floating-point operations of one forward pass on one slice (multiply-add = 2), counted by
    PyTorch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(1, 1, *size))
    return float(counter.get_total_flops())


def time_slices(network: nn.Module, n_slices: int, batch_size: int, repeats: int) -> list[float]:
    """Seconds to run `n_slices` slices in batches, `repeats` times after one warm-up batch."""
    network.eval()
    batch = torch.rand(batch_size, 1, *SLICE)
    last = torch.rand(n_slices % batch_size or batch_size, 1, *SLICE)

    def run() -> None:
        for start in range(0, n_slices, batch_size):
            network(batch if start + batch_size <= n_slices else last)

    with torch.inference_mode():
        network(batch)
        return [_timed(run) for _ in range(repeats)]


@dataclass
class NetworkRow:
    name: str
    seconds: float
    gflop_per_slice: float
    state_mb: float

    def gflops(self, n_slices: int) -> float:
        return self.gflop_per_slice * n_slices / self.seconds


def bench_networks(names: Sequence[str], n_slices: int, batch_size: int, repeats: int) -> list[NetworkRow]:
    rows = []
    for name in names:
        network = build_model(name).eval()
        seconds = statistics.median(time_slices(network, n_slices, batch_size, repeats))
        rows.append(NetworkRow(name, seconds, flops_per_slice(network) / 1e9, state_dict_megabytes(network)))
    return rows


def format_network_table(rows: Sequence[NetworkRow], n_slices: int, matmul: float) -> str:
    monet = next((r for r in rows if r.name == "monet"), rows[0])
    header = (
        f"{'network':<15} {'median s':>9} {'x MoNet':>8} {'GFLOP/slice':>12} {'GFLOP/s':>8} "
        f"{'of matmul':>9} {'state MB':>9} | {'paper s':>8} {'paper x':>8} {'paper MB':>9}"
    )
    lines = [header, "-" * len(header)]
    paper_monet = PAPER_FIGURES["monet"][0]
    for r in rows:
        paper_s, paper_mb = PAPER_FIGURES.get(r.name, (float("nan"), float("nan")))
        lines.append(
            f"{r.name:<15} {r.seconds:>9.2f} {r.seconds / monet.seconds:>8.2f} {r.gflop_per_slice:>12.2f} "
            f"{r.gflops(n_slices):>8.1f} {r.gflops(n_slices) / matmul:>9.1%} {r.state_mb:>9.1f} | "
            f"{paper_s:>8.2f} {paper_s / paper_monet:>8.2f} {paper_mb:>9.1f}"
        )
    return "\n".join(lines)


def make_abdominal_ct(path: Path, size: tuple[int, int, int] = (512, 512, 150)) -> Path:
    """The sample CT resampled (linearly) to `size` voxels over the same physical extent: a
    realistic 512x512 abdominal CT for timing the whole job."""
    from .data import SAMPLE_CT, fetch_sample

    ct = sitk.ReadImage(str(fetch_sample(SAMPLE_CT)))
    spacing = [sp * n / m for sp, n, m in zip(ct.GetSpacing(), ct.GetSize(), size)]
    resampled = sitk.Resample(ct, list(size), sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing,
                              ct.GetDirection(), -1024, sitk.sitkInt16)
    sitk.WriteImage(resampled, str(path), useCompression=True)
    return path


def _end_to_end(ct_path: str, output_path: str, threads: int, queue) -> None:
    """One whole job in a fresh process (so that its peak RSS is its own): read, segment, write."""
    from .imageio import read_image, write_image
    from .inference import load_model, segment_image

    torch.set_num_threads(threads)
    started = time.perf_counter()
    image = read_image(ct_path)
    read_seconds = time.perf_counter() - started
    network, card = load_model()
    result = segment_image(image, network, card.preprocessing, threshold=card.threshold)
    started = time.perf_counter()
    write_image(result.labelmap, output_path, overwrite=True)
    seconds = {"read": read_seconds, **result.seconds, "write": time.perf_counter() - started}
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def bench_end_to_end(ct_path: Path, threads: int) -> tuple[dict[str, float], float]:
    """Per-stage seconds and peak RSS (MB) of segmenting `ct_path` with the bundled model."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        process = context.Process(target=_end_to_end, args=(str(ct_path), str(Path(folder) / "seg.nii.gz"), threads, queue))
        process.start()
        seconds, peak_mb = queue.get()
        process.join()
    return seconds, peak_mb


def run_bench(
    names: Sequence[str] = ("unet64", "unet16", "attention_unet", "monet"),
    n_slices: int = 150,
    batch_size: int = 30,
    repeats: int = 3,
    threads: Optional[int] = None,
    end_to_end: bool = True,
    print_: Callable[[str], None] = print,
) -> None:
    """Measure and print the network table, then the end-to-end job on a 512x512x150 CT."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    matmul = matmul_gflops()
    print_(f"torch {torch.__version__}, {threads} threads; float32 matmul {matmul:.0f} GFLOP/s")
    print_(f"{n_slices} slices of 256x256, batch {batch_size}, median of {repeats} runs after a warm-up\n")
    print_(format_network_table(bench_networks(names, n_slices, batch_size, repeats), n_slices, matmul))
    if not end_to_end:
        return
    with tempfile.TemporaryDirectory() as folder:
        ct_path = make_abdominal_ct(Path(folder) / "ct_512x512x150.nii.gz")
        seconds, peak_mb = bench_end_to_end(ct_path, threads)
    stages = ", ".join(f"{stage} {value:.2f} s" for stage, value in seconds.items())
    print_("\nSegment pancreas, 512x512x150 CT (sample CT resampled), bundled MoNet, all slices:")
    print_(f"  total {sum(seconds.values()):.2f} s ({stages}); peak RSS {peak_mb:.0f} MB")


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
