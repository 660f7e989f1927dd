"""`liteseg bench`: CPU speed of the networks and of the whole "Segment pancreas" job, in one run.

Tables go to a `log` callback (the command prints them); nothing here is a test. Figures vary
with the machine and its load: compare ratios measured in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from liteseg.benchmarks.cancel import cancel_rows, format_cancel_table
from liteseg.benchmarks.fresh_process import run_in_fresh_process
from liteseg.benchmarks.memory import peak_rss_mb
from liteseg.benchmarks.peer import bench_peer, format_peer_table
from liteseg.benchmarks.precision import MAX_DICE_CHANGE, backend_rows, format_backend_table
from liteseg.errors import LiteSegError
from liteseg.evaluation.slices import FAR_FROM_TARGET_MM, far_slice_mask
from liteseg.models import build_model
from liteseg.models.params import state_dict_megabytes
from liteseg.segmentation.localisation import Localisation, regions_fraction
from liteseg.segmentation.runtime import batch_for, make_runner, resolve_backend

# MoNet paper: Table 2 (seconds for 150 slices of 256x256 on an 8-core 2.4 GHz i9 CPU) and
# Table 3 (serialised Keras h5 size in MB).
PAPER_FIGURES = {
    "unet64": (45.34, 118.6),
    "unet16": (7.03, 7.6),
    "attention_unet": (53.30, 121.3),
    "monet": (14.88, 1.8),
}
SLICE = (256, 256)
SLICES_CT = "ct_sm_slices82-111.nii.gz"  # in the data folder's ct/pancreas_TS-A
SLICES_LABELS = "total_v2_pred_on_ct_sm.nii.gz"
TS_V2_PANCREAS = 7


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


def time_slices(run: Callable[[torch.Tensor], object], n_slices: int, batch_size: int, repeats: int) -> list[float]:
    """Seconds for `run` (a network or runner) to process `n_slices` slices in batches,
    `repeats` times after one warm-up batch."""
    if isinstance(run, nn.Module):
        run.eval()
    batch = torch.rand(batch_size, 1, *SLICE)
    last = torch.rand(n_slices % batch_size or batch_size, 1, *SLICE)

    def once() -> None:
        for start in range(0, n_slices, batch_size):
            run(batch if start + batch_size <= n_slices else last)

    with torch.inference_mode():
        run(batch)
        return [_timed(once) for _ in range(repeats)]


@dataclass
class NetworkRow:
    name: str
    seconds: float
    gflop_per_slice: float
    state_mb: float

    def gflops(self, n_slices: int) -> float:
        return self.gflop_per_slice * n_slices / self.seconds


def bench_networks(names: Sequence[str], n_slices: int, batch_size: int, repeats: int) -> list[NetworkRow]:
    """Eager float32 NCHW rows (the paper's setting), then MoNet on each other backend available
    here (fast, OpenVINO float32, OpenVINO bfloat16 on CPUs with native bfloat16) at its batch size."""
    rows = []
    for name in names:
        network = build_model(name).eval()
        seconds = statistics.median(time_slices(network, n_slices, batch_size, repeats))
        rows.append(NetworkRow(name, seconds, flops_per_slice(network) / 1e9, state_dict_megabytes(network)))
    if "monet" in names:
        network = build_model("monet").eval()
        for backend in ("fast", "openvino", "openvino-bf16"):
            try:
                runner = make_runner(network, backend)
            except LiteSegError:
                continue  # OpenVINO not installed, or no native bfloat16: the backend table says so
            seconds = statistics.median(time_slices(runner, n_slices, batch_for(SLICE, backend), repeats))
            rows.append(NetworkRow(f"monet {backend}", seconds, flops_per_slice(network) / 1e9, state_dict_megabytes(network)))
    return rows


def format_network_table(rows: Sequence[NetworkRow], n_slices: int, matmul: float) -> str:
    monet = next((r for r in rows if r.name == "monet"), rows[0])
    header = (
        f"{'network':<19} {'median s':>9} {'x MoNet':>8} {'GFLOP/slice':>12} {'GFLOP/s':>8} "
        f"{'of matmul':>9} {'state MB':>9} | {'paper s':>8} {'paper x':>8} {'paper MB':>9}"
    )
    lines = [header, "-" * len(header)]
    paper_monet = PAPER_FIGURES["monet"][0]
    for r in rows:
        paper_s, paper_mb = PAPER_FIGURES.get(r.name, (float("nan"), float("nan")))
        lines.append(
            f"{r.name:<19} {r.seconds:>9.2f} {r.seconds / monet.seconds:>8.2f} {r.gflop_per_slice:>12.2f} "
            f"{r.gflops(n_slices):>8.1f} {r.gflops(n_slices) / matmul:>9.1%} {r.state_mb:>9.1f} | "
            f"{paper_s:>8.2f} {paper_s / paper_monet:>8.2f} {paper_mb:>9.1f}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class JobSetting:
    """One way of running the whole "Segment pancreas" job."""

    label: str
    backend: str
    batch_size: Optional[int]
    localise: bool
    first_look: Optional[str] = None  # a bundled model that runs the localisation's first look instead of the card's


FIRST_LOOK_MODEL = "monet-pancreas-nih-128"
JOB_SETTINGS = (
    JobSetting("naive: eager fp32 NCHW, batch 16, all slices", "eager", 16, False),
    JobSetting("fast backend, all slices", "fast", None, False),
    JobSetting("fast backend + localisation", "fast", None, True),
    JobSetting("auto backend, all slices", "auto", None, False),
    JobSetting(f"auto + localisation, first look {FIRST_LOOK_MODEL}", "auto", None, True, FIRST_LOOK_MODEL),
    JobSetting("auto backend + localisation (default)", "auto", None, True),
)
MEMORY_SETTINGS = (JOB_SETTINGS[1], JOB_SETTINGS[-1])


def conversion_line() -> str:
    """What "auto" resolves to here and, for OpenVINO, the one-off cost of converting the bundled
    network into the cache (the timed jobs below read it from there)."""
    from liteseg.segmentation import openvino_runtime
    from liteseg.segmentation.inference import load_model

    backend = resolve_backend("auto")
    if not backend.startswith("openvino"):
        return f"auto backend: {backend} ({openvino_runtime.OPENVINO_MISSING})"
    network, _ = load_model()
    key = openvino_runtime.network_key(network)
    for entry in (openvino_runtime.cache_dir() / "openvino").glob(f"{key}.*"):
        entry.unlink()
    started = time.perf_counter()
    openvino_runtime.converted_model(network, key)
    return (f"auto backend: {backend}; converting the bundled network for OpenVINO took {time.perf_counter() - started:.2f} s "
            f"once (cached in {openvino_runtime.cache_dir() / 'openvino'}; later jobs read it from there)")


@dataclass
class JobRow:
    setting: JobSetting
    seconds: dict[str, float]
    peak_mb: float
    dice: float
    fraction: float  # share of the full pass's pixels segmented
    message: str = ""  # the job's message to the user ("nothing found ...")

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def job(ct_path: str, reference_path: str, setting: JobSetting, threads: int) -> JobRow:
    """One whole job (run in a fresh process, so that its peak RSS is its own): read, segment, write."""
    from liteseg.evaluation.metrics import dice
    from liteseg.io.images import read_image, write_image
    from liteseg.segmentation.inference import load_model, segment_image

    torch.set_num_threads(threads)
    started = time.perf_counter()
    image = read_image(ct_path)
    read_seconds = time.perf_counter() - started
    network, card = load_model()
    localisation = (card.localisation or Localisation()) if setting.localise else None
    if localisation is not None and setting.first_look is not None:
        localisation = replace(localisation, model=setting.first_look)
    result = segment_image(image, network, card.preprocessing, threshold=card.threshold, batch_size=setting.batch_size,
                           backend=setting.backend, localisation=localisation)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        write_image(result.labelmap, Path(folder) / "seg.nii.gz")
        seconds = {"read": read_seconds, **result.seconds, "write": time.perf_counter() - started}
    peak_mb = peak_rss_mb()
    reference = sitk.GetArrayFromImage(read_image(reference_path)) > 0
    score = dice(sitk.GetArrayViewFromImage(result.labelmap) > 0, reference)
    n_slices = len(sitk.GetArrayViewFromImage(result.labelmap))
    if result.regions:
        fraction = regions_fraction(result.regions, n_slices, card.preprocessing.slice_size)
    else:
        fraction = 0.0 if result.message else 1.0
    return JobRow(setting, seconds, peak_mb, score, fraction, result.message)


def bench_job(ct_path: Path, reference_path: Path, setting: JobSetting, threads: int) -> JobRow:
    """Per-stage seconds, peak RSS and Dice of one job with the bundled model, in a fresh process."""
    return run_in_fresh_process(job, str(ct_path), str(reference_path), setting, threads)


def format_job_table(rows: Sequence[JobRow]) -> str:
    naive = rows[0].total
    header = f"{'setting':<56} {'total s':>8} {'x naive':>8} {'peak MB':>8} {'Dice':>6} {'pixels':>7}  stages (s)"
    lines = [header, "-" * len(header)]
    for r in rows:
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in r.seconds.items())
        lines.append(f"{r.setting.label:<56} {r.total:>8.2f} {naive / r.total:>8.2f} {r.peak_mb:>8.0f} "
                     f"{r.dice:>6.3f} {r.fraction:>7.1%}  {stages}")
    return "\n".join(lines)


def format_no_target_line(no_target: JobRow, default: JobRow) -> str:
    stages = ", ".join(f"{stage} {value:.2f}" for stage, value in no_target.seconds.items())
    return (f"total {no_target.total:.2f} s ({no_target.total / default.total:.2f}x the CT with pancreas), peak "
            f"{no_target.peak_mb:.0f} MB, pixels run {no_target.fraction:.1%}; stages (s): {stages}\n"
            f"the job says: {no_target.message or 'a region was found and segmented (false positives: the CT has no pancreas)'}")


def resample_like(ct_path: Path, reference_path: Path, folder: Path, size: tuple[int, int, int]) -> tuple[Path, Path]:
    """The sample CT resampled (linearly) to `size` voxels over the same physical extent, and its
    reference mask on that grid (nearest): a realistic 512x512 abdominal CT for timing the job."""
    ct = sitk.ReadImage(str(ct_path))
    spacing = [sp * n / m for sp, n, m in zip(ct.GetSpacing(), ct.GetSize(), size)]
    resampled = sitk.Resample(ct, list(size), sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing,
                              ct.GetDirection(), -1024, sitk.sitkInt16)
    reference = sitk.Resample(sitk.ReadImage(str(reference_path)) > 0.5, resampled, sitk.Transform(), sitk.sitkNearestNeighbor)
    name = "x".join(map(str, size))
    paths = folder / f"ct_{name}.nii.gz", folder / f"pancreas_{name}.nii.gz"
    sitk.WriteImage(resampled, str(paths[0]), useCompression=True)
    sitk.WriteImage(reference, str(paths[1]), useCompression=True)
    return paths


def without_target(ct_path: Path, reference_path: Path, folder: Path) -> tuple[Path, Path]:
    """The longest run of the CT's slices that are all at least FAR_FROM_TARGET_MM from every
    reference slice (real CT without pancreas: the pelvis of the sample CT), with an empty
    reference, as files in `folder`."""
    from liteseg.io.geometry import slice_orientation

    ct, reference = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(reference_path))
    far = far_slice_mask(reference)
    best, start = (0, 0), None
    for index, flag in enumerate(list(far) + [False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            best, start = max(best, (start, index), key=lambda run: run[1] - run[0]), None
    orientation = slice_orientation(ct)
    array_axis, n_slices = orientation.permutation[0], len(far)  # the array axis of the canonical slices
    first, stop = (n_slices - best[1], n_slices - best[0]) if orientation.flip[0] else best
    size, index = list(ct.GetSize()), [0, 0, 0]
    index[2 - array_axis], size[2 - array_axis] = first, stop - first  # SimpleITK indexes (x, y, z)
    slab = sitk.RegionOfInterest(ct, size, index)
    paths = folder / "ct_without_pancreas.nii.gz", folder / "empty_reference.nii.gz"
    sitk.WriteImage(slab, str(paths[0]), useCompression=True)
    empty = sitk.Image(slab.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(slab)
    sitk.WriteImage(empty, str(paths[1]))
    return paths


def run_bench(
    names: Sequence[str] = ("unet64", "unet16", "attention_unet", "monet"),
    n_slices: int = 150,
    batch_size: int = 30,
    repeats: int = 3,
    threads: Optional[int] = None,
    end_to_end: bool = True,
    log: Callable[[str], None] = lambda table: None,
    memory_slices: int = 1500,
) -> None:
    """Measure the network table, then the whole job three ways on a 512x512x150 CT, the time from
    cancel to return on it, and the memory of the fast settings on a 512x512x`memory_slices` CT;
    each table goes to `log` when done (the CLI prints)."""
    from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample
    from liteseg.segmentation.inference import load_model

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    matmul = matmul_gflops()
    log(f"torch {torch.__version__}, {threads} threads; float32 matmul {matmul:.0f} GFLOP/s")
    log(f"{n_slices} slices of 256x256, eager rows batch {batch_size}, median of {repeats} runs after a warm-up\n")
    log(format_network_table(bench_networks(names, n_slices, batch_size, repeats), n_slices, matmul))
    if not end_to_end:
        return
    ct_path, reference_path = fetch_sample(SAMPLE_CT), fetch_sample(SAMPLE_PANCREAS)
    log(f"\n{conversion_line()}")
    log("\nBackends on real cases (bundled MoNet; change of Dice against PyTorch float32, the rule "
        f"for a backend to be chosen: at most {MAX_DICE_CHANGE}):")
    log(format_backend_table(*backend_rows(*load_model(), ct_path, reference_path)))
    with tempfile.TemporaryDirectory() as folder:
        job_ct, job_reference = resample_like(ct_path, reference_path, Path(folder), (512, 512, 150))
        rows = [bench_job(job_ct, job_reference, setting, threads) for setting in JOB_SETTINGS]
        log("\nSegment pancreas, 512x512x150 CT (the sample CT resampled), bundled MoNet, read to write, "
               "fresh process each; Dice against the resampled reference:")
        log(format_job_table(rows))
        default = rows[-1]
        (Path(folder) / "no-target").mkdir()
        slab, empty = without_target(ct_path, reference_path, Path(folder) / "no-target")
        no_target = bench_job(*resample_like(slab, empty, Path(folder) / "no-target", (512, 512, 150)), default.setting, threads)
        log("\nThe same default job on a CT without pancreas (the sample CT's slices at least "
            f"{FAR_FROM_TARGET_MM:g} mm from its pancreas, the pelvis, resampled to 512x512x150; target: at most 1.5x):")
        log(format_no_target_line(no_target, default))
        try:
            peer = bench_peer(str(job_ct), threads)
        except LiteSegError as error:
            log(f"\nPeer not measured: {error.message}")
        else:
            log("\nThe peer on the same CT, same threads:")
            log(format_peer_table(peer, default.total, default.seconds["inference"] + default.seconds.get("localise", 0.0)))
        log("\nTime from cancel to return (engine; the flag set by a timer at 40 % of the run):")
        log(format_cancel_table(cancel_rows(sitk.ReadImage(str(job_ct)))))
        big_ct, big_reference = resample_like(ct_path, reference_path, Path(folder), (512, 512, memory_slices))
        rows = [bench_job(big_ct, big_reference, setting, threads) for setting in MEMORY_SETTINGS]
        log(f"\nMemory, 512x512x{memory_slices} CT (the sample CT resampled; target: peak at most 2 GB):")
        log(format_job_table(rows))
        log("\nLocalisation against full-volume inference (default backend), real cases:")
        log(format_localisation_table(localisation_check(ct_path, reference_path, job_ct, job_reference)))


@dataclass
class LocalisationRow:
    case: str
    dice_full: float
    dice_localised: float
    fraction: float
    seconds_full: float
    seconds_localised: float


def localisation_cases(ct_path: Path, reference_path: Path, job_ct: Path, job_reference: Path) -> list[tuple[str, sitk.Image, np.ndarray]]:
    """(name, CT, reference mask) of the real pancreas cases: the sample CT, its 30-slice crop
    with TotalSegmentator v2's labels (when the data folder has it) and its 512x512x150 resampling."""
    from liteseg.io.data import data_root
    from liteseg.io.images import read_image

    cases = [("sample CT 122x101x112", read_image(ct_path), sitk.GetArrayFromImage(read_image(reference_path)) > 0.5)]
    crop = data_root() / "ct/pancreas_TS-A"
    if (crop / SLICES_CT).is_file() and (crop / SLICES_LABELS).is_file():
        labels = sitk.GetArrayFromImage(read_image(crop / SLICES_LABELS))
        cases.append(("sample CT slices 82-111 (TS v2 labels)", read_image(crop / SLICES_CT), labels == TS_V2_PANCREAS))
    cases.append(("sample CT resampled 512x512x150", read_image(job_ct), sitk.GetArrayFromImage(read_image(job_reference)) > 0))
    return cases


def localisation_check(ct_path: Path, reference_path: Path, job_ct: Path, job_reference: Path) -> list[LocalisationRow]:
    """Dice of full-volume and localised inference (the bundled card's setting) on the real cases."""
    from liteseg.evaluation.metrics import dice
    from liteseg.segmentation.inference import load_model, segment_image

    network, card = load_model()
    rows = []
    for name, image, reference in localisation_cases(ct_path, reference_path, job_ct, job_reference):
        results = []
        for localisation in (None, card.localisation or Localisation()):
            started = time.perf_counter()
            result = segment_image(image, network, card.preprocessing, threshold=card.threshold, localisation=localisation)
            results.append((result, time.perf_counter() - started))
        (full, full_s), (localised, localised_s) = results
        n_slices = len(reference)
        fraction = regions_fraction(localised.regions, n_slices, card.preprocessing.slice_size) if localised.regions else 1.0
        rows.append(LocalisationRow(
            name, dice(sitk.GetArrayViewFromImage(full.labelmap) > 0, reference),
            dice(sitk.GetArrayViewFromImage(localised.labelmap) > 0, reference), fraction, full_s, localised_s,
        ))
    return rows


def format_localisation_table(rows: Sequence[LocalisationRow]) -> str:
    header = f"{'case':<40} {'Dice full':>9} {'Dice loc.':>9} {'change':>7} {'pixels':>7} {'full s':>7} {'loc. s':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.case:<40} {r.dice_full:>9.4f} {r.dice_localised:>9.4f} {r.dice_localised - r.dice_full:>+7.4f} "
                     f"{r.fraction:>7.1%} {r.seconds_full:>7.2f} {r.seconds_localised:>7.2f}")
    return "\n".join(lines)


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
