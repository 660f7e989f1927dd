"""What both self-tests share, without Qt: synthetic-volume geometries, physical-space voxel
comparisons, a study in the subject hierarchy and the real-data folder. Every check raises
AssertionError with the numbers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from . import volume_bridge

Log = Callable[[str], None]


def check(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


# Direction matrices (columns = index axes, in LPS) every run must survive.
GEOMETRIES = {
    "axial": np.diag([-1.0, -1.0, 1.0]),  # the usual RAS-stored CT
    "coronal_acquired": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
    "oblique": rotation("x", 20) @ rotation("z", 15),
    "left_handed": np.diag([1.0, 1.0, -1.0]),
}


def physicalPointsLps(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shaped (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(image.GetSize())), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def foregroundPointsRas(labelmap: sitk.Image) -> np.ndarray:
    """RAS coordinates (N x 3) of the nonzero voxels of a SimpleITK labelmap."""
    kji = np.argwhere(sitk.GetArrayViewFromImage(labelmap) != 0)
    direction = np.array(labelmap.GetDirection()).reshape(3, 3)
    lps = np.asarray(labelmap.GetOrigin()) + (kji[:, ::-1] * np.asarray(labelmap.GetSpacing())) @ direction.T
    return lps @ volume_bridge.LPS_FROM_RAS.T


def voxelIndices(pointsRas: np.ndarray, grid: sitk.Image, what: str) -> set:
    """Voxel indices (i, j, k) of `grid` at RAS points that must be voxel centres of that grid."""
    if len(pointsRas) == 0:
        return set()
    lps = pointsRas @ volume_bridge.LPS_FROM_RAS.T
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    continuous = ((lps - np.asarray(grid.GetOrigin())) @ np.linalg.inv(direction).T) / np.asarray(grid.GetSpacing())
    offGrid = float(np.abs(continuous - np.round(continuous)).max())
    check(offGrid < 1e-3, f"{what}: points are {offGrid:.4f} voxel off the input grid")
    return set(map(tuple, np.round(continuous).astype(int)))


def putInStudy(scene, node, patient: str = "Self-test patient", study: str = "Self-test study") -> int:
    """Place a node in a patient/study branch of the subject hierarchy, as DICOM loading does."""
    shNode = scene.GetSubjectHierarchyNode()
    patientItem = shNode.CreateSubjectItem(shNode.GetSceneItemID(), patient)
    studyItem = shNode.CreateStudyItem(patientItem, study)
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, studyItem)
    else:
        shNode.CreateItem(studyItem, node)
    return studyItem


def dataRootWith(relativePath: str, what: str) -> Optional[Path]:
    """The real-data folder ($LITESEG_DATA) when it holds `relativePath`; else None, after a
    warning "<what> in <folder> (set LITESEG_DATA); skipped" (a module self-test then skips)."""
    from .paths import importEngine

    importEngine()
    from liteseg.io.data import data_root

    root = data_root()
    if not (root / relativePath).is_file():
        logging.warning(f"{what} in {root} (set LITESEG_DATA); skipped")
        return None
    return root
