"""Volume node <-> SimpleITK image: same voxels, same physical geometry, for every orientation."""

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import core  # noqa: E402,F401  (pytest fixtures)

from LiteSegSlicerLib import volume_bridge  # noqa: E402
from LiteSegSlicerLib.segmentation_selftest import GEOMETRIES, phantomImage, physicalPointsLps  # noqa: E402


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-12)


def assert_same_physical_content(a: sitk.Image, b: sitk.Image) -> None:
    """Every voxel centre of `a` is a voxel centre of `b` holding the same value (grids may differ
    by flips and axis permutations, as when Slicer reads a left-handed file)."""
    assert sorted(a.GetSize()) == sorted(b.GetSize())
    lps = physicalPointsLps(a).reshape(-1, 3)
    direction = np.array(b.GetDirection()).reshape(3, 3)
    continuous = ((lps - np.asarray(b.GetOrigin())) @ np.linalg.inv(direction).T) / np.asarray(b.GetSpacing())
    index = np.round(continuous).astype(int)
    assert np.abs(continuous - index).max() < 1e-6
    values = sitk.GetArrayViewFromImage(b)[index[:, 2], index[:, 1], index[:, 0]]
    np.testing.assert_array_equal(values, sitk.GetArrayViewFromImage(a).ravel())


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_image_to_volume_to_image_round_trip_is_exact(core, name):
    image = phantomImage(GEOMETRIES[name])
    node = volume_bridge.addVolumeFromImage(core.scene, image, name)
    back = volume_bridge.volumeToImage(node)
    assert_same_grid(back, image)
    assert back.GetPixelID() == image.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    # the geometry Slicer itself reports: RAS = diag(-1, -1, 1) LPS
    np.testing.assert_allclose(node.GetSpacing(), image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(node.GetOrigin(), np.array(image.GetOrigin()) * [-1, -1, 1], atol=1e-12)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_volume_read_by_slicer_converts_to_the_same_physical_image(core, tmp_path, name):
    """Slicer's own reader (which flips K for left-handed files) and the bridge agree with the file."""
    image = phantomImage(GEOMETRIES[name])
    path = tmp_path / f"{name}.nrrd"
    sitk.WriteImage(image, str(path))
    node = core.volumesLogic.AddArchetypeVolume(str(path), name)
    assert node is not None
    converted = volume_bridge.volumeToImage(node)
    assert_same_physical_content(image, converted)
    assert_same_physical_content(converted, image)
    if name == "left_handed":  # Slicer stores it right-handed: the arrays differ, the content does not
        assert converted.GetDirection() != image.GetDirection()
        assert np.linalg.det(np.array(converted.GetDirection()).reshape(3, 3)) > 0


def test_array_is_copied_not_viewed(core):
    image = phantomImage(GEOMETRIES["axial"])
    node = volume_bridge.addVolumeFromImage(core.scene, image, "ct")
    converted = volume_bridge.volumeToImage(node)
    slicer.util.arrayFromVolume(node)[:] = 0
    slicer.util.arrayFromVolumeModified(node)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(converted), sitk.GetArrayViewFromImage(image))


def test_extent_not_starting_at_zero_shifts_the_origin(core):
    import vtk

    node = core.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "cropped")
    imageData = vtk.vtkImageData()
    imageData.SetExtent(3, 7, 2, 5, 1, 3)
    imageData.AllocateScalars(vtk.VTK_SHORT, 1)
    imageData.GetPointData().GetScalars().Fill(5)
    node.SetAndObserveImageData(imageData)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.diag([2.0, 3.0, 4.0, 1.0])))
    image = volume_bridge.volumeToImage(node)
    assert image.GetSize() == (5, 4, 3)
    # voxel (3, 2, 1) is at RAS (6, 6, 4), i.e. LPS (-6, -6, 4)
    np.testing.assert_allclose(image.GetOrigin(), (-6.0, -6.0, 4.0))
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), np.diag([-1.0, -1.0, 1.0]))


def test_parent_transform_is_refused_or_applied(core):
    image = phantomImage(GEOMETRIES["axial"])
    node = volume_bridge.addVolumeFromImage(core.scene, image, "moved")
    transform = core.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.array(
        [[1, 0, 0, 10.0], [0, 1, 0, -5.0], [0, 0, 1, 2.5], [0, 0, 0, 1]])))
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="under the transform 'shift'.*harden"):
        volume_bridge.volumeToImage(node)
    world = volume_bridge.volumeToImage(node, applyParentTransform=True)
    np.testing.assert_allclose(world.GetOrigin(), np.array(image.GetOrigin()) + [-10.0, 5.0, 2.5], atol=1e-9)
    assert node.GetParentTransformNode() is transform  # the input is not modified


def test_non_linear_transform_is_refused(core):
    import vtk

    node = volume_bridge.addVolumeFromImage(core.scene, phantomImage(GEOMETRIES["axial"]), "warped")
    transform = core.scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point, moved in (((0, 0, 0), (1, 0, 0)), ((50, 0, 0), (50, 3, 0)), ((0, 50, 0), (0, 50, 2)), ((0, 0, 50), (4, 0, 50))):
        source.InsertNextPoint(point)
        target.InsertNextPoint(moved)
    spline = vtk.vtkThinPlateSplineTransform()
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    transform.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="non-linear transform 'warp'"):
        volume_bridge.volumeToImage(node, applyParentTransform=True)


def test_non_scalar_volumes_are_refused(core):
    with pytest.raises(ValueError, match="no input volume"):
        volume_bridge.volumeToImage(None)
    vector = core.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 5, 6, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="'colour' is a vtkMRMLVectorVolumeNode: a scalar volume is required"):
        volume_bridge.volumeToImage(vector)
    empty = core.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="'empty' holds no voxels"):
        volume_bridge.volumeToImage(empty)
