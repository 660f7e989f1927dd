"""A DICOM series folder read safely: one series, chosen by its UID when the folder holds several,
and its slice positions checked. ITK stacks the files as if they were evenly spaced, so a missing,
duplicated or unevenly spaced slice would put every later slice, and the labelmap drawn on it, in
the wrong place; such a series is refused with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from liteseg.errors import InvalidImageError, Remedy

POSITION_TAG = "0020|0032"  # Image Position (Patient), mm
ORIENTATION_TAG = "0020|0037"  # Image Orientation (Patient): row and column direction cosines
DESCRIPTION_TAG = "0008|103e"  # Series Description
SPACING_TOLERANCE = 0.01  # gaps may differ from the series' step by 1 % (rounding in the tags)


def series_files(folder: Path, series: Optional[str] = None) -> list[str]:
    """The sorted files of the folder's only DICOM series, or of the series `series` (UID).
    Several series and no choice, or an unknown UID: InvalidImageError listing the series."""
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise InvalidImageError(f"no DICOM series found in folder {folder}")
    if series is not None and series not in uids:
        raise InvalidImageError(f"{folder} holds no DICOM series {series}; it holds {_listing(folder, uids)}")
    if series is None and len(uids) > 1:
        raise InvalidImageError(f"{folder} holds {len(uids)} DICOM series, {_listing(folder, uids)}",
                                Remedy("series", "UID", "to choose one"))
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series or uids[0]))


def _listing(folder: Path, uids: Sequence[str]) -> str:
    """'UID (N files, description); ...' for the series of `folder`."""
    entries = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        description = reader.GetMetaData(DESCRIPTION_TAG).strip() if reader.HasMetaDataKey(DESCRIPTION_TAG) else ""
        entries.append(f"{uid} ({len(files)} files{', ' + repr(description) if description else ''})")
    return "; ".join(entries)


def read_dicom_series(folder: Path, series: Optional[str] = None, files: Optional[list[str]] = None) -> sitk.Image:
    """The chosen series as one volume, after `check_slice_positions` on its files' tags; `files`:
    the series' files when the caller has them already (`series_files`), so the folder is not scanned again."""
    reader = sitk.ImageSeriesReader()
    files = files if files is not None else series_files(folder, series)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    positions, orientations = [], []
    for index in range(len(files)):
        if not (reader.HasMetaDataKey(index, POSITION_TAG) and reader.HasMetaDataKey(index, ORIENTATION_TAG)):
            return image  # no geometry tags (e.g. secondary capture): nothing to check against
        positions.append(_numbers(reader.GetMetaData(index, POSITION_TAG)))
        orientations.append(_numbers(reader.GetMetaData(index, ORIENTATION_TAG)))
    check_slice_positions(np.array(positions), np.array(orientations[0]), folder)
    return image


def _numbers(value: str) -> list[float]:
    return [float(v) for v in value.strip().split("\\")]


def check_slice_positions(positions: np.ndarray, orientation: np.ndarray, where: Path | str) -> None:
    """Refuse slice positions (N x 3 mm, in reading order) that are duplicated, have a gap of
    missing slices or are unevenly spaced along the slice normal of `orientation` (6 cosines)."""
    if len(positions) < 2:
        return
    normal = np.cross(orientation[:3], orientation[3:])
    along = positions @ normal
    gaps = np.abs(np.diff(along))
    step = float(np.median(gaps[gaps > 1e-3])) if (gaps > 1e-3).any() else 0.0
    tolerance = max(SPACING_TOLERANCE * step, 1e-3)
    duplicated = np.flatnonzero(gaps <= tolerance)
    if duplicated.size:
        raise InvalidImageError(f"DICOM series in {where} has {duplicated.size} duplicated slice position(s) "
                                f"(first at {along[duplicated[0]]:.2f} mm along the slice normal): remove the copies")
    missing = np.flatnonzero(gaps > 1.5 * step)
    if missing.size:
        k = missing[0]
        raise InvalidImageError(
            f"DICOM series in {where} misses slices: a gap of {gaps[k]:.2f} mm between {along[k]:.2f} and "
            f"{along[k + 1]:.2f} mm where the series steps by {step:.2f} mm ({missing.size} such gap(s))")
    if np.abs(gaps - step).max() > tolerance:
        raise InvalidImageError(
            f"DICOM series in {where} is unevenly spaced (gaps {gaps.min():.3f} to {gaps.max():.3f} mm): "
            "resample it to even spacing (e.g. in 3D Slicer) before segmenting")
