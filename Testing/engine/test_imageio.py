"""Reading (files and DICOM series), refusing bad volumes with one-line errors, atomic writing."""

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import GEOMETRIES, phantom_image, real_data, write_dicom_series

from liteseg.errors import InvalidImageError, LiteSegError
from liteseg.io.images import as_3d, check_ct_intensities, check_volume, read_image, write_image


def test_dicom_series_folder_reads_with_its_geometry(tmp_path):
    image = phantom_image(GEOMETRIES["oblique_20deg"], size=(16, 14, 6))
    write_dicom_series(image, tmp_path / "series")
    read = read_image(tmp_path / "series")
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    write_dicom_series(phantom_image(GEOMETRIES["oblique_20deg"], size=(12, 10, 8)), tmp_path / "series")
    (tmp_path / "series" / "2slice004.dcm").unlink()
    with pytest.raises(InvalidImageError, match="misses slices: a gap of"):
        read_image(tmp_path / "series")


def test_a_dicom_series_with_a_duplicated_slice_is_refused(tmp_path):
    image = phantom_image(GEOMETRIES["axial_identity"], size=(12, 10, 6))
    write_dicom_series(image, tmp_path / "series", shift_mm={3: -image.GetSpacing()[2]})  # slice 3 onto slice 2
    with pytest.raises(InvalidImageError, match="duplicated slice position"):
        read_image(tmp_path / "series")


def test_an_unevenly_spaced_dicom_series_is_refused(tmp_path):
    image = phantom_image(GEOMETRIES["oblique_20deg"], size=(12, 10, 6))
    write_dicom_series(image, tmp_path / "series", shift_mm={3: 0.3 * image.GetSpacing()[2]})
    with pytest.raises(InvalidImageError, match="unevenly spaced"):
        read_image(tmp_path / "series")


def test_several_dicom_series_need_a_choice_that_the_error_lists(tmp_path):
    first = phantom_image(GEOMETRIES["oblique_20deg"], size=(12, 10, 6))
    second = phantom_image(GEOMETRIES["left_handed"], size=(8, 9, 5))
    write_dicom_series(first, tmp_path / "study", description="arterial")
    write_dicom_series(second, tmp_path / "study", series_uid="1.2.826.0.1.3680043.2.1125.1.3")
    with pytest.raises(InvalidImageError, match=r"2 DICOM series.*1\.2\.826\.0\.1\.3680043\.2\.1125\.1\.2 \(6 files, 'arterial'\).*series=UID to choose one"):
        read_image(tmp_path / "study")
    chosen = read_image(tmp_path / "study", series="1.2.826.0.1.3680043.2.1125.1.3")
    assert chosen.GetSize() == second.GetSize()
    with pytest.raises(InvalidImageError, match="holds no DICOM series 9.9"):
        read_image(tmp_path / "study", series="9.9")


def test_several_dicom_series_in_the_segment_command_are_chosen_with_series(tmp_path, capsys):
    from liteseg.cli.main import main

    write_dicom_series(phantom_image(GEOMETRIES["oblique_20deg"], size=(12, 10, 6)), tmp_path / "study")
    write_dicom_series(phantom_image(GEOMETRIES["left_handed"], size=(8, 9, 5)), tmp_path / "study",
                       series_uid="1.2.826.0.1.3680043.2.1125.1.3")
    assert main(["segment", str(tmp_path / "study"), str(tmp_path / "seg.nii.gz"), "--allow-non-ct"]) == 2
    assert "--series UID" in capsys.readouterr().err and not (tmp_path / "seg.nii.gz").exists()


def _cut(path, keep: float):
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("compressed", [True, False])
def test_a_file_cut_short_is_refused_and_left_unchanged(tmp_path, suffix, compressed):
    path = tmp_path / f"phantom{suffix}"
    sitk.WriteImage(phantom_image(GEOMETRIES["oblique_20deg"]), str(path), useCompression=compressed)
    read_image(path)  # whole: reads
    cut = _cut(path, 0.6)
    before = cut.read_bytes()
    with pytest.raises(InvalidImageError, match="truncated or corrupted|expected .* bytes|fread got only"):
        read_image(cut)
    assert cut.read_bytes() == before


def test_a_real_ct_cut_short_or_corrupted_inside_is_refused(tmp_path, sample_ct_path):
    data = sample_ct_path.read_bytes()
    cut = tmp_path / "ct.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="truncated or corrupted .*end marker"):
        read_image(cut)
    corrupted = bytearray(data)
    corrupted[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0x5A for b in corrupted[len(data) // 2 : len(data) // 2 + 8])
    cut.write_bytes(bytes(corrupted))
    with pytest.raises(InvalidImageError, match="truncated or corrupted .*gzip"):
        read_image(cut)


def test_a_nifti_header_promising_more_voxels_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "a.nii"
    sitk.WriteImage(phantom_image(GEOMETRIES["oblique_20deg"], size=(12, 10, 6)), str(path))
    data = bytearray(path.read_bytes())
    assert struct.unpack("<h", data[46:48])[0] == 6  # dim[3], the number of slices
    data[46:48] = struct.pack("<h", 12)
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidImageError, match="its header promises"):
        read_image(path)


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


def test_the_completeness_check_inflates_every_gzip_member(tmp_path):
    """A .nii.gz may hold several gzip members (e.g. written in parts): the check counts them all."""
    from liteseg.io.file_integrity import check_file_complete

    path = tmp_path / "phantom.nii"
    sitk.WriteImage(phantom_image(GEOMETRIES["oblique_20deg"], size=(128, 128, 40)), str(path))
    data = path.read_bytes()
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    check_file_complete(members)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(members)), sitk.GetArrayFromImage(read_image(path)))
    members.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:-100]))
    with pytest.raises(InvalidImageError, match="its header promises"):
        check_file_complete(members)
