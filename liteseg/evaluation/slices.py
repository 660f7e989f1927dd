"""Held-out figures of a 2D model: per-patient Dice on a slice dataset, and whole-volume checks
on the sample CT (3D Dice, and the volume labelled where there is no pancreas).

Everything runs through `segment_image`, the inference path of `liteseg segment` and Slicer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.evaluation.metrics import dice
from liteseg.io.geometry import slice_orientation
from liteseg.io.modelcard import ModelCard, write_card
from liteseg.progress import ProgressCallback
from liteseg.segmentation.inference import segment_image
from liteseg.segmentation.localisation import Localisation
from liteseg.training.slice_dataset import SlicePatient

# Slices at least this far (mm) from every reference slice count as "a CT part without pancreas".
FAR_FROM_TARGET_MM = 30.0
MAX_LOCALISATION_LOSS = 0.01


@dataclass
class PatientDice:
    """Dice pooled over one patient's slices (all pixels of all its slices as one mask)."""

    patient: str
    slices: int
    dice: float
    pred_pixels: int
    ref_pixels: int


def held_out_patients(card: ModelCard) -> list[str]:
    """The patients a model card says were held out for validation (never trained on)."""
    training = card.data.get("training", {})
    if card.data.get("validation", {}).get("on_training_cases", True) or "validation_data" not in training:
        raise LiteSegError(f"model card {card.path} names no held-out patients: give the patients to evaluate")
    return sorted({entry["patient"] for entry in training["validation_data"]})


def evaluate_slice_patients(
    cases: Sequence, patients: Sequence[str], network: nn.Module, card: ModelCard,
    progress: Optional[ProgressCallback] = None, backend: str = "auto",
) -> list[PatientDice]:
    """Per-patient pooled Dice of `patients` (slice-dataset cases), whole slices segmented by
    `segment_image` with the card's threshold and no localisation (the slices are not contiguous),
    the network executed by `backend` (see `liteseg.segmentation.runtime`)."""
    by_patient = {case.patient: case for case in cases if isinstance(case, SlicePatient)}
    missing = sorted(set(patients) - set(by_patient))
    if missing:
        raise LiteSegError(f"patient(s) {', '.join(missing)} not in the slice dataset")
    rows = []
    for number, patient in enumerate(patients):
        image, reference = by_patient[patient].read((1,), card.preprocessing)
        # The slices hold clip(HU, 0, 255): no air, so the CT check does not apply.
        labels = segment_image(image, network, card.preprocessing, threshold=card.threshold,
                               allow_non_ct=True, backend=backend).labelmap
        pred, ref = sitk.GetArrayViewFromImage(labels) > 0, sitk.GetArrayViewFromImage(reference) > 0
        rows.append(PatientDice(patient, pred.shape[0], dice(pred, ref), int(pred.sum()), int(ref.sum())))
        if progress is not None:
            progress((number + 1) / len(patients), f"patient {patient}")
    return rows


@dataclass
class VolumeCheck:
    """One whole-volume run: 3D Dice and what was labelled far from the reference pancreas."""

    setting: str
    localised: bool
    dice: float
    labelled_ml: float
    far_slices: int
    far_ml: float
    seconds: float


def far_slice_mask(reference: sitk.Image, distance_mm: float = FAR_FROM_TARGET_MM) -> np.ndarray:
    """Boolean per canonical slice: at least `distance_mm` from every slice holding the reference."""
    orientation = slice_orientation(reference)
    canonical = orientation.to_canonical(sitk.GetArrayViewFromImage(reference)) > 0.5
    spacing = orientation.canonical_spacing(reference)[0]
    filled = np.flatnonzero(canonical.any(axis=(1, 2)))
    if filled.size == 0:
        raise LiteSegError("the reference holds no foreground: cannot tell where the target is")
    positions = np.arange(canonical.shape[0]) * spacing
    nearest = np.min(np.abs(positions[:, None] - positions[filled][None, :]), axis=1)
    return nearest >= distance_mm


def check_whole_volume(
    ct: sitk.Image, reference: sitk.Image, network: nn.Module, card: ModelCard, localisation: Optional[Localisation],
    backend: str = "auto",
) -> VolumeCheck:
    """Segment `ct` with `localisation` (None: the whole volume) and the card's threshold, and measure it."""
    result = segment_image(ct, network, card.preprocessing, threshold=card.threshold, localisation=localisation,
                           backend=backend)
    orientation = slice_orientation(ct)
    predicted = orientation.to_canonical(sitk.GetArrayViewFromImage(result.labelmap)) > 0
    expected = orientation.to_canonical(sitk.GetArrayViewFromImage(reference)) > 0.5
    far = far_slice_mask(reference)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    setting = "whole volume"
    if localisation:
        first_look = f", {localisation.model}" if localisation.model else ""
        setting = f"localised ({localisation.step_mm:g} mm, {localisation.margin_px} px{first_look})"
    return VolumeCheck(setting, localisation is not None, dice(predicted, expected), float(predicted.sum()) * voxel_ml, int(far.sum()),
                       float(predicted[far].sum()) * voxel_ml, sum(result.seconds.values()))


def localisation_keeps_dice(localised: VolumeCheck, whole: VolumeCheck) -> bool:
    """The rule for localisation by default: it lowers Dice by at most 0.01 against the whole volume."""
    return localised.dice >= whole.dice - MAX_LOCALISATION_LOSS


def record_evaluation(card: ModelCard, dataset: str, rows: Sequence[PatientDice], checks: Sequence[VolumeCheck],
                      localisation: Optional[Localisation], command: str) -> dict:
    """Write the held-out figures and the sample-CT checks into the card's "evaluation" section;
    with a (localised, whole-volume) pair of checks, localisation becomes the card's default
    when `localisation_keeps_dice`, and is removed otherwise. Returns the card's new data."""
    values = np.array([r.dice for r in rows])
    data = dict(card.data)
    evaluation = {
        "held_out_slices": {
            "dataset": dataset,
            "dice": "pooled over each patient's slices (all pixels of its slices as one mask), whole slices, no localisation",
            "patients": [asdict(r) for r in rows],
            "mean_dice": float(values.mean()), "std_dice": float(values.std()), "median_dice": float(np.median(values)),
            "min_dice": float(values.min()), "max_dice": float(values.max()),
        },
        "command": command,
        "date": date.today().isoformat(),
    }
    if checks:
        evaluation["sample_ct"] = {
            "image": "ct/pancreas_TS-A/ct.nii.gz (TotalSegmentator example CT, 3 mm; never trained on)",
            "reference": "TotalSegmentator v1's predicted pancreas (a model prediction, not a manual label)",
            "far_ml": f"volume labelled in slices at least {FAR_FROM_TARGET_MM:g} mm from every reference slice "
                      "(chest and pelvis: a CT part without pancreas)",
            "runs": [asdict(c) for c in checks],
        }
    data["evaluation"] = evaluation
    inference = dict(data.get("inference", {}))
    inference.pop("localisation", None)
    if localisation is not None and len(checks) == 2:
        localised, whole = checks
        change = localised.dice - whole.dice
        if localisation_keeps_dice(localised, whole):
            first_look = f"the model {localisation.model}" if localisation.model else "this model"
            inference["localisation"] = {
                "step_mm": localisation.step_mm, "margin_px": localisation.margin_px,
                **({"model": localisation.model} if localisation.model else {}),
                "check": f"on by default: against whole-volume inference it changed the sample CT's Dice by {change:+.4f} "
                         f"({localised.dice:.4f} vs {whole.dice:.4f}; liteseg evaluate --record, {evaluation['date']}). "
                         f"A coarse pass of {first_look} on slices about step_mm apart, then only a region around each "
                         "connected part of what it finds: its slices widened by one step, its box by margin_px pixels "
                         "of this model's slice grid.",
            }
    if inference:
        data["inference"] = inference
    else:
        data.pop("inference", None)
    write_card(card.path, data)
    return data


def format_patient_table(rows: Sequence[PatientDice]) -> str:
    """Per-patient lines and the mean, standard deviation, median and range of the Dice."""
    if not rows:
        raise LiteSegError("no patients to show")
    width = max(len("patient"), *(len(r.patient) for r in rows))
    lines = [f"{'patient':<{width}}  {'slices':>6}  {'dice':>6}  {'pred_px':>8}  {'ref_px':>8}"]
    lines += [f"{r.patient:<{width}}  {r.slices:>6d}  {r.dice:>6.4f}  {r.pred_pixels:>8d}  {r.ref_pixels:>8d}" for r in rows]
    values = np.array([r.dice for r in rows])
    lines.append(f"per-patient Dice over {len(rows)} held-out patient(s): mean {values.mean():.4f} +- {values.std():.4f}, "
                 f"median {np.median(values):.4f}, range {values.min():.4f}-{values.max():.4f}")
    return "\n".join(lines)


def format_volume_table(checks: Sequence[VolumeCheck]) -> str:
    lines = [f"{'sample CT':<24}  {'Dice 3D':>7}  {'labelled ml':>11}  {'ml >= 30 mm from pancreas':>26}  {'s':>6}"]
    for c in checks:
        lines.append(f"{c.setting:<24}  {c.dice:>7.4f}  {c.labelled_ml:>11.2f}  "
                     f"{c.far_ml:>12.2f} ({c.far_slices} slices)  {c.seconds:>6.2f}")
    return "\n".join(lines)
