"""Training cases: where they come from, how they are split by patient, and how their slices
are prepared exactly as inference prepares them (same orientation, normalisation and size)."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.errors import LiteSegError
from liteseg.evaluation.metrics import check_same_grid
from liteseg.io.geometry import slice_orientation
from liteseg.io.images import as_3d, case_name, check_ct_intensities, check_volume, label_mask, read_image
from liteseg.segmentation.preprocessing import Preprocessing, resize_slices


@dataclass(frozen=True)
class Case:
    """One labelled volume; `patient` groups the cases that must stay on one side of a split."""

    patient: str
    image: Path
    label: Path
    train_only: bool = False  # never held out for validation (e.g. negative volumes)

    @property
    def name(self) -> str:
        return self.image.name

    def describe(self) -> dict:
        """The case as recorded in a model card (file names only, no local folders)."""
        return {"patient": self.patient, "image": self.image.name, "label": self.label.name}

    def read(self, label_values: Iterable[int], preprocessing: Preprocessing) -> tuple[sitk.Image, sitk.Image]:
        """The checked image and its merged 0/1 reference (uint8, same grid)."""
        image = as_3d(read_image(self.image))
        check_volume(image, f"image of case {self.patient}")
        if preprocessing.modality == "CT":
            check_ct_intensities(image, f"image of case {self.patient}")
        label = as_3d(read_image(self.label))
        check_same_grid(image, label, f"case {self.patient} ({self.image.name} and {self.label.name})")
        reference = sitk.GetImageFromArray(merge_labels(sitk.GetArrayViewFromImage(label), label_values))
        reference.CopyInformation(image)
        return image, reference


def case_from_pair(image: str | Path, label: str | Path, patient: str | None = None) -> Case:
    """A single image/label pair (the patient id defaults to the image's case name)."""
    image, label = Path(image), Path(label)
    for path in (image, label):
        if not path.exists():
            raise LiteSegError(f"training file not found: {path}")
    return Case(patient or case_name(image), image, label)


def cases_from_decathlon(folder: str | Path) -> list[Case]:
    """The "training" list of a Medical Segmentation Decathlon folder's dataset.json."""
    folder = Path(folder)
    manifest = folder / "dataset.json"
    try:
        entries = json.loads(manifest.read_text())["training"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise LiteSegError(f"cannot read the training list of {manifest}: {error}") from None
    try:
        return [case_from_pair(folder / entry["image"], folder / entry["label"]) for entry in entries]
    except (KeyError, TypeError):
        raise LiteSegError(f"{manifest}: each training entry needs 'image' and 'label'") from None


DATA_PREFIX = "$LITESEG_DATA/"


def dataset_path(cell: str, folder: Path) -> Path:
    """A path written in a dataset file: `$LITESEG_DATA/...` is inside the data folder
    (`data.data_root`), other relative paths are relative to `folder` (the dataset file's folder)."""
    cell = cell.strip()
    if cell.startswith(DATA_PREFIX):
        from liteseg.io.data import data_root

        return data_root() / cell[len(DATA_PREFIX):]
    return folder / cell


def cases_from_pairs_csv(path: str | Path) -> list[Case]:
    """Cases from a CSV with columns image,label[,patient]; relative paths are relative to the
    CSV, paths starting with `$LITESEG_DATA/` are inside the data folder."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise LiteSegError(f"cannot read {path}: {error}") from None
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise LiteSegError(f"{path} needs a header with columns image,label (and optionally patient)")
    return [
        case_from_pair(dataset_path(row["image"], path.parent), dataset_path(row["label"], path.parent), (row.get("patient") or "").strip() or None)
        for row in rows
    ]


def split_by_patient(
    cases: Sequence[Case], val_fraction: float = 0.3, seed: int = 0, val_patients: Sequence[str] = ()
) -> tuple[list[Case], list[Case]]:
    """(training, validation) cases with every patient on one side, the same for the same seed.

    `val_patients` names the held-out patients explicitly (e.g. one fold of a leave-one-patient-out
    evaluation) and overrides `val_fraction`; `val_fraction` 0 validates on the training cases
    themselves (an optimistic validation). Cases marked `train_only` (negative volumes) are
    always training cases and never drawn for validation.
    """
    eligible = [case for case in cases if not case.train_only]
    patients = sorted({case.patient for case in eligible})
    if val_patients:
        unknown = sorted(set(val_patients) - set(patients))
        if unknown:
            raise LiteSegError(f"validation patient(s) {', '.join(unknown)} not in the data set (patients: {', '.join(patients)})")
        if set(patients) <= set(val_patients):
            raise LiteSegError("every patient is a validation patient: nothing is left to train on")
        held_out = set(val_patients)
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise LiteSegError(f"validation fraction must be in [0, 1), got {val_fraction}")
        if val_fraction == 0.0:
            return list(cases), eligible
        if len(patients) < 2:
            raise LiteSegError(
                f"cannot hold out validation patients: only {len(patients)} patient; use a validation fraction of 0"
            )
        random.Random(seed).shuffle(patients)
        n_val = min(max(round(len(patients) * val_fraction), 1), len(patients) - 1)
        held_out = set(patients[:n_val])
    return ([c for c in cases if c.train_only or c.patient not in held_out],
            [c for c in eligible if c.patient in held_out])


def merge_labels(array: np.ndarray, label_values: Iterable[int]) -> np.ndarray:
    """uint8 mask: 1 where the (rounded, for float label files) value is one of `label_values`."""
    return label_mask(array, label_values).astype(np.uint8)


def read_case(case: Case, label_values: Iterable[int], preprocessing: Preprocessing) -> tuple[sitk.Image, sitk.Image]:
    """The case's image and its 0/1 reference on the same grid (volume cases, slice-dataset
    patients and negative volumes each read themselves)."""
    return case.read(label_values, preprocessing)


@dataclass
class Slices:
    """Prepared axial slices held in memory: images float16 and labels uint8, (N, 1, H, W)."""

    images: torch.Tensor
    labels: torch.Tensor

    @property
    def foreground(self) -> torch.Tensor:
        """Boolean (N,): which slices contain foreground (`any` of a uint8 tensor is uint8, whose
        `~` is a bitwise not, so the comparison makes it bool)."""
        return self.labels.flatten(1).amax(dim=1) > 0

    @classmethod
    def concatenate(cls, parts: Sequence["Slices"]) -> "Slices":
        return cls(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def load_slices(case: Case, label_values: Iterable[int], preprocessing: Preprocessing) -> Slices:
    """A case's canonical axial slices, normalised and resized as inference does (labels nearest)."""
    image, reference = read_case(case, label_values, preprocessing)
    orientation = slice_orientation(image)
    volume = preprocessing.normalize(orientation.to_canonical(sitk.GetArrayViewFromImage(image)))
    labels = orientation.to_canonical(sitk.GetArrayViewFromImage(reference))
    images = resize_slices(torch.from_numpy(np.ascontiguousarray(volume))[:, None], preprocessing.slice_size)
    masks = resize_slices(torch.from_numpy(np.array(labels))[:, None].float(),
                          preprocessing.slice_size, labels=True)
    return Slices(images.to(torch.float16), masks.to(torch.uint8))


def select_slices(slices: Slices, empty_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Shuffled indices: every foreground slice plus `empty_ratio` empty slices per foreground slice."""
    foreground = slices.foreground
    full = torch.nonzero(foreground).flatten()
    empty = torch.nonzero(~foreground).flatten()
    n_empty = min(len(empty), round(empty_ratio * len(full)))
    chosen = torch.cat([full, empty[torch.randperm(len(empty), generator=generator)[:n_empty]]])
    return chosen[torch.randperm(len(chosen), generator=generator)]
