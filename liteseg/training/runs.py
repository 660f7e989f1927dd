"""What every headless training run shares: option checks, the output files (refusing to overwrite
an earlier run), the patient split, the device, checkpoints (written atomically with the random
state, checked on resume) and the epoch bars."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch

from liteseg.errors import LiteSegError, Remedy
from liteseg.progress import Bar, BarFactory
from liteseg.training.datasets import Case, split_by_patient

CHECKPOINT_NAME = "checkpoint.pt"


def common_problems(config) -> list[tuple[bool, str]]:
    """(failed, message) checks of the options every trainer's config has."""
    return [
        (not config.label_values, "label values must name at least one value"),
        (config.device not in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {config.device!r}"),
        (not config.name or Path(config.name).name != config.name, f"model name must be a file name, got {config.name!r}"),
        (config.num_threads is not None and config.num_threads < 1, f"threads must be at least 1, got {config.num_threads}"),
    ]


def validates_on_training_cases(config) -> bool:
    """True when the run has no held-out patients (its validation figures are optimistic)."""
    return not config.val_patients and config.val_fraction == 0


def split_description(config, train_cases: Sequence[Case], val_cases: Sequence[Case]) -> str:
    """How a run split its cases, in words, for the model card."""
    if validates_on_training_cases(config):
        return "none (validation fraction 0): validated on the training cases, so the validation figures are optimistic"
    rule = (f"held-out patients {', '.join(config.val_patients)}" if config.val_patients
            else f"seed {config.seed}, validation fraction {config.val_fraction}")
    return (
        f"by patient ({rule}): {len({c.patient for c in train_cases})} training patients ({len(train_cases)} cases), "
        f"{len({c.patient for c in val_cases})} validation patients ({len(val_cases)} cases)"
    )


def raise_first_problem(problems: Sequence[tuple[bool, str]]) -> None:
    """Raise LiteSegError with the message of the first failed check."""
    for failed, message in problems:
        if failed:
            raise LiteSegError(message)


def config_to_dict(config) -> dict:
    """JSON-compatible copy of a trainer config (lists for tuples), as stored in checkpoints and cards."""
    return json.loads(json.dumps({**asdict(config), "output": str(config.output)}))


def output_files(output: Path, name: str, resume: bool) -> tuple[Path, Path, Path]:
    """(checkpoint, weights, card) paths in `output`, created if needed; without `resume`, a
    folder already holding any of them is refused (nothing of an earlier run is overwritten)."""
    output.mkdir(parents=True, exist_ok=True)
    files = output / CHECKPOINT_NAME, output / f"{name}.pt", output / f"{name}.json"
    existing = [p.name for p in files if p.exists()]
    if existing and not resume:
        raise LiteSegError(f"{output} already holds {', '.join(existing)}: choose another output folder, or resume",
                          Remedy("resume", effect="to continue it"))
    return files


class Run(NamedTuple):
    """What every training run starts from."""

    checkpoint: Path
    weights: Path
    card: Path
    device: torch.device
    train_cases: list[Case]
    val_cases: list[Case]
    generator: torch.Generator


def start_run(config, cases: Sequence[Case], resume: bool) -> Run:
    """Check the config, claim the output files, set threads and device, split the cases by
    patient and seed torch (the same start for every trainer, so runs and resumes repeat)."""
    config.check()
    files = output_files(Path(config.output), config.name, resume)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    train_cases, val_cases = split_by_patient(cases, config.val_fraction, config.seed, config.val_patients)
    torch.manual_seed(config.seed)
    return Run(*files, device, train_cases, val_cases, torch.Generator().manual_seed(config.seed))


def read_checkpoint(path: Path, config, resumable: Sequence[str], train_cases: Sequence[Case],
                    val_cases: Sequence[Case]) -> dict:
    """A checkpoint's contents, refused unless it was made with the same options (except those
    in `resumable`) and the same training and validation cases."""
    if not path.is_file():
        raise LiteSegError(f"nothing to resume: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise LiteSegError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    saved, current = state["config"], config.to_dict()
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in current.items() if k not in resumable and saved.get(k) != v]
    if changed:
        raise LiteSegError(f"cannot resume {path}: options changed since the checkpoint: {'; '.join(changed)}")
    if state["train_cases"] != [c.describe() for c in train_cases] or state["val_cases"] != [c.describe() for c in val_cases]:
        raise LiteSegError(f"cannot resume {path}: the training or validation cases differ from the checkpoint's")
    return state


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LiteSegError("device cuda requested but no CUDA GPU is available")
    return torch.device(device)


def epoch_bar(total: int, description: str, bars: Optional[BarFactory]) -> Optional[Bar]:
    """A bar of `total` batches from `bars`, or None without one."""
    return bars(total, description, "batch") if bars is not None else None


def rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    """Put back the random states saved by `rng_state`."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temporary file renamed over `path`, so an interruption never leaves half a file."""
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_checkpoint(path: Path, config, run: Run, history: list[dict], states: dict[str, dict]) -> None:
    """The run's checkpoint after the last epoch of `history`: its options, cases, history and
    random state, with `states` (the trainer's network and optimiser state dicts by key)."""
    save_atomic(
        {
            "config": config.to_dict(),
            "train_cases": [c.describe() for c in run.train_cases],
            "val_cases": [c.describe() for c in run.val_cases],
            "epoch": history[-1]["epoch"],
            "history": history,
            **states,
            "rng": rng_state(run.generator, run.device),
        },
        path,
    )
