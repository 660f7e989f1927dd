"""Reading (files and DICOM series), refusing bad volumes with one-line errors, atomic writing."""

import numpy as np
import pytest
import SimpleITK as sitk

from liteseg.errors import InvalidImageError, LiteSegError
from liteseg.imageio import as_3d, check_ct_intensities, check_volume, read_image, write_image

from conftest import GEOMETRIES, phantom_image, real_data


def write_dicom_series(image: sitk.Image, folder) -> None:
    """Write a 3D int16 image as one DICOM file per slice with position and orientation tags."""
    folder.mkdir()
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_folder_reads_with_its_geometry(tmp_path):
    image = phantom_image(GEOMETRIES["oblique_20deg"], size=(16, 14, 6))
    write_dicom_series(image, tmp_path / "series")
    read = read_image(tmp_path / "series")
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_formats_round_trip_geometry_and_values(tmp_path, suffix):
    image = phantom_image(GEOMETRIES["left_handed_permuted"])
    path = write_image(image, tmp_path / f"phantom{suffix}")
    read = read_image(path)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(InvalidImageError, match="cannot read"):
        read_image(broken)
    with pytest.raises(LiteSegError, match="not found"):
        read_image(tmp_path / "missing.nrrd")
    with pytest.raises(InvalidImageError, match="no DICOM series"):
        read_image(tmp_path)


def test_bad_volumes_are_refused_with_a_reason():
    with pytest.raises(InvalidImageError, match="2D"):
        check_volume(sitk.Image(16, 16, sitk.sitkInt16))
    with pytest.raises(InvalidImageError, match="4D"):
        check_volume(sitk.Image([8, 8, 8, 3], sitk.sitkInt16))
    with pytest.raises(InvalidImageError, match="components per voxel"):
        check_volume(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3))
    with pytest.raises(InvalidImageError, match="empty"):
        check_volume(sitk.Image([8, 8, 8], sitk.sitkInt16))
    nan = np.zeros((8, 8, 8), dtype=np.float32)
    nan[2, 3, 4] = np.nan
    with pytest.raises(InvalidImageError, match="NaN"):
        check_volume(sitk.GetImageFromArray(nan))
    with pytest.raises(InvalidImageError, match="a single slice; this 3D model needs a volume of at least 2 slices"):
        check_volume(phantom_image(np.eye(3), size=(20, 20, 1)))
    check_volume(phantom_image(np.eye(3), size=(20, 20, 1)), single_slice=True)  # what 2D models accept
    with pytest.raises(InvalidImageError, match="a line or a point"):
        check_volume(phantom_image(np.eye(3), size=(20, 1, 1)), single_slice=True)


def test_singleton_fourth_dimension_is_dropped():
    image = sitk.Image([8, 9, 10, 1], sitk.sitkInt16)
    assert as_3d(image).GetSize() == (8, 9, 10)
    check_volume(as_3d(phantom_image(np.eye(3))))


def test_mri_is_not_taken_for_ct():
    mri = sitk.ReadImage(str(real_data("mri/pyradiomics_brain1/image.nii.gz")))
    with pytest.raises(InvalidImageError, match="does not look like a CT"):
        check_ct_intensities(mri)
    deeplesion = sitk.ReadImage(str(real_data("ct/lesions_DeepLesion/CT_Lesion_000002_03_01_035-047_img_uint8.nii.gz")))
    with pytest.raises(InvalidImageError, match="does not look like a CT"):
        check_ct_intensities(deeplesion)
    check_ct_intensities(sitk.ReadImage(str(real_data("ct/pancreas_TS-A/ct.nii.gz"))))
    check_ct_intensities(sitk.ReadImage(str(real_data("ct/liver_LiTS-117/img_117.nii.gz"))))


def test_write_refuses_to_overwrite_and_leaves_no_partial_file(tmp_path):
    image = phantom_image(np.eye(3))
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"user data")
    with pytest.raises(LiteSegError, match="not overwritten"):
        write_image(image, target)
    assert target.read_bytes() == b"user data"
    with pytest.raises(LiteSegError, match="unsupported output extension"):
        write_image(image, tmp_path / "out.xyz")
    write_image(image, target, overwrite=True)
    assert read_image(target).GetSize() == image.GetSize()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
