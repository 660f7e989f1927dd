"""Reading, checking and writing images with SimpleITK (NIfTI, NRRD, MHA, DICOM series folders)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import SimpleITK as sitk

from liteseg.errors import ALLOW_NON_CT, InvalidImageError, LiteSegError, Remedy
from liteseg.io.dicom_series import read_dicom_series
from liteseg.io.file_integrity import check_file_complete

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd")


def image_suffix(path: Path) -> str:
    """The image extension of `path`, double suffixes such as `.nii.gz` included ('' if none)."""
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def case_name(path: Path) -> str:
    """File name without its image extension (the folder name for a DICOM series)."""
    suffix = image_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def label_mask(array: np.ndarray, label_values: Iterable[int] | None = None) -> np.ndarray:
    """Boolean foreground of a label array: values in `label_values` (None: nonzero), after
    rounding float label files (often float64 0/1)."""
    if array.dtype.kind == "f":
        array = np.rint(array)
    return array != 0 if label_values is None else np.isin(array, list(label_values))


def read_image(path: str | Path, series: Optional[str] = None, series_file_names: Optional[list[str]] = None) -> sitk.Image:
    """Read an image file, checked complete first (`file_integrity`), or a DICOM series folder
    (`dicom_series`: its only series, or the one with UID `series`, or the files
    `series_file_names` of `dicom_series.series_files` when known; slice positions checked)."""
    path = Path(path)
    if not path.exists():
        raise LiteSegError(f"input not found: {path}")
    try:
        if path.is_dir():
            return read_dicom_series(path, series, series_file_names)
        return _read_file_checked(path)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise InvalidImageError(f"cannot read {path}: {first_line}") from None
    except OSError as error:
        raise InvalidImageError(f"cannot read {path}: {error.strerror or error}") from None


def _read_file_checked(path: Path) -> sitk.Image:
    """ITK's read of `path` with its completeness check (`file_integrity`) running beside it in a
    second thread: both inflate a .nii.gz, and zlib and ITK release the GIL, so on two cores the
    check costs no wall time. A file that fails the check is refused whatever ITK made of it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        check = pool.submit(check_file_complete, path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            check.result()  # a cut or corrupted file: say so rather than ITK's message
            raise
        check.result()
    return image


def check_volume(image: sitk.Image, what: str = "input", single_slice: bool = False) -> None:
    """Refuse images no model can use, with a one-line reason; a single slice only when
    `single_slice` (2D slice-by-slice models segment it; 3D models need a volume)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(vector or colour image); a scalar 3D volume is required"
        )
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 4 and size[3] == 1:
        dimension = 3
    if dimension != 3:
        raise InvalidImageError(f"{what} is {dimension}D with size {size}; a 3D volume is required")
    if min(size[:3]) < 2 and not (single_slice and sorted(size[:3])[1] >= 2):
        kind = "a single slice" if sorted(size[:3])[1] >= 2 else "a line or a point"
        model = "this 3D model needs a volume of at least 2 slices" if kind == "a single slice" else "an image is required"
        raise InvalidImageError(f"{what} has size {size[:3]}: {kind}; {model}")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidImageError(f"{what} contains NaN or infinite voxel values: not an image a model can read; "
                                "check the file or the conversion that produced it")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InvalidImageError(f"{what} is empty: every voxel has the value {low:g}; select the volume that holds the scan")


def as_3d(image: sitk.Image) -> sitk.Image:
    """Drop a trailing singleton 4th dimension (some NIfTI writers add one)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return image[:, :, :, 0]
    return image


def check_ct_intensities(image: sitk.Image, what: str = "input") -> None:
    """Refuse volumes whose intensities cannot be CT in Hounsfield units (air is about -1000 HU)."""
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(array.min()), float(array.max())
    if low > -500 or high < 0 or high > 40000:
        raise InvalidImageError(
            f"{what} does not look like a CT in Hounsfield units (intensities {low:g} to {high:g}; "
            "a CT holds air near -1000 HU): this model needs CT",
            ALLOW_NON_CT,
        )


def check_output_path(path: Path, input_path: Optional[Path] = None, overwrite: bool = False,
                      suffixes: Optional[Iterable[str]] = None) -> None:
    """Refuse, before any work, an output that cannot or must not be written: an unsupported
    extension (`suffixes`, default the image formats; "" allows any), the input itself, an
    existing file without `overwrite`, a folder in its place or a file where a folder must be."""
    allowed = tuple(suffixes) if suffixes is not None else IMAGE_SUFFIXES
    if "" not in allowed and not any(path.name.lower().endswith(s) for s in allowed):
        raise LiteSegError(f"unsupported output extension for {path}; use one of {', '.join(allowed)}")
    if input_path is not None and path.exists() and path.resolve() == Path(input_path).resolve():
        raise LiteSegError("output path is the input path: refusing to overwrite the input")
    if path.is_dir():
        raise LiteSegError(f"output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise LiteSegError(f"output exists, not overwritten: {path}", Remedy("overwrite", effect="to replace it"))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LiteSegError(f"cannot write {path}: {parent} is a file, not a folder")
            break


def write_image(image: sitk.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write atomically: a temporary file beside `path`, renamed over it once complete.

    Never leaves a partial file, and refuses to replace an existing file unless `overwrite`.
    """
    path = Path(path)
    check_output_path(path, overwrite=overwrite)
    suffix = image_suffix(path)
    temporary = path.with_name(f".{case_name(path)}.partial-{os.getpid()}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(temporary), useCompression=True)
        os.replace(temporary, path)
    except OSError as error:
        raise LiteSegError(f"cannot write {path}: {error.strerror or error}") from None
    except RuntimeError as error:
        raise LiteSegError(f"cannot write {path}: {str(error).strip().splitlines()[-1]}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path
