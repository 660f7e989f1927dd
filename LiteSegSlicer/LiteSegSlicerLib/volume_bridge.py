"""Exact conversion between Slicer scalar volume nodes and SimpleITK images.

Slicer keeps the geometry of a volume in its IJK-to-RAS matrix (voxel index (i, j, k) to
millimetres in the patient's Right-Anterior-Superior frame); the voxel array of its image data is
stored k-slowest, so `slicer.util.arrayFromVolume` returns a (k, j, i) view of VTK's memory.
SimpleITK keeps origin, spacing and direction in LPS (Left-Posterior-Superior) and its arrays are
(k, j, i) too. So the voxels are copied as they are and only the geometry is converted:
LPS = diag(-1, -1, 1) RAS, applied to the origin and to the direction columns.

The image data's extent need not start at 0: Slicer's IJK is the image data's point index, so the
first voxel's position is IJKToRAS @ (extent start). A volume under a parent transform is refused
unless asked otherwise: its IJK-to-RAS matrix is then not where it is shown.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

_NOT_SCALAR = ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")


def nodeLabel(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "(unnamed node)"


def checkScalarVolume(volumeNode, what: str = "input volume") -> None:
    """Raise ValueError unless `volumeNode` is a scalar volume node holding voxels."""
    if volumeNode is None:
        raise ValueError(f"no {what}: select a scalar volume (for example a CT)")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or any(volumeNode.IsA(c) for c in _NOT_SCALAR):
        raise ValueError(
            f"{what} {nodeLabel(volumeNode)} is a {volumeNode.GetClassName()}: a scalar volume is required "
            "(vector, colour, tensor and diffusion volumes cannot be segmented)"
        )
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetNumberOfPoints() == 0 or imageData.GetPointData().GetScalars() is None:
        raise ValueError(f"{what} {nodeLabel(volumeNode)} holds no voxels")
    components = imageData.GetNumberOfScalarComponents()
    if components != 1:
        raise ValueError(
            f"{what} {nodeLabel(volumeNode)} has {components} components per voxel: a scalar volume is required"
        )


def ijkToRas(volumeNode) -> np.ndarray:
    """The node's IJK-to-RAS matrix (4x4), without any parent transform."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def transformToWorld(volumeNode) -> Optional[np.ndarray]:
    """The 4x4 matrix of the node's parent transforms (None without parent transform).

    Raises ValueError for a non-linear (warping) transform, which no matrix describes.
    """
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is None:
        return None
    if not transformNode.IsTransformToWorldLinear():
        raise ValueError(
            f"volume {nodeLabel(volumeNode)} is under the non-linear transform {nodeLabel(transformNode)}: "
            "harden the transform first (Data module: right-click the volume, Harden transform)"
        )
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def geometryFromIjkToRas(matrix: np.ndarray, extentStart=(0, 0, 0)) -> tuple[tuple, tuple, tuple]:
    """SimpleITK (origin, spacing, direction) in LPS of the grid that `matrix` maps from IJK to RAS."""
    matrix = np.asarray(matrix, dtype=float)
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate IJK-to-RAS matrix (a zero voxel spacing): {matrix.tolist()}")
    directionRas = linear / spacing
    originRas = matrix[:3, :3] @ np.asarray(extentStart, dtype=float) + matrix[:3, 3]
    direction = LPS_FROM_RAS @ directionRas
    origin = LPS_FROM_RAS @ originRas
    return tuple(float(v) for v in origin), tuple(float(v) for v in spacing), tuple(float(v) for v in direction.ravel())


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """IJK-to-RAS matrix (4x4) of a 3D SimpleITK image's grid."""
    if image.GetDimension() != 3:
        raise ValueError(f"a 3D image is required, got {image.GetDimension()}D")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_FROM_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return matrix


def volumeToImage(volumeNode, applyParentTransform: bool = False, what: str = "input volume") -> sitk.Image:
    """A SimpleITK copy of a scalar volume node: same voxels, same physical geometry.

    A volume under a parent transform raises ValueError, unless `applyParentTransform`: then the
    image has the geometry the volume is shown with (world coordinates), for linear transforms
    only. The node itself is never modified.
    """
    checkScalarVolume(volumeNode, what)
    import slicer.util

    matrix = ijkToRas(volumeNode)
    toWorld = transformToWorld(volumeNode)
    if toWorld is not None:
        if not applyParentTransform:
            transformNode = volumeNode.GetParentTransformNode()
            raise ValueError(
                f"{what} {nodeLabel(volumeNode)} is under the transform {nodeLabel(transformNode)}: harden the "
                "transform (Data module: right-click the volume, Harden transform) or ask to apply it"
            )
        matrix = toWorld @ matrix
    extent = volumeNode.GetImageData().GetExtent()
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)  # a view of VTK memory: copy
    image = sitk.GetImageFromArray(array, isVector=False)
    origin, spacing, direction = geometryFromIjkToRas(matrix, (extent[0], extent[2], extent[4]))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def updateVolumeFromImage(volumeNode, image: sitk.Image) -> None:
    """Set a volume node's voxels (copied) and IJK-to-RAS matrix from a 3D scalar SimpleITK image."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("a scalar image is required")
    import slicer.util

    volumeNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRasFromImage(image)))
    slicer.util.updateVolumeFromArray(volumeNode, sitk.GetArrayFromImage(image))


def addVolumeFromImage(scene, image: sitk.Image, name: str, className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in `scene` holding a copy of `image`, with display nodes."""
    volumeNode = scene.AddNewNodeByClass(className, name)
    updateVolumeFromImage(volumeNode, image)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode
