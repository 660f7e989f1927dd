"""Time from cancel to return, in the engine (target: at most 1 s, so that the Slicer modules'
Cancel answers at once).

In Slicer the engine runs in the GUI thread and the panel's Cancel click is handled when the
engine's progress callback processes events; the engine then stops at its next cancel check, which
follows each progress report. So each job is timed twice: once to completion, recording the longest
gap between progress reports (the longest a click can wait to be seen), and once with the cancel
flag set by a timer at a share of that run's time (a click at an arbitrary moment), timing the return.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from liteseg.errors import Cancelled
from liteseg.progress import ProgressCallback

CancelledRun = Callable[[ProgressCallback, threading.Event], object]  # (progress, cancel) -> runs until cancelled


@dataclass(frozen=True)
class CancelRow:
    job: str
    seconds: float  # the uncancelled run
    longest_gap: float  # longest time between two progress reports (or the start or end) of that run
    at: float  # share of `seconds` after which the flag was set
    to_return: Optional[float]  # from setting the flag to `Cancelled` reaching the caller (None: the run ended first)


def time_to_cancel(job: str, run: CancelledRun, at: float) -> CancelRow:
    """Time `run` to completion, then run it again with its cancel flag set after `at` of that time."""
    reports: list[float] = []
    started = time.perf_counter()
    run(lambda fraction, message: reports.append(time.perf_counter()), threading.Event())
    ended = time.perf_counter()
    longest_gap = float(np.max(np.diff([started, *reports, ended])))
    flag, marks = threading.Event(), {}

    def click() -> None:
        marks["set"] = time.perf_counter()
        flag.set()

    timer = threading.Timer(at * (ended - started), click)
    timer.start()
    try:
        run(lambda fraction, message: None, flag)
    except Cancelled:
        return CancelRow(job, ended - started, longest_gap, at, time.perf_counter() - marks["set"])
    finally:
        timer.cancel()
    return CancelRow(job, ended - started, longest_gap, at, None)


def segmentation_runs(ct: sitk.Image) -> dict[str, CancelledRun]:
    """The bundled MoNet's job on `ct` as the panel runs it (fast backend and localisation, the
    card's defaults) and in the slowest setting (eager, batch 16, every slice)."""
    from liteseg.segmentation.inference import load_model, segment_image

    network, card = load_model()
    size = "x".join(map(str, ct.GetSize()))
    return {
        f"Segment pancreas {size}, default": lambda progress, cancel: segment_image(
            ct, network, card.preprocessing, card.threshold, localisation=card.localisation, progress=progress,
            cancel=cancel),
        f"Segment pancreas {size}, eager batch 16, every slice": lambda progress, cancel: segment_image(
            ct, network, card.preprocessing, card.threshold, batch_size=16, backend="eager", progress=progress,
            cancel=cancel),
    }


def detection_runs(ct: sitk.Image) -> dict[str, CancelledRun]:
    """The bundled LowRes model on `ct` mapped to its grey levels (clip(HU, 0, 255), as the NIH
    slices are)."""
    from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector

    network, preprocessing = load_detector(find_lowres_card(None))
    grey = sitk.GetImageFromArray(np.clip(sitk.GetArrayViewFromImage(ct), 0, 255).astype(np.uint8))
    grey.CopyInformation(ct)
    size = "x".join(map(str, ct.GetSize()))
    return {f"LowRes detect {size}": lambda progress, cancel: detect_image(
        grey, network, preprocessing, progress=progress, cancel=cancel)}


def cancel_rows(ct: sitk.Image, at: float = 0.4) -> list[CancelRow]:
    """Every job of `segmentation_runs` and `detection_runs` on `ct`, cancelled after `at` of its time."""
    runs = {**segmentation_runs(ct), **detection_runs(ct)}
    return [time_to_cancel(job, run, at) for job, run in runs.items()]


def format_cancel_table(rows: list[CancelRow]) -> str:
    header = f"{'job':<56} {'run s':>7} {'longest gap s':>13} {'cancel at':>9} {'s to return':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        to_return = "ended first" if r.to_return is None else f"{r.to_return:.3f}"
        lines.append(f"{r.job:<56} {r.seconds:>7.2f} {r.longest_gap:>13.3f} {r.at:>9.0%} {to_return:>11}")
    return "\n".join(lines)
