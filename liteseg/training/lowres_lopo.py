"""Leave-one-patient-out evaluation of LowRes: `liteseg train --method lowres --leave-one-patient-out`.

One fold per patient, trained in `<output>/folds/<patient>/` with that patient held out, then
the final weights trained on every patient in `<output>/`. Each fold's weights detect on its
held-out cases (`score_detection`, the inference path); those detections are pooled into one
FROC curve (`<output>/<name>_lopo_froc.csv`, `.png`) and summarised in the final model card under
`leave_one_patient_out`. Every run resumes from its own checkpoint with `resume`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from liteseg.detection.lowres import load_detector
from liteseg.errors import LiteSegError
from liteseg.evaluation.froc import froc_curve, plot_froc, write_froc_csv
from liteseg.extras import matplotlib_available
from liteseg.io.modelcard import ModelCard, write_card
from liteseg.progress import BarFactory
from liteseg.training.datasets import Case
from liteseg.training.lowres_trainer import (
    HeldOutScores,
    LowResTrainConfig,
    lowres_detector,
    score_detection,
    train_lowres,
)
from liteseg.training.runs import CHECKPOINT_NAME

FOLDS_DIR = "folds"
FROC_SUFFIX = "_lopo_froc"  # after the model name: the files can sit beside the card in Resources/Models


def fold_configs(config: LowResTrainConfig, cases: Sequence[Case]) -> list[tuple[str, LowResTrainConfig]]:
    """(patient, options of the fold holding that patient out), in patient order."""
    if config.val_patients:
        raise LiteSegError("leave-one-patient-out chooses the held-out patients itself: val_patients must be empty")
    patients = sorted({case.patient for case in cases})
    if len(patients) < 2:
        raise LiteSegError(f"leave-one-patient-out needs at least 2 patients, got {len(patients)}")
    return [(p, replace(config, output=Path(config.output) / FOLDS_DIR / p, val_patients=(p,))) for p in patients]


def _resumable(config: LowResTrainConfig, resume: bool) -> bool:
    return resume and (Path(config.output) / CHECKPOINT_NAME).is_file()


def train_lowres_lopo(config: LowResTrainConfig, cases: Sequence[Case], command: str, bars: Optional[BarFactory] = None,
                      resume: bool = False) -> Path:
    """Train every fold, then the final weights on all patients; returns the final card's path,
    which holds the pooled held-out figures (see the module docstring)."""
    pooled, folds = HeldOutScores(), []
    for patient, fold in fold_configs(config, cases):
        card_path = train_lowres(fold, cases, command, bars, _resumable(fold, resume))
        network, _ = load_detector(ModelCard.read(card_path))
        scores = score_detection([c for c in cases if c.patient == patient], fold, lowres_detector(network, fold))
        pooled.add(scores)
        folds.append({"held_out_patient": patient, "card": str(card_path.relative_to(config.output)),
                      **scores.summary(), "cases": scores.cases})

    final = replace(config, val_patients=(), val_fraction=0.0)
    card_path = train_lowres(final, cases, command, bars, _resumable(final, resume))
    curve = froc_curve(pooled.scans)
    output = Path(config.output)
    froc_csv = write_froc_csv(curve, output / f"{config.name}{FROC_SUFFIX}.csv")
    froc_png = plot_froc(curve, output / f"{config.name}{FROC_SUFFIX}.png") if matplotlib_available("FROC plot") else None
    data = json.loads(card_path.read_text())
    data["leave_one_patient_out"] = {
        "method": "one fold per patient, trained with the same options on the other patients; the fold's last-epoch "
        "weights detect on the held-out patient's cases (detect_image, threshold 0.5, margin 1); detections of all "
        "folds pooled into one FROC curve",
        "patients": len(folds),
        "scans": curve.n_scans,
        "objects": curve.n_objects,
        **{f"pooled_{k}": v for k, v in pooled.summary().items()},
        "objects_hit": sum(row["objects_hit"] for row in pooled.cases),
        "froc_csv": froc_csv.name,
        "froc_png": froc_png.name if froc_png else None,
        "folds": folds,
        "limits": f"{curve.n_objects} objects in {curve.n_scans} scans of {len(folds)} patients: each object moves "
        f"the recall by {1 / curve.n_objects:.2f}. The folds estimate the training recipe, not these exact weights "
        "(which saw every patient), and say nothing about other scanners, lesion types or full-length CT volumes",
    }
    return write_card(card_path, data)
