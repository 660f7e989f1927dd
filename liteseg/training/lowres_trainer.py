"""Headless training of the two-stage LowRes network (Zakazov et al.), `liteseg train --method lowres`.

Recipe (docs: /shared/specs/methods.md, "LowRes: training"):

- Stage 1 for `stage1_epochs` epochs of `iterations_per_epoch` batches of 3D patches
  (`patches.sample_batch`: centred on a lesion voxel with probability 0.5, else uniform), loss
  the weighted binary cross-entropy of the x8 logits against max_pool3d(target, 8, ceil_mode)
  (positive voxels weighted `pos_weight`). With `flip`, each patch is mirrored in-plane at
  random (`patches.random_flips`; not in the paper, for tiny training sets such as DeepLesion's).
- Stage 2 for `stage2_epochs` epochs with stage 1 frozen (no gradients AND eval mode, so its
  BatchNorm running statistics stay put); stage 2 decodes the stage-1 features of the whole patch
  (`LowResNet.forward`) and is trained with the soft Dice loss of the full-resolution logits.
- Each stage: SGD, Nesterov momentum 0.9, lr `lr` (1e-2) and `lr_final` (1e-3) after
  `lr_drop_fraction` (0.8) of the stage's epochs: the paper's 80-of-100 scaled to the epochs asked.
- Validation after every epoch runs `detect_image` (exactly the inference path) on the validation
  cases: object Dice (mean over hit objects), average recall (FROC, 0..5 FP per scan), voxel Dice.
  During stage 1 it runs without stage 2 (`refine=False`, still untrained): the figures are
  those of the upsampled stage-1 map.
- A checkpoint after every epoch (both stages, both optimizers, history, RNG) allows an exact
  resume. The weights are the last epoch's (a fixed schedule, as in the paper, no early stopping);
  they are written with a model card `liteseg detect` loads (`detection.load_detector`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from liteseg import __version__
from liteseg.detection.lowres import detect_image
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.detection.results import DetectionResult
from liteseg.errors import LiteSegError
from liteseg.evaluation.froc import ScanMatch, average_recall, froc_curve, match_scan, object_dice
from liteseg.evaluation.metrics import check_same_grid, dice
from liteseg.extras import matplotlib_available
from liteseg.io.images import as_3d, check_volume, read_image
from liteseg.io.labels import LESION_LABEL
from liteseg.io.modelcard import sha256_file, write_card
from liteseg.models.lowres import LowResNet
from liteseg.progress import BarFactory, iterate
from liteseg.training.datasets import Case, merge_labels
from liteseg.training.losses import dice_loss
from liteseg.training.patches import (
    DEFAULT_PATCH_SIZE,
    LESION_PROBABILITY,
    PatchVolume,
    canonical_volume,
    check_patch_size,
    random_flips,
    sample_batch,
)
from liteseg.training.runs import (
    common_problems,
    config_to_dict,
    epoch_bar,
    raise_first_problem,
    read_checkpoint,
    restore_rng_state,
    save_atomic,
    save_checkpoint,
    split_description,
    start_run,
    validates_on_training_cases,
)

CURVE_NAME = "training_curve.png"
THRESHOLD = 0.5
NETWORK = "lowres"
# Options that may differ when resuming (stage1_epochs only while stage 2 has not started; a
# changed epoch count moves the lr drop of the epochs not yet run).
RESUMABLE_CHANGES = ("stage1_epochs", "stage2_epochs", "notes", "num_threads", "output")

Detector = Callable[[sitk.Image], DetectionResult]



@dataclass
class LowResTrainConfig:
    """Options of one LowRes training run (the paper's recipe by default, 64^3 patches; use
    e.g. patch_size (16, 64, 64) for DeepLesion's 13-16-slice slabs)."""

    output: Path
    name: str = "lowres-lesion"
    version: str = "1.0.0"
    stage1_epochs: int = 100
    stage2_epochs: int = 100
    iterations_per_epoch: int = 100
    batch_size: int = 32
    stage2_batch_size: Optional[int] = None  # None: batch_size (stage 2 runs at full resolution: more memory)
    lr: float = 1e-2
    lr_final: float = 1e-3
    lr_drop_fraction: float = 0.8  # of each stage's epochs at `lr` (paper: 80 of 100)
    momentum: float = 0.9
    patch_size: tuple[int, int, int] = DEFAULT_PATCH_SIZE
    lesion_probability: float = LESION_PROBABILITY
    pos_weight: float = 10.0  # weight of positive x8 voxels in the stage-1 cross-entropy (our choice)
    flip: bool = False  # mirror patches in-plane at random (not in the paper)
    preprocessing: DetectionPreprocessing = field(default_factory=DetectionPreprocessing)
    allow_non_ct: bool = False
    seed: int = 0
    val_fraction: float = 0.3
    val_patients: tuple[str, ...] = ()  # held-out patients named explicitly (overrides val_fraction)
    label_values: tuple[int, ...] = (1,)
    device: str = "auto"
    num_threads: Optional[int] = None
    notes: str = ""

    @property
    def epochs(self) -> int:
        """Epochs of both stages together."""
        return self.stage1_epochs + self.stage2_epochs

    def stage_of(self, epoch: int) -> tuple[int, int]:
        """(stage, epoch within that stage, from 1) of a run epoch counted from 1."""
        return (1, epoch) if epoch <= self.stage1_epochs else (2, epoch - self.stage1_epochs)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a run epoch: `lr` for the first round(lr_drop_fraction * E) epochs
        (at least 1) of its stage's E epochs, then `lr_final`."""
        stage, within = self.stage_of(epoch)
        epochs = self.stage1_epochs if stage == 1 else self.stage2_epochs
        return self.lr if within <= max(1, round(self.lr_drop_fraction * epochs)) else self.lr_final

    def check(self) -> None:
        """Raise LiteSegError on an option no training can use."""
        check_patch_size(self.patch_size)
        problems = [
            (self.stage1_epochs < 1 or self.stage2_epochs < 1,
             f"each stage needs at least 1 epoch, got {self.stage1_epochs} + {self.stage2_epochs}"),
            (self.iterations_per_epoch < 1, f"iterations per epoch must be at least 1, got {self.iterations_per_epoch}"),
            (self.batch_size < 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.stage2_batch_size is not None and self.stage2_batch_size < 1,
             f"stage-2 batch size must be at least 1, got {self.stage2_batch_size}"),
            (self.lr <= 0 or self.lr_final <= 0, f"learning rates must be positive, got {self.lr} and {self.lr_final}"),
            (not 0 < self.lr_drop_fraction <= 1, f"lr drop fraction must be in (0, 1], got {self.lr_drop_fraction}"),
            (not 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (not 0 <= self.lesion_probability <= 1, f"lesion probability must be in [0, 1], got {self.lesion_probability}"),
            (self.pos_weight <= 0, f"positive class weight must be positive, got {self.pos_weight}"),
            (not isinstance(self.preprocessing, DetectionPreprocessing), "preprocessing must be a DetectionPreprocessing"),
        ]
        raise_first_problem(problems + common_problems(self))

    def to_dict(self) -> dict:
        return config_to_dict(self)


# ---------------------------------------------------------------- losses and steps


def max_pooled_target(labels: torch.Tensor) -> torch.Tensor:
    """The x8 target of stage 1: a cell is positive when any of its 8^3 voxels is (ceil mode,
    so it has the shape of the x8 logits for any patch size)."""
    return F.max_pool3d(labels.float(), kernel_size=8, stride=8, ceil_mode=True)


def stage1_loss(logits8: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Weighted binary cross-entropy of the x8 logits against `max_pooled_target(labels)`."""
    target = max_pooled_target(labels)
    weight = torch.tensor(pos_weight, dtype=logits8.dtype, device=logits8.device)
    return F.binary_cross_entropy_with_logits(logits8, target, pos_weight=weight)


def set_stage(network: LowResNet, stage: int) -> None:
    """Training mode of a stage: stage 1 trains stage 1 (BN in training mode); stage 2 freezes
    stage 1 (requires_grad False and eval mode, so BN running statistics stay put) and trains
    stage 2."""
    if stage == 1:
        network.train()
        network.stage1.requires_grad_(True)
    elif stage == 2:
        network.stage1.eval()
        network.stage1.requires_grad_(False)
        network.stage2.train()
        network.stage2.requires_grad_(True)
    else:
        raise LiteSegError(f"LowRes has stages 1 and 2, got {stage}")


def training_step(
    network: LowResNet, optimizer: torch.optim.Optimizer, stage: int, images: torch.Tensor, labels: torch.Tensor, pos_weight: float
) -> float:
    """One optimisation step of `stage` on a batch (B, 1, D, H, W); the loss. Call `set_stage` first."""
    optimizer.zero_grad(set_to_none=True)
    if stage == 1:
        loss = stage1_loss(network.stage1(images).logits8, labels, pos_weight)
    else:
        with torch.no_grad():
            features = network.stage1(images)
        loss = dice_loss(network.stage2(features), labels)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def make_optimizers(network: LowResNet, config: LowResTrainConfig) -> dict[int, torch.optim.Optimizer]:
    """One SGD Nesterov optimizer per stage, over that stage's parameters."""
    return {
        stage: torch.optim.SGD(module.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True)
        for stage, module in ((1, network.stage1), (2, network.stage2))
    }


# ---------------------------------------------------------------- data and validation


def read_detection_case(case: Case, config: LowResTrainConfig) -> tuple[sitk.Image, sitk.Image]:
    """The checked image and its merged 0/1 reference (uint8, same grid)."""
    image = as_3d(read_image(case.image))
    check_volume(image, f"image of case {case.patient}")
    config.preprocessing.check(image, config.allow_non_ct)
    label = as_3d(read_image(case.label))
    check_same_grid(image, label, f"case {case.patient} ({case.image.name} and {case.label.name})")
    reference = sitk.GetImageFromArray(merge_labels(sitk.GetArrayViewFromImage(label), config.label_values))
    reference.CopyInformation(image)
    return image, reference


def load_volumes(cases: Sequence[Case], config: LowResTrainConfig, bars: Optional[BarFactory]) -> list[PatchVolume]:
    """The training cases as canonical, normalised `PatchVolume`s held in memory."""
    loading = iterate(cases, bars, "loading training cases", "case")
    volumes = [canonical_volume(*read_detection_case(c, config), config.preprocessing) for c in loading]
    if not any(v.has_lesion for v in volumes):
        raise LiteSegError(f"no training case holds any of the label values {list(config.label_values)}")
    return volumes


@dataclass
class HeldOutScores:
    """Detection results of validation cases: FROC matches, Dice of every hit object, one row per case."""

    scans: list[ScanMatch] = field(default_factory=list)
    object_dices: list[float] = field(default_factory=list)
    cases: list[dict] = field(default_factory=list)

    def add(self, other: HeldOutScores) -> None:
        self.scans += other.scans
        self.object_dices += other.object_dices
        self.cases += other.cases

    def summary(self) -> dict:
        """object_dice (mean over all hit ground-truth objects; None when none is hit),
        average_recall (FROC, 0..5 false positives per scan; None without any object), dice
        (mean voxel Dice of the labelmaps), detections (total)."""
        has_objects = any(s.n_objects for s in self.scans)
        return {
            "object_dice": float(np.mean(self.object_dices)) if self.object_dices else None,
            "average_recall": average_recall(froc_curve(self.scans)) if has_objects else None,
            "dice": float(np.mean([r["dice"] for r in self.cases])) if self.cases else None,
            "detections": sum(r["detections"] for r in self.cases),
        }


def lowres_detector(network: LowResNet, config: LowResTrainConfig, refine: bool = True) -> Detector:
    """`detect_image` with the network and the options of a run (`refine` False: stage 1 only)."""
    return lambda image: detect_image(image, network, config.preprocessing, threshold=THRESHOLD,
                                      allow_non_ct=config.allow_non_ct, refine=refine)


def score_detection(cases: Sequence[Case], config: LowResTrainConfig, detect: Detector) -> HeldOutScores:
    """Run `detect` on every case and match its result to the case's reference."""
    scores = HeldOutScores()
    for case in cases:
        image, reference = read_detection_case(case, config)
        result = detect(image)
        gt = sitk.GetArrayViewFromImage(reference)
        pred = sitk.GetArrayViewFromImage(result.labelmap)
        hit = object_dice(pred, gt)
        scan = match_scan(gt, [d.box for d in result.detections], [d.max_probability for d in result.detections],
                          [d.mask for d in result.detections])
        scores.scans.append(scan)
        scores.object_dices.extend(hit)
        scores.cases.append({"patient": case.patient, "image": case.image.name, "objects": scan.n_objects,
                             "objects_hit": len(hit), "detections": len(result.detections),
                             "object_dice": float(np.mean(hit)) if hit else None, "dice": dice(pred, gt),
                             "seconds": round(sum(result.seconds.values()), 3)})
    return scores


def evaluate_detection(network: LowResNet, cases: Sequence[Case], config: LowResTrainConfig,
                       refine: bool = True) -> tuple[dict, list[dict]]:
    """`score_detection` of the cases with `lowres_detector`: (its summary, its per-case rows)."""
    scores = score_detection(cases, config, lowres_detector(network, config, refine))
    return scores.summary(), scores.cases


def _cpu_network(network: LowResNet, device: torch.device) -> LowResNet:
    """The network itself on CPU, else a CPU copy (detect_image works on CPU tensors)."""
    return network if device.type == "cpu" else copy.deepcopy(network).cpu()


# ---------------------------------------------------------------- training


def train_lowres(config: LowResTrainConfig, cases: Sequence[Case], command: str, bars: Optional[BarFactory] = None,
                 resume: bool = False) -> Path:
    """Train both stages on `cases` (split by patient); write weights, checkpoint, curve and
    model card into `config.output`; `bars` draws the progress bars. `command` is recorded in the card. `resume` continues
    `<output>/checkpoint.pt`, which must come from the same options (see RESUMABLE_CHANGES) and
    cases. Returns the model card's path."""
    run = start_run(config, cases, resume)
    checkpoint, weights, card, device, train_cases, val_cases, generator = run
    network = LowResNet().to(device)
    optimizers = make_optimizers(network, config)
    history: list[dict] = []
    if resume:
        history = _restore(checkpoint, config, train_cases, val_cases, network, optimizers, generator)

    volumes = load_volumes(train_cases, config, bars) if len(history) < config.epochs else []
    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        stage, _ = config.stage_of(epoch)
        optimizer = optimizers[stage]
        lr = config.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_size = config.batch_size if stage == 1 else (config.stage2_batch_size or config.batch_size)
        set_stage(network, stage)
        bar = epoch_bar(config.iterations_per_epoch, f"stage {stage} epoch {epoch}/{config.epochs}", bars)
        total = 0.0
        for iteration in range(1, config.iterations_per_epoch + 1):
            images, labels, _ = sample_batch(volumes, batch_size, config.patch_size, generator, config.lesion_probability)
            if config.flip:
                images, labels = random_flips(images, labels, generator)
            total += training_step(network, optimizer, stage, images.to(device), labels.to(device), config.pos_weight)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / iteration:.4f}")
        train_loss = total / config.iterations_per_epoch
        summary, _ = evaluate_detection(_cpu_network(network, device), val_cases, config, refine=stage == 2)
        history.append({"epoch": epoch, "stage": stage, "train_loss": train_loss, "lr": lr,
                        **{f"val_{k}": v for k, v in summary.items()}, "seconds": time.perf_counter() - started})
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.4f}", object_dice=format_score(summary["object_dice"]),
                            recall=format_score(summary["average_recall"]))
            bar.close()
        save_atomic({k: v.detach().cpu() for k, v in network.state_dict().items()}, weights)
        states = {"stage1": network.stage1.state_dict(), "stage2": network.stage2.state_dict(),
                  "optimizer1": optimizers[1].state_dict(), "optimizer2": optimizers[2].state_dict()}
        save_checkpoint(checkpoint, config, run, history, states)
        if matplotlib_available("training curve"):
            plot_lowres_curve(history, Path(config.output) / CURVE_NAME, config.stage1_epochs)

    if not weights.is_file():
        save_atomic({k: v.detach().cpu() for k, v in network.state_dict().items()}, weights)
    network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    summary, results = evaluate_detection(_cpu_network(network, device), val_cases, config)
    return write_card(card, _card(config, weights, history, train_cases, val_cases, summary, results, device, command))


def format_score(value: Optional[float]) -> str:
    """A score with 3 decimals, "-" when undefined."""
    return "-" if value is None else f"{value:.3f}"


def _restore(path: Path, config: LowResTrainConfig, train_cases: Sequence[Case], val_cases: Sequence[Case],
             network: LowResNet, optimizers: dict[int, torch.optim.Optimizer], generator: torch.Generator) -> list[dict]:
    """Load a checkpoint made with the same options and cases; returns its history."""
    state = read_checkpoint(path, config, RESUMABLE_CHANGES, train_cases, val_cases)
    saved, history = state["config"], state["history"]
    if saved["stage1_epochs"] != config.stage1_epochs and (
        any(h["stage"] == 2 for h in history) or len(history) > config.stage1_epochs
    ):
        raise LiteSegError(f"cannot resume {path}: stage 1 epochs cannot change once stage 1 is over "
                           f"({saved['stage1_epochs']} -> {config.stage1_epochs})")
    network.stage1.load_state_dict(state["stage1"])
    network.stage2.load_state_dict(state["stage2"])
    optimizers[1].load_state_dict(state["optimizer1"])
    optimizers[2].load_state_dict(state["optimizer2"])
    restore_rng_state(state["rng"], generator)
    return history


def plot_lowres_curve(history: Sequence[dict], path: Path, stage1_epochs: int) -> Path:
    """PNG of the training loss (stage-1 weighted BCE, then stage-2 Dice loss) and the validation
    object Dice and average recall per epoch (matplotlib Agg); a line marks the stage change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", "training loss (stage 1 weighted BCE, stage 2 Dice)"),
                       ("val_object_dice", "validation object Dice"), ("val_average_recall", "validation average recall")):
        values = [math.nan if h.get(key) is None else h[key] for h in history]
        axes.plot(epochs, values, marker="o", markersize=3, label=label)
    if any(h["stage"] == 2 for h in history):
        axes.axvline(stage1_epochs + 0.5, color="grey", linestyle=":", label="stage 1 -> stage 2")
    axes.set(xlabel="epoch", ylim=(0, max([1.0] + [h["train_loss"] for h in history]) * 1.05), title="LowRes training curve")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=100)
    return path


def _card(config: LowResTrainConfig, weights: Path, history: Sequence[dict], train_cases: Sequence[Case],
          val_cases: Sequence[Case], summary: dict, results: Sequence[dict], device: torch.device, command: str) -> dict:
    on_training = validates_on_training_cases(config)
    split = split_description(config, train_cases, val_cases)
    stage1 = sum(h["stage"] == 1 for h in history)
    drops = {s: max(1, round(config.lr_drop_fraction * e)) for s, e in ((1, config.stage1_epochs), (2, config.stage2_epochs))}
    kind = "CT, HU window" if config.preprocessing.kind == "hu_window" else "grey levels 0-255"
    return {
        "name": config.name,
        "version": config.version,
        "title": f"Lesion detection ({kind}), lowres",
        "network": NETWORK,
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "input": {"axis": "3D, canonical (S, P, L) order from the direction matrix, native spacing",
                  "preprocessing": config.preprocessing.to_dict()},
        "output": {"activation": "sigmoid", "threshold": THRESHOLD},
        "labels": [dict(LESION_LABEL)],
        "training": {
            "data": [c.describe() for c in train_cases],
            "validation_data": [c.describe() for c in val_cases],
            "split": split,
            "seed": config.seed,
            "epochs": len(history),
            "stage1_epochs": stage1,
            "stage2_epochs": len(history) - stage1,
            "recipe": {
                "optimizer": f"SGD, Nesterov momentum {config.momentum:g}, one per stage",
                "lr": f"{config.lr:g} for the first {drops[1]} stage-1 epochs and the first {drops[2]} stage-2 epochs, "
                f"then {config.lr_final:g} (the paper's 80 of 100 epochs scaled by {config.lr_drop_fraction:g})",
                "stage1_loss": f"binary cross-entropy of the x8 logits against max_pool3d(target, 8, ceil mode), "
                f"positive weight {config.pos_weight:g}",
                "stage2_loss": "soft Dice on sigmoid(full-resolution logits of the whole patch), over the batch, smooth 1; "
                "stage 1 frozen (no gradients, BatchNorm in eval mode)",
                "patches": f"{list(config.patch_size)} voxels (canonical S, P, L), centred on a lesion voxel with "
                f"probability {config.lesion_probability:g}, else uniform; padded with 0 where the volume is smaller"
                + ("; mirrored in-plane at random (rows and columns, probability 0.5 each)" if config.flip else ""),
                "patch_size": list(config.patch_size),
                "flip": config.flip,
                "batch_size": config.batch_size,
                "stage2_batch_size": config.stage2_batch_size or config.batch_size,
                "iterations_per_epoch": config.iterations_per_epoch,
                "label_values": list(config.label_values),
            },
            "history": list(history),
            "device": str(device),
            "seconds": round(sum(h["seconds"] for h in history), 1),
        },
        "validation": {
            "on_training_cases": on_training,
            "weights": f"last epoch {len(history)} (fixed schedule, no early stopping, as in the paper)",
            "method": f"detect_image (threshold {THRESHOLD}, margin 1) on whole validation volumes",
            "cases": list(results),
            **{f"mean_{k}" if k != "detections" else k: v for k, v in summary.items()},
        },
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "liteseg_version": __version__,
        "notes": config.notes,
    }
