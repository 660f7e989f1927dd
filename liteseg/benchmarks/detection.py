"""LowRes against the 3D U-Net sliding-window baseline, side by side (the LowRes paper's Table 1).

`liteseg bench-detection DIR DATASET` reads a finished `liteseg train --method lowres
--leave-one-patient-out --output DIR` run. For every fold it times and scores the fold's LowRes
weights on the held-out patient's cases and does the same for a 3D U-Net (`baseline3d`) trained
on the same training patients with the same patches and preprocessing (cached in
`DIR/unet3d/<patient>.pt`, trained when missing). Both are pooled over the folds into one FROC
each. One more column times both on a larger volume: the first case repeated along the slices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.detection.lowres import load_detector
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.detection.sliding_window import detect_sliding_window
from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard
from liteseg.models.lowres import LowResNet
from liteseg.models.unet3d import unet3d
from liteseg.training.datasets import Case
from liteseg.training.lowres_lopo import FOLDS_DIR
from liteseg.training.lowres_trainer import (
    HeldOutScores,
    LowResTrainConfig,
    lowres_detector,
    read_detection_case,
    score_detection,
)
from liteseg.training.patches import canonical_volume
from liteseg.training.unet3d_trainer import train_unet3d

UNET_DIR = "unet3d"
LOG_EVERY = 50  # baseline training steps between log lines
Log = Callable[[str], None]  # told what the benchmark is doing (the CLI prints it)


def _silent(message: str) -> None:
    """The default `Log`: says nothing."""


@dataclass
class MethodRow:
    """One method pooled over the folds."""

    method: str
    parameters: int
    seconds_per_scan: float
    average_recall: Optional[float]
    object_dice: Optional[float]
    objects_hit: int
    objects: int
    false_positives: int


def fold_folders(lopo_dir: Path) -> list[Path]:
    """The fold folders of a leave-one-patient-out run, in patient order (LiteSegError if none)."""
    folds_dir = Path(lopo_dir) / FOLDS_DIR
    folds = sorted(p for p in folds_dir.iterdir() if p.is_dir()) if folds_dir.is_dir() else []
    if not folds:
        raise LiteSegError(f"no folds in {folds_dir}: run liteseg train --method lowres --leave-one-patient-out first")
    return folds


def fold_card(folder: Path) -> ModelCard:
    """The model card of a finished fold."""
    cards = sorted(folder.glob("*.json"))
    if len(cards) != 1:
        raise LiteSegError(f"fold {folder.name} is not finished (no single model card in {folder}): resume the training")
    return ModelCard.read(cards[0])


def fold_config(card: ModelCard) -> LowResTrainConfig:
    """The options of a fold's run, as its model card records them (enough to read and patch its cases)."""
    return LowResTrainConfig(output=card.path.parent, patch_size=tuple(card.data["training"]["recipe"]["patch_size"]),
                             preprocessing=DetectionPreprocessing.from_dict(card.data["input"]["preprocessing"]))


def baseline_for_fold(config: LowResTrainConfig, train_cases: Sequence[Case], path: Path, steps: int, batch_size: int,
                      seed: int = 0, log: Log = _silent) -> torch.nn.Module:
    """A fold's 3D U-Net: loaded from `path`, else trained on `train_cases` with the fold's patch
    size and preprocessing and saved there (`log` told every LOG_EVERY steps)."""
    network = unet3d()
    if path.is_file():
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return network.eval()
    volumes = [canonical_volume(*read_detection_case(c, config), config.preprocessing) for c in train_cases]
    started = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % LOG_EVERY == 0 or step == steps:
            log(f"  unet3d {path.stem}: step {step}/{steps}, loss {loss:.3f}, {time.perf_counter() - started:.0f} s")

    network = train_unet3d(volumes, steps, batch_size, config.patch_size, seed=seed, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return network


def _row(method: str, network: torch.nn.Module, scores: HeldOutScores) -> MethodRow:
    """The pooled figures of one method (`network`: any instance, for its parameter count)."""
    summary = scores.summary()
    return MethodRow(method, sum(p.numel() for p in network.parameters()),
                     float(np.mean([c["seconds"] for c in scores.cases])), summary["average_recall"], summary["object_dice"],
                     sum(c["objects_hit"] for c in scores.cases), sum(s.n_objects for s in scores.scans),
                     sum(not hit for s in scores.scans for hit in s.hits))


def compare_lopo(lopo_dir: Path, cases: Sequence[Case], steps: int, batch_size: int, log: Log = _silent) -> list[MethodRow]:
    """LowRes and the 3D U-Net on every fold's held-out cases (see the module docstring); `log`
    is told each fold's hits and the baseline's training."""
    lowres, unet = HeldOutScores(), HeldOutScores()
    for folder in fold_folders(lopo_dir):
        card = fold_card(folder)
        held_out = [c for c in cases if c.patient == folder.name]
        if not held_out:
            raise LiteSegError(f"fold {folder.name}: no case of that patient in the dataset")
        config = fold_config(card)
        network, _ = load_detector(card)
        lowres.add(score_detection(held_out, config, lowres_detector(network, config)))
        train_cases = [c for c in cases if c.patient != folder.name]
        baseline = baseline_for_fold(config, train_cases, Path(lopo_dir) / UNET_DIR / f"{folder.name}.pt", steps, batch_size,
                                     log=log)
        window = config.patch_size
        unet.add(score_detection(held_out, config,
                                 lambda image: detect_sliding_window(image, baseline, config.preprocessing, window)))
        log(f"  fold {folder.name}: LowRes {lowres.cases[-1]['objects_hit']}/{lowres.cases[-1]['objects']} hit, "
              f"3D U-Net {unet.cases[-1]['objects_hit']}/{unet.cases[-1]['objects']} hit")
    return [_row("LowRes (two stages)", LowResNet(), lowres), _row("3D U-Net, sliding window", unet3d(), unet)]


def repeated_slices(image: sitk.Image, repeats: int) -> sitk.Image:
    """`image` stacked `repeats` times along its slices (same spacing and direction): a large
    volume for timing."""
    large = sitk.GetImageFromArray(np.concatenate([sitk.GetArrayFromImage(image)] * repeats, axis=0))
    large.SetSpacing(image.GetSpacing())
    large.SetDirection(image.GetDirection())
    return large


def time_large_volume(lopo_dir: Path, case: Case, repeats: int) -> tuple[tuple[int, ...], float, float]:
    """(size, LowRes seconds, 3D U-Net seconds) on `case` repeated `repeats` times along the slices,
    with the first fold's weights (timing only)."""
    folder = fold_folders(lopo_dir)[0]
    card = fold_card(folder)
    config = fold_config(card)
    image, _ = read_detection_case(case, config)
    large = repeated_slices(image, repeats)
    network, _ = load_detector(card)
    baseline = unet3d()
    baseline.load_state_dict(torch.load(Path(lopo_dir) / UNET_DIR / f"{folder.name}.pt", weights_only=True))
    started = time.perf_counter()
    lowres_detector(network, config)(large)
    lowres_seconds = time.perf_counter() - started
    started = time.perf_counter()
    detect_sliding_window(large, baseline.eval(), config.preprocessing, config.patch_size)
    return large.GetSize(), lowres_seconds, time.perf_counter() - started


def format_comparison(rows: Sequence[MethodRow], large: tuple[tuple[int, ...], float, float], threads: int) -> str:
    """The side-by-side table."""
    size, lowres_s, unet_s = large
    lines = [f"{'method':<26} {'parameters':>10} {'s/scan':>7} {'s ' + 'x'.join(map(str, size)):>16} "
             f"{'avg recall':>10} {'object Dice':>11} {'hit':>6} {'FP':>4}"]
    for row, seconds in zip(rows, (lowres_s, unet_s)):
        recall = "-" if row.average_recall is None else f"{row.average_recall:.3f}"
        dice = "-" if row.object_dice is None else f"{row.object_dice:.3f}"
        lines.append(f"{row.method:<26} {row.parameters:>10,} {row.seconds_per_scan:>7.2f} {seconds:>16.2f} "
                     f"{recall:>10} {dice:>11} {f'{row.objects_hit}/{row.objects}':>6} {row.false_positives:>4}")
    lines.append(f"torch threads {threads}; s/scan: mean over the held-out scans (read excluded); "
                 f"speed ratio on the large volume: {unet_s / lowres_s:.1f}x")
    return "\n".join(lines)


def run_detection_bench(lopo_dir: Path, cases: Sequence[Case], steps: int, batch_size: int, repeats: int,
                        log: Log = _silent) -> str:
    """Compare and return the table."""
    rows = compare_lopo(lopo_dir, cases, steps, batch_size, log)
    table = format_comparison(rows, time_large_volume(lopo_dir, cases[0], repeats), torch.get_num_threads())
    return table

