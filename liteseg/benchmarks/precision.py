"""The inference backends side by side on real cases: each one's time and Dice, and the change of
Dice against PyTorch float32 ("fast"), the accuracy rule a backend must meet to be chosen
(at most 0.005 on every held-out patient of the bundled pancreas model and on the sample CT)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import SimpleITK as sitk
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard

CHECK_BACKENDS = ("fast", "openvino", "openvino-bf16", "openvino-int8")  # the first is the float32 reference
MAX_DICE_CHANGE = 0.005
NIH_SLICES = Path(__file__).resolve().parents[2] / "Resources" / "Training" / "nih_pancreas_slices.json"


@dataclass
class BackendRow:
    backend: str
    skipped: str = ""  # why the backend did not run here
    patient_dice: dict[str, float] = field(default_factory=dict)  # held-out patient -> Dice
    sample_dice: Optional[float] = None
    seconds: float = 0.0  # segmenting the held-out slices and the sample CT


def backend_rows(network: nn.Module, card: ModelCard, ct_path: Path, reference_path: Path, slices: Path = NIH_SLICES,
                 backends: Sequence[str] = CHECK_BACKENDS) -> tuple[list[BackendRow], str]:
    """One row per backend (the first is the reference): Dice of `network` on its card's held-out
    patients (when the data folder has their slices) and on the sample CT (the card's settings);
    with a note saying what was left out."""
    from liteseg.evaluation.metrics import dice
    from liteseg.evaluation.slices import evaluate_slice_patients, held_out_patients
    from liteseg.io.images import read_image
    from liteseg.segmentation.inference import segment_image, with_card_defaults
    from liteseg.segmentation.runtime import make_runner
    from liteseg.training.slice_dataset import cases_from_dataset

    ct, reference = read_image(ct_path), sitk.GetArrayFromImage(read_image(reference_path)) > 0.5
    note, cases, patients = "", None, held_out_patients(card)
    try:
        cases = cases_from_dataset(slices)
        cases[0].read((1,), card.preprocessing)
    except (LiteSegError, IndexError) as error:
        note = f"held-out patients not checked: {error}"
    rows = []
    for backend in backends:
        row = BackendRow(backend)
        rows.append(row)
        try:
            make_runner(network, backend)  # converts (and caches) before the clock starts
        except LiteSegError as error:
            row.skipped = error.message
            continue
        started = time.perf_counter()
        if cases is not None:
            row.patient_dice = {r.patient: r.dice for r in evaluate_slice_patients(cases, patients, network, card, backend=backend)}
        labels = segment_image(ct, network, card.preprocessing, **with_card_defaults(card, {"backend": backend})).labelmap
        row.sample_dice = dice(sitk.GetArrayViewFromImage(labels) > 0, reference)
        row.seconds = time.perf_counter() - started
    return rows, note


def largest_change(row: BackendRow, reference: BackendRow) -> float:
    """The largest |Dice change| of `row` against `reference` over the held-out patients and the sample CT."""
    changes = [abs(d - reference.patient_dice[p]) for p, d in row.patient_dice.items()]
    return max(changes + [abs(row.sample_dice - reference.sample_dice)])


def format_backend_table(rows: Sequence[BackendRow], note: str = "") -> str:
    reference = rows[0]
    header = (f"{'backend':<14} {'s':>7} {'held-out Dice':>13} {'largest change':>14} {'sample CT Dice':>14} "
              f"{'change':>7}  within {MAX_DICE_CHANGE}")
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.skipped:
            lines.append(f"{row.backend:<14} not run: {row.skipped}")
            continue
        changes = [abs(d - reference.patient_dice[p]) for p, d in row.patient_dice.items()]
        mean = sum(row.patient_dice.values()) / len(row.patient_dice) if row.patient_dice else float("nan")
        sample_change = row.sample_dice - reference.sample_dice
        largest = largest_change(row, reference)
        lines.append(f"{row.backend:<14} {row.seconds:>7.2f} {mean:>13.4f} {max(changes, default=float('nan')):>14.4f} "
                     f"{row.sample_dice:>14.4f} {sample_change:>+7.4f}  {'yes' if largest <= MAX_DICE_CHANGE else 'NO'}")
    if reference.patient_dice:
        lines.append(f"held-out patients: {', '.join(reference.patient_dice)}")
    if note:
        lines.append(note)
    return "\n".join(lines)
