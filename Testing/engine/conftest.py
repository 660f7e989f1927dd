"""Shared fixtures: the real-data folder and synthetic volumes with awkward geometry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from liteseg.io.data import data_root


def real_data(relative: str) -> Path:
    """A file of the shared data folder; skip (or fail in CI) when the folder is absent."""
    path = data_root() / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path} (set LITESEG_DATA)")
        pytest.skip(f"real data folder not found: {path} (set LITESEG_DATA to run this test)")
    return path


@pytest.fixture(scope="session")
def sample_ct_path() -> Path:
    return real_data("ct/pancreas_TS-A/ct.nii.gz")


@pytest.fixture(scope="session")
def sample_pancreas_path() -> Path:
    return real_data("ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz")


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3x3 rotation matrix about a physical axis."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# Direction matrices (columns = index axes in LPS) of the geometries every test must survive.
GEOMETRIES = {
    "axial_identity": np.eye(3),
    "axial_ras_like": np.diag([-1.0, -1.0, 1.0]),
    "coronal_acquired": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # k runs A->P... rows are S
    "sagittal_acquired": np.array([[0, 0, 1.0], [1, 0, 0], [0, -1, 0]]),
    "oblique_20deg": rotation("x", 20) @ rotation("z", 15),
    "left_handed": np.diag([1.0, 1.0, -1.0]),
    "left_handed_permuted": np.array([[0, 1.0, 0], [1, 0, 0], [0, 0, 1]]),
}


def phantom_image(direction: np.ndarray, size=(20, 24, 18), spacing=(0.9, 1.3, 2.5)) -> sitk.Image:
    """An asymmetric HU phantom (air, a body of 40 HU, an off-centre 'organ' of 150 HU) whose
    physical content is the same for every direction matrix: the organ lies in the patient's
    left, anterior, superior part of the body."""
    image = sitk.Image(size, sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    image.SetOrigin((0.0, 0.0, 0.0))
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size])
    image.SetOrigin(tuple(-np.asarray(centre) + np.array([3.0, -7.0, 11.0])))
    points = physical_grid(image)  # (z, y, x, 3) in LPS relative to the image centre
    rel = points - np.array([3.0, -7.0, 11.0])
    body = (rel[..., 0] / 11) ** 2 + (rel[..., 1] / 9) ** 2 + (rel[..., 2] / 20) ** 2 < 1
    organ = ((rel[..., 0] - 4) / 4) ** 2 + ((rel[..., 1] + 3) / 3) ** 2 + ((rel[..., 2] - 5) / 7) ** 2 < 1
    array = np.full(body.shape, -1000, dtype=np.int16)
    array[body] = 40
    array[organ] = 150
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def physical_grid(image: sitk.Image) -> np.ndarray:
    """Physical (LPS) coordinates of every voxel centre, shaped (z, y, x, 3)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


@pytest.fixture()
def one_torch_thread():
    """torch on one thread during the test (small 3D trainings run faster and repeat exactly)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.2"


def write_dicom_series(image: sitk.Image, folder, series_uid: str = SERIES_UID, shift_mm: dict | None = None,
                       description: str = "") -> None:
    """Write a 3D int16 image as one DICOM file per slice with position and orientation tags;
    `shift_mm` moves slice k's position by that many mm along the slice normal."""
    folder.mkdir(exist_ok=True)
    direction = image.GetDirection()
    normal = np.array(direction).reshape(3, 3)[:, 2]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        origin = np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) + (shift_mm or {}).get(k, 0.0) * normal
        tags = {
            "0008|0060": "CT",
            "0008|103e": description,
            "0010|0010": "Phantom^Test",
            "0010|0020": "PHANTOM-1",
            "0020|0052": "1.2.826.0.1.3680043.2.1125.1.9",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}slice{k:03d}.dcm"))
        writer.Execute(slice_)
