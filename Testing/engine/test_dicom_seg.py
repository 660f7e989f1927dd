"""DICOM SEG output: written with highdicom for a DICOM series input and read back (frames on the
source grid, SNOMED CT codes, references to the source series and its instances)."""

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import GEOMETRIES, phantom_image, write_dicom_series

from liteseg.cli.main import main
from liteseg.errors import LiteSegError
from liteseg.io.dicom_seg import write_dicom_seg
from liteseg.io.dicom_series import series_files
from liteseg.io.modelcard import DEFAULT_MODEL, find_card
from liteseg.segmentation.inference import segment_file

hd = pytest.importorskip("highdicom")


def frames_by_source(seg_path, files) -> np.ndarray:
    """The SEG's segment-1 mask per source instance, in the order of `files` (zeros where no frame)."""
    seg = hd.seg.segread(seg_path)
    uids = [pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID for name in files]
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]


def test_a_labelmap_on_a_dicom_series_round_trips_through_a_seg(tmp_path):
    write_dicom_series(phantom_image(GEOMETRIES["oblique_20deg"], size=(16, 14, 6)), tmp_path / "series")
    files = series_files(tmp_path / "series")
    image = sitk.ReadImage(files)
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    labels[2:4, 3:8, 4:9] = 1
    labels[5, 0, 0] = 1
    labelmap = sitk.GetImageFromArray(labels)
    labelmap.CopyInformation(image)
    card = find_card(DEFAULT_MODEL)
    path = write_dicom_seg(labelmap, files, card, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(frames_by_source(path, files), labels)
    seg = hd.seg.segread(path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == len(files)
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Pancreas"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "15776009"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert segment.SegmentAlgorithmName == f"LiteSeg {card.name}"
    with pytest.raises(LiteSegError, match="not overwritten"):
        write_dicom_seg(labelmap, files, card, path)


def test_an_empty_labelmap_gives_a_seg_with_empty_frames(tmp_path):
    write_dicom_series(phantom_image(GEOMETRIES["oblique_20deg"], size=(16, 14, 6)), tmp_path / "series")
    files = series_files(tmp_path / "series")
    labelmap = sitk.Image(sitk.ReadImage(files).GetSize(), sitk.sitkUInt8)
    labelmap.CopyInformation(sitk.ReadImage(files))
    path = write_dicom_seg(labelmap, files, find_card(DEFAULT_MODEL), tmp_path / "seg.dcm")
    assert not frames_by_source(path, files).any() and hd.seg.segread(path).NumberOfFrames == len(files)


def test_segment_command_writes_a_seg_of_a_real_ct_series(tmp_path, sample_ct_path, capsys):
    ct = sitk.Cast(sitk.ReadImage(str(sample_ct_path)), sitk.sitkInt16)
    write_dicom_series(ct, tmp_path / "ct")
    assert main(["segment", str(tmp_path / "ct"), str(tmp_path / "seg.nii.gz"), "--dicom-seg", str(tmp_path / "seg.dcm")]) == 0
    assert "DICOM SEG" in capsys.readouterr().out
    labelmap = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz")))
    assert labelmap.any()
    np.testing.assert_array_equal(frames_by_source(tmp_path / "seg.dcm", series_files(tmp_path / "ct")), labelmap)


def test_dicom_seg_needs_a_dicom_series_input(tmp_path, sample_ct_path):
    with pytest.raises(LiteSegError, match="not a DICOM folder"):
        segment_file(sample_ct_path, tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_without_highdicom_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    write_dicom_series(phantom_image(GEOMETRIES["oblique_20deg"], size=(16, 14, 6)), tmp_path / "series")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    with pytest.raises(LiteSegError, match=r"pip install 'liteseg\[dicom\]'"):
        segment_file(tmp_path / "series", tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm", allow_non_ct=True)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_the_series_folder_is_scanned_once_for_the_labelmap_and_the_seg(tmp_path, sample_ct_path, monkeypatch):
    from liteseg.io import dicom_series

    ct = sitk.Cast(sitk.ReadImage(str(sample_ct_path)), sitk.sitkInt16)
    write_dicom_series(ct, tmp_path / "ct")
    scans = []
    original = dicom_series.series_files
    monkeypatch.setattr(dicom_series, "series_files", lambda *args: scans.append(args) or original(*args))
    monkeypatch.setattr("liteseg.segmentation.inference.series_files", dicom_series.series_files)
    segment_file(tmp_path / "ct", tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm")
    assert len(scans) == 1
    labelmap = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz")))
    np.testing.assert_array_equal(frames_by_source(tmp_path / "seg.dcm", original(tmp_path / "ct")), labelmap)
