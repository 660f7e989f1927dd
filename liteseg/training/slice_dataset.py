"""2D slice datasets: labelled axial slices stored as picture files (the NIH Pancreas-CT JPEGs),
described by a JSON file, plus whole volumes without the target as negative slices.

Every slice is brought into exactly the canonical orientation `geometry.SliceOrientation` gives
a volume (rows anterior -> posterior, columns patient's right -> left) and its grey levels are
mapped back to Hounsfield units, so training sees what inference feeds the network. A patient's
slices are stacked into one volume with the identity direction (whose canonical view is the stack
itself), so the trainer and `liteseg evaluate` segment them through `segment_image` like any CT.

A description (paths starting with `$LITESEG_DATA/` are inside the data folder, others relative
to the description)::

    {"slices": {"manifest": "$LITESEG_DATA/ct/pancreas_NIH-slices/manifest.csv",
                "images": "images", "masks": "masks",
                "file_column": "file", "patient_column": "patient",
                "rows": "posterior_to_anterior", "mask_threshold": 127,
                "grey_levels": {"hu_per_grey": 1.0, "hu_at_grey_0": 0.0}},
     "negative_volumes": [{"image": "...nii.gz", "patient": "...",
                           "grey_levels": {"hu_per_grey": 1.5686, "hu_at_grey_0": -160.0}}]}

`grey_levels` maps a stored grey g to HU = hu_at_grey_0 + hu_per_grey * g; only HU between the
values of the grey levels 0 and 255 are faithful (everything outside was clipped), so a model's
intensity window must lie inside that range.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import SimpleITK as sitk

from liteseg.errors import LiteSegError
from liteseg.io.geometry import slice_orientation
from liteseg.io.images import as_3d, check_ct_intensities, check_volume, read_image
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.training.datasets import Case, cases_from_decathlon, cases_from_pairs_csv, dataset_path

ROW_ORDERS = ("anterior_to_posterior", "posterior_to_anterior")


@dataclass(frozen=True)
class GreyLevels:
    """Linear map of stored 8-bit grey levels to HU: HU = hu_at_grey_0 + hu_per_grey * grey."""

    hu_per_grey: float = 1.0
    hu_at_grey_0: float = 0.0

    @property
    def faithful_hu(self) -> tuple[float, float]:
        """The HU range the grey levels 0-255 hold (values outside it were clipped)."""
        return self.hu_at_grey_0, self.hu_at_grey_0 + 255 * self.hu_per_grey

    def to_hu(self, grey: np.ndarray) -> np.ndarray:
        return (self.hu_at_grey_0 + self.hu_per_grey * grey.astype(np.float32)).astype(np.float32)

    def check_window(self, preprocessing: Preprocessing, what: str) -> None:
        """Refuse a CT window that reaches outside the faithful HU range (its clipped values would
        differ between these grey-level files and a real CT)."""
        low, high = self.faithful_hu
        window = preprocessing.window
        if preprocessing.modality != "CT" or window is None:
            raise LiteSegError(f"{what} holds CT grey levels: it needs a CT preprocessing with a window")
        if window[0] < low - 1e-3 or window[1] > high + 1e-3:
            raise LiteSegError(
                f"{what} holds only {low:g} to {high:g} HU (grey levels 0-255), but the window is "
                f"[{window[0]:g}, {window[1]:g}] HU: choose a window inside that range (e.g. window=(0, 200))"
            )

    @classmethod
    def from_dict(cls, data: dict) -> "GreyLevels":
        return cls(float(data["hu_per_grey"]), float(data["hu_at_grey_0"]))


def read_grey(path: Path) -> np.ndarray:
    """A 2D picture (JPEG, PNG) as a uint8-valued float32 array (rows, cols); colour pictures
    must have equal channels (grey stored as RGB), whose mean is taken."""
    if not path.is_file():
        raise LiteSegError(f"slice file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise LiteSegError(f"cannot read slice {path}: {str(error).strip().splitlines()[-1]}") from None
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetDimension() != 2:
        raise LiteSegError(f"slice {path} is {image.GetDimension()}D; a 2D picture is required")
    if array.ndim == 3:
        if float(np.ptp(array, axis=2).max()) > 8:  # JPEG noise between channels stays far below this
            raise LiteSegError(f"slice {path} is a colour picture; grey levels are required")
        array = array.mean(axis=2)
    return array


def canonical_rows(array: np.ndarray, rows: str) -> np.ndarray:
    """A picture's array with rows running anterior -> posterior (the canonical slice view)."""
    if rows not in ROW_ORDERS:
        raise LiteSegError(f"unknown row order {rows!r}; expected one of {', '.join(ROW_ORDERS)}")
    return array[::-1] if rows == "posterior_to_anterior" else array


def stacked_image(slices: Iterable[np.ndarray], dtype=np.float32) -> sitk.Image:
    """Canonical slices (rows, cols) stacked into a volume whose canonical view is the stack."""
    image = sitk.GetImageFromArray(np.stack([np.asarray(s, dtype=dtype) for s in slices]))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # index x = L, y = P, z = S (LPS): canonical
    return image


@dataclass(frozen=True)
class SliceFile:
    """One labelled slice picture and its mask picture."""

    image: Path
    mask: Path


@dataclass(frozen=True)
class SlicePatient:
    """One patient's labelled slices, read as a stack in HU with its 0/1 reference."""

    patient: str
    slices: tuple[SliceFile, ...]
    grey_levels: GreyLevels
    rows: str
    mask_threshold: float
    train_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.patient} ({len(self.slices)} slices)"

    def describe(self) -> dict:
        return {"patient": self.patient, "slices": [s.image.name for s in self.slices]}

    def read_slice(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice `index` in canonical orientation: (HU float32, 0/1 uint8 mask)."""
        item = self.slices[index]
        hu = self.grey_levels.to_hu(canonical_rows(read_grey(item.image), self.rows))
        mask = canonical_rows(read_grey(item.mask), self.rows) > self.mask_threshold
        if mask.shape != hu.shape:
            raise LiteSegError(f"mask {item.mask.name} is {mask.shape[1]}x{mask.shape[0]}, its slice {hu.shape[1]}x{hu.shape[0]}")
        return hu, mask.astype(np.uint8)

    def read(self, label_values: Iterable[int], preprocessing: Preprocessing) -> tuple[sitk.Image, sitk.Image]:
        """The stacked slices in HU and their reference (`label_values` do not apply: masks are 0/1)."""
        self.grey_levels.check_window(preprocessing, f"the slices of {self.patient}")
        pairs = [self.read_slice(i) for i in range(len(self.slices))]
        shapes = {hu.shape for hu, _ in pairs}
        if len(shapes) > 1:
            raise LiteSegError(f"the slices of {self.patient} differ in size ({sorted(shapes)}): one size per patient is needed")
        image = stacked_image([hu for hu, _ in pairs])
        reference = stacked_image([mask for _, mask in pairs], np.uint8)
        return image, reference


@dataclass(frozen=True)
class NegativeVolume:
    """A volume known to hold none of the target: every canonical slice is a negative slice."""

    patient: str
    image: Path
    grey_levels: Optional[GreyLevels] = None  # None: the volume is in HU
    train_only: bool = True

    @property
    def name(self) -> str:
        return self.image.name

    def describe(self) -> dict:
        return {"patient": self.patient, "image": self.image.name, "label": "none (no target in the volume)"}

    def read(self, label_values: Iterable[int], preprocessing: Preprocessing) -> tuple[sitk.Image, sitk.Image]:
        """The volume in HU (canonical stack) and an all-background reference."""
        what = f"negative volume {self.image.name}"
        volume = as_3d(read_image(self.image))
        check_volume(volume, what)
        canonical = np.ascontiguousarray(slice_orientation(volume).to_canonical(sitk.GetArrayViewFromImage(volume)))
        if self.grey_levels is None:
            check_ct_intensities(volume, what)
            image = stacked_image(canonical)
        else:
            self.grey_levels.check_window(preprocessing, what)
            image = stacked_image(self.grey_levels.to_hu(canonical))
        return image, stacked_image(np.zeros(canonical.shape, np.uint8), np.uint8)


def is_slice_dataset(path: Path) -> bool:
    """True for a JSON file describing a slice dataset (it has a "slices" entry)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        return "slices" in json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def cases_from_slice_dataset(path: str | Path) -> list:
    """One `SlicePatient` per patient of the manifest (in order of first appearance), then one
    `NegativeVolume` per negative volume."""
    path = Path(path)
    try:
        description = json.loads(path.read_text())
        spec = description["slices"]
        manifest = dataset_path(spec["manifest"], path.parent)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise LiteSegError(f"cannot read slice dataset {path}: {error.__class__.__name__} {error}") from None
    if not manifest.is_file():
        from liteseg.io.data import DATA_ENV

        raise LiteSegError(f"slice manifest not found: {manifest} (set {DATA_ENV} to the folder holding ct/)")
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    file_column, patient_column = spec.get("file_column", "file"), spec.get("patient_column", "patient")
    if not rows or not {file_column, patient_column} <= set(rows[0]):
        raise LiteSegError(f"{manifest} needs columns {file_column} and {patient_column}")
    images, masks = manifest.parent / spec.get("images", "images"), manifest.parent / spec.get("masks", "masks")
    grey = GreyLevels.from_dict(spec["grey_levels"]) if "grey_levels" in spec else GreyLevels()
    by_patient: dict[str, list[SliceFile]] = {}
    for row in rows:
        name = row[file_column]
        by_patient.setdefault(row[patient_column], []).append(SliceFile(images / name, masks / name))
    cases: list = [
        SlicePatient(patient, tuple(files), grey, spec.get("rows", "anterior_to_posterior"), float(spec.get("mask_threshold", 127)))
        for patient, files in by_patient.items()
    ]
    for entry in description.get("negative_volumes", []):
        levels = entry.get("grey_levels")
        cases.append(NegativeVolume(entry["patient"], dataset_path(entry["image"], path.parent),
                                    GreyLevels.from_dict(levels) if levels else None))
    return cases


def cases_from_dataset(path: str | Path) -> list[Case]:
    """The cases of any dataset the trainers read: a .csv of image,label[,patient] pairs, a slice
    dataset description .json, or a Medical Segmentation Decathlon folder."""
    path = Path(path)
    if not path.exists():
        raise LiteSegError(f"dataset not found: {path}")
    if path.suffix.lower() == ".csv":
        return cases_from_pairs_csv(path)
    if is_slice_dataset(path):
        return cases_from_slice_dataset(path)
    return cases_from_decathlon(path)
