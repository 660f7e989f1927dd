"""Headless training of a 2D slice-by-slice network with the MoNet paper's recipe.

Every epoch: one augmented pass over the selected training slices, the validation Dice loss on
fixed validation slices, and the validation Dice of whole volumes segmented by `segment_image`
(exactly the inference path). A checkpoint after each epoch allows an exact resume; the best
epoch's weights (lowest validation loss) are written with a model card at the end.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from liteseg import __version__
from liteseg.errors import LiteSegError
from liteseg.evaluation.metrics import dice, hausdorff95
from liteseg.extras import matplotlib_available
from liteseg.io.labels import LIVER_LABEL, PANCREAS_LABEL
from liteseg.io.modelcard import sha256_file, write_card
from liteseg.models import MODELS, build_model
from liteseg.progress import BarFactory, iterate
from liteseg.segmentation.inference import segment_image
from liteseg.segmentation.localisation import MULTIPLE
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.training.augment import random_affine
from liteseg.training.datasets import Case, Slices, load_slices, read_case, select_slices
from liteseg.training.losses import dice_loss
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
from liteseg.training.slice_dataset import SlicePatient

CURVE_NAME = "training_curve.png"


THRESHOLD = 0.5


# The recipe is binary (sigmoid, soft Dice): every network is built with one output channel, also
# those whose default is two (PocketNet's softmax head), and the card records it for loading.
BINARY_OUTPUT = {"out_channels": 1}


AUGMENTATION = {"rotation_degrees": 10.0, "zoom": 0.25, "shift": 0.2}


# Options that may differ when resuming without changing the result of the epochs already run.
RESUMABLE_CHANGES = ("epochs", "notes", "num_threads", "output")


PRECISIONS = ("float32", "bfloat16")


# `--label-preset`: what the merged foreground (value 1) is.
LABEL_PRESETS = {"pancreas": PANCREAS_LABEL, "liver": LIVER_LABEL}


@dataclass
class TrainConfig:
    """Options of one training run (the MoNet paper's recipe by default)."""

    output: Path
    name: str = "monet-pancreas-ct"
    version: str = "1.0.0"
    network: str = "monet"
    epochs: int = 50
    batch_size: int = 8
    lr: float = 5e-4
    lr_factor: float = 0.1
    lr_patience: int = 2  # epochs without validation-loss improvement before lr x lr_factor (Keras meaning)
    seed: int = 0
    val_fraction: float = 0.3
    val_patients: tuple[str, ...] = ()  # held-out patients named explicitly (overrides val_fraction)
    label_values: tuple[int, ...] = (1, 2)
    empty_slice_ratio: float = 0.5
    passes_per_epoch: int = 1  # draws of the training slices per epoch (small data sets)
    foreground_prior: Optional[float] = None  # initial output probability (None: the paper's zero bias)
    label_preset: str = "pancreas"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    precision: str = "float32"  # or "bfloat16": mixed-precision forward passes (autocast), fp32 weights
    device: str = "auto"
    num_threads: Optional[int] = None
    notes: str = ""

    def check(self) -> None:
        """Raise LiteSegError on an option no training can use."""
        spec = MODELS.get(self.network)
        if spec is None or spec.spatial_dims != 2:
            names = ", ".join(n for n, s in MODELS.items() if s.spatial_dims == 2)
            raise LiteSegError(f"the slice trainer needs a 2D network ({names}), got {self.network!r}")
        problems = [
            (self.epochs < 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size < 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr <= 0, f"learning rate must be positive, got {self.lr}"),
            (self.lr_patience < 1, f"lr patience must be at least 1, got {self.lr_patience}"),
            (self.empty_slice_ratio < 0, f"empty slice ratio must be >= 0, got {self.empty_slice_ratio}"),
            (self.passes_per_epoch < 1, f"passes per epoch must be at least 1, got {self.passes_per_epoch}"),
            (self.foreground_prior is not None and not 0 < self.foreground_prior < 1,
             f"foreground prior must be between 0 and 1, got {self.foreground_prior}"),
            (self.precision not in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (min(self.preprocessing.slice_size) < MULTIPLE or any(n % MULTIPLE for n in self.preprocessing.slice_size),
             f"slice size must be multiples of {MULTIPLE} (the 2D networks' downsampling), "
             f"got {' x '.join(map(str, self.preprocessing.slice_size))}"),
            (self.label_preset not in LABEL_PRESETS,
             f"unknown label preset {self.label_preset!r}; choose from {', '.join(LABEL_PRESETS)}"),
        ]
        raise_first_problem(problems + common_problems(self))

    def to_dict(self) -> dict:
        return config_to_dict(self)


class OnDevice(nn.Module):
    """Runs `network` on `device` for callers that pass and expect CPU tensors (segment_image)."""

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.network = network
        self.device = device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.to(self.device)).float().cpu()


def train(config: TrainConfig, cases: Sequence[Case], command: str, bars: Optional[BarFactory] = None, resume: bool = False,
          dataset: Optional[dict] = None) -> Path:
    """Train on `cases` (split by patient), write weights, checkpoint, curve and model card.

    `bars` draws the loading and epoch bars (none without it). `command` is recorded in the card, and `dataset` (e.g. a slice dataset's description and
    licence) as its training data's source. `resume` continues `<output>/checkpoint.pt`, which must
    come from the same options (only epochs, notes, threads and the folder may change) and cases.
    Returns the model card's path.
    """
    run = start_run(config, cases, resume)
    checkpoint, weights, card, device, train_cases, val_cases, generator = run
    # Channels-last: the same convolutions, about 1.3x faster per training step on the CPU.
    network = build_model(config.network, **BINARY_OUTPUT).to(device, memory_format=torch.channels_last)
    if config.foreground_prior is not None:
        set_output_prior(network, config.foreground_prior)
    optimizer = torch.optim.NAdam(network.parameters(), lr=config.lr)
    # PyTorch reduces after `patience` + 1 bad epochs, Keras (the paper) after `patience`.
    scheduler = ReduceLROnPlateau(optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience - 1)
    history: list[dict] = []
    if resume:
        history = _restore(checkpoint, config, train_cases, val_cases, network, optimizer, scheduler, generator)

    train_slices = load_training_slices(train_cases, config, "training", bars)
    val_slices = train_slices if val_cases == train_cases else load_training_slices(val_cases, config, "validation", bars)
    val_indices = torch.sort(select_slices(val_slices, config.empty_slice_ratio, torch.Generator().manual_seed(config.seed))).values

    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        indices = torch.cat(
            [select_slices(train_slices, config.empty_slice_ratio, generator) for _ in range(config.passes_per_epoch)]
        )
        bar = epoch_bar(math.ceil(len(indices) / config.batch_size), f"epoch {epoch}/{config.epochs}", bars)
        train_loss = train_epoch(network, optimizer, train_slices, indices, config.batch_size, generator, device,
                                  config.precision == "bfloat16", bar)
        val_loss = _validation_loss(network, val_slices, val_indices, config.batch_size, device)
        val_dice = float(np.mean([r["dice"] for r in evaluate_cases(network, val_cases, config, device, with_hd95=False)]))
        scheduler.step(val_loss)
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice, "lr": lr,
             "seconds": time.perf_counter() - started}
        )
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}", val_dice=f"{val_dice:.3f}")
            bar.close()
        if best_epoch(history) == epoch:
            save_atomic({k: v.detach().cpu() for k, v in network.state_dict().items()}, weights)
        states = {"model": network.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        save_checkpoint(checkpoint, config, run, history, states)
        if matplotlib_available("training curve"):
            plot_curve(history, Path(config.output) / CURVE_NAME)

    network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    results = evaluate_cases(network, val_cases, config, device, with_hd95=True)
    data = model_card(config, weights, history, train_cases, val_cases, results, device, command)
    if dataset:
        data["training"]["dataset"] = dataset
    return write_card(card, data)


def set_output_prior(network: nn.Module, prior: float) -> None:
    """Start the output layer's bias at logit(prior), so that the first predictions are mostly
    background (Lin et al. 2017's prior initialisation); speeds up training on small targets."""
    bias = [p for name, p in network.named_parameters() if name.endswith("bias")][-1]
    if bias.shape != (network.out_channels,):
        raise LiteSegError(f"cannot set an output prior: the last bias of the network has shape {tuple(bias.shape)}")
    with torch.no_grad():
        bias.fill_(math.log(prior / (1 - prior)))


def best_epoch(history: Sequence[dict]) -> int:
    """The epoch with the lowest validation loss (the first on ties)."""
    return min(history, key=lambda h: h["val_loss"])["epoch"]


def plot_curve(history: Sequence[dict], path: Path) -> Path:
    """PNG of training loss, validation loss and validation Dice per epoch (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", "training Dice loss"), ("val_loss", "validation Dice loss"), ("val_dice", "validation Dice")):
        axes.plot(epochs, [h[key] for h in history], marker="o", markersize=3, label=label)
    axes.axvline(best_epoch(history), color="grey", linestyle=":", label="best epoch")
    axes.set(xlabel="epoch", ylim=(0, 1), title="Training curve")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100)
    return path


def load_training_slices(cases: Sequence[Case], config: TrainConfig, what: str, bars: Optional[BarFactory]) -> Slices:
    loading = iterate(cases, bars, f"loading {what} cases", "case")
    slices = Slices.concatenate([load_slices(c, config.label_values, config.preprocessing) for c in loading])
    if not slices.foreground.any():
        raise LiteSegError(f"no {what} slice holds any of the label values {list(config.label_values)}")
    return slices


def train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    slices: Slices,
    indices: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    bfloat16: bool,
    bar,
) -> float:
    """One augmented pass over `indices`; the mean training loss per slice. With `bfloat16` the
    forward pass runs under autocast (convolutions in bfloat16, weights and loss in float32)."""
    if bfloat16 and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn("this CPU has no native bfloat16 (AVX512-BF16 or AMX): bfloat16 training is emulated and "
                      "several times slower than --precision float32", stacklevel=2)
    network.train()
    total = 0.0
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        images, labels = random_affine(
            slices.images[batch].to(device).float(), slices.labels[batch].to(device).float(), generator,
            AUGMENTATION["rotation_degrees"], AUGMENTATION["zoom"], AUGMENTATION["shift"],
        )
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = network(images.contiguous(memory_format=torch.channels_last))
        loss = dice_loss(logits.float(), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / (start + len(batch)):.4f}")
    return total / len(indices)


@torch.inference_mode()
def _validation_loss(network: nn.Module, slices: Slices, indices: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Dice loss of the fixed validation slices without augmentation, averaged over batches by size."""
    network.eval()
    total = 0.0
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        logits = network(slices.images[batch].to(device).float())
        total += dice_loss(logits, slices.labels[batch].to(device)).item() * len(batch)
    return total / len(indices)


def evaluate_cases(network: nn.Module, cases: Sequence[Case], config: TrainConfig, device: torch.device, with_hd95: bool) -> list[dict]:
    """Dice (and HD95 in mm, None when a mask is empty) of whole volumes segmented by segment_image."""
    runner = OnDevice(network, device)
    results = []
    for case in cases:
        image, reference = read_case(case, config.label_values, config.preprocessing)
        # read_case has checked the intensities (slice stacks hold no air: their HU start at 0)
        labelmap = segment_image(image, runner, config.preprocessing, threshold=THRESHOLD, backend="eager",
                                 allow_non_ct=True).labelmap
        result = {"patient": case.patient, "image": case.name,
                  "dice": dice(sitk.GetArrayViewFromImage(labelmap), sitk.GetArrayViewFromImage(reference))}
        if with_hd95:  # stacked 2D slices have no spacing: no distance in mm
            distance = math.nan if isinstance(case, SlicePatient) else hausdorff95(labelmap, reference)
            result["hd95_mm"] = None if math.isnan(distance) else distance
        results.append(result)
    return results


def _restore(
    path: Path,
    config: TrainConfig,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: ReduceLROnPlateau,
    generator: torch.Generator,
) -> list[dict]:
    """Load a checkpoint made with the same options and cases; returns its history."""
    state = read_checkpoint(path, config, RESUMABLE_CHANGES, train_cases, val_cases)
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"], generator)
    return state["history"]


def model_card(
    config: TrainConfig,
    weights: Path,
    history: Sequence[dict],
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    results: Sequence[dict],
    device: torch.device,
    command: str,
) -> dict:
    best = best_epoch(history)
    on_training = validates_on_training_cases(config)
    split = split_description(config, train_cases, val_cases)
    distances = [r["hd95_mm"] for r in results if r["hd95_mm"] is not None]
    return {
        **card_header(config, weights),
        "training": {
            "data": [c.describe() for c in train_cases],
            "validation_data": [c.describe() for c in val_cases],
            "split": split,
            "seed": config.seed,
            "epochs": len(history),
            "best_epoch": best,
            "recipe": recipe_description(config),
            "history": list(history),
            "device": str(device),
            "seconds": round(sum(h["seconds"] for h in history), 1),
        },
        "validation": {
            "on_training_cases": on_training,
            "weights": f"best epoch {best} (lowest validation loss)",
            "cases": list(results),
            "mean_dice": float(np.mean([r["dice"] for r in results])),
            "mean_hd95_mm": float(np.mean(distances)) if distances else None,
        },
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "liteseg_version": __version__,
        "notes": config.notes,
    }


def card_header(config: TrainConfig, weights: Path) -> dict:
    """What every card of a slice-by-slice network starts with: names, weights and their checksum,
    input and output conventions, the label (how the Slicer modules and `segment` load it)."""
    label = dict(LABEL_PRESETS[config.label_preset])
    return {
        "name": config.name,
        "version": config.version,
        "title": f"{label['name']} segmentation ({config.preprocessing.modality}), {config.network}",
        "network": config.network,
        "network_options": BINARY_OUTPUT,
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "input": {"axis": "axial slices (from the direction matrix)", "preprocessing": config.preprocessing.to_dict()},
        "output": {"activation": "sigmoid", "threshold": THRESHOLD},
        "labels": [label],
    }


def recipe_description(config: TrainConfig) -> dict:
    """The training recipe of `config`, in words, for the model card."""
    return {
        "optimizer": "NAdam",
        "lr": config.lr,
        "scheduler": f"ReduceLROnPlateau on validation loss: lr x{config.lr_factor} after "
        f"{config.lr_patience} epochs without improvement",
        "loss": "soft Dice on sigmoid(logits), over the batch, smooth 1",
        "augmentation": f"rotation +-{AUGMENTATION['rotation_degrees']:g} deg, zoom +-{AUGMENTATION['zoom']:g}, "
        f"shift +-{AUGMENTATION['shift']:g} of the size (bilinear images, nearest labels)",
        "batch_size": config.batch_size,
        "precision": "float32" if config.precision == "float32"
        else "bfloat16 autocast forward passes, float32 weights, optimiser and loss",
        "output_bias_init": "zero (paper)" if config.foreground_prior is None
        else f"logit({config.foreground_prior:g}) (prior initialisation)",
        "label_values": list(config.label_values),
        "slices": f"every slice with foreground plus {config.empty_slice_ratio:g} empty slices per "
        f"foreground slice, drawn again {config.passes_per_epoch} time(s) per epoch",
    }
