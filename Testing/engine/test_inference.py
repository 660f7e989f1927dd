"""Geometry-exact inference: labelmaps on exactly the input grid, for every orientation."""

import json
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import GEOMETRIES, phantom_image
from torch import nn

from liteseg.errors import Cancelled, InvalidImageError, LiteSegError, WeightsError
from liteseg.io.images import read_image, write_image
from liteseg.io.labels import PANCREAS_LABEL
from liteseg.io.modelcard import ModelCard, load_network, sha256_file
from liteseg.models import build_model
from liteseg.segmentation.inference import segment_file, segment_folder, segment_image
from liteseg.segmentation.localisation import Localisation
from liteseg.segmentation.preprocessing import Preprocessing

CUT_HU = 95.0  # between the phantom's body (40 HU) and organ (150 HU)


class WindowNet(nn.Module):
    """A real network whose output we know: logit > 0 exactly where the HU exceeds CUT_HU.

    It records the shape of every batch, so tests can see which slices it was given."""

    out_channels = 1

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        low, high = preprocessing.window
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(50.0)
            self.conv.bias.fill_(-50.0 * (CUT_HU - low) / (high - low))
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.conv(x)


def assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_labelmap_lies_on_the_input_grid_voxel_for_voxel(name):
    image = phantom_image(GEOMETRIES[name])
    orientation_shape = None
    from liteseg.io.geometry import slice_orientation

    orientation_shape = slice_orientation(image).canonical_shape(sitk.GetArrayViewFromImage(image).shape)
    # slice size = the native in-plane size: no resampling, so the result must be exact
    preprocessing = Preprocessing(slice_size=orientation_shape[1:])
    network = WindowNet(preprocessing)
    result = segment_image(image, network, preprocessing, batch_size=5, backend="eager")
    assert_same_grid(result.labelmap, image)
    assert result.labelmap.GetPixelID() == sitk.sitkUInt8
    expected = (sitk.GetArrayViewFromImage(image) > CUT_HU).astype(np.uint8)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result.labelmap), expected)
    assert sum(shape[0] for shape in network.seen) == orientation_shape[0]  # every axial slice once
    assert {shape[2:] for shape in network.seen} == {tuple(orientation_shape[1:])}


@pytest.mark.parametrize("name", ["axial_ras_like", "coronal_acquired", "oblique_20deg", "left_handed"])
def test_resizing_to_256_and_back_keeps_the_object_in_place(name):
    image = phantom_image(GEOMETRIES[name], size=(40, 48, 30), spacing=(0.8, 0.7, 1.5))
    preprocessing = Preprocessing()
    network = WindowNet(preprocessing)
    result = segment_image(image, network, preprocessing, backend="eager")
    assert {shape[2:] for shape in network.seen} == {(256, 256)}
    predicted = sitk.GetArrayViewFromImage(result.labelmap) > 0
    expected = sitk.GetArrayViewFromImage(image) > CUT_HU
    dice = 2 * (predicted & expected).sum() / (predicted.sum() + expected.sum())
    assert expected.sum() > 200
    assert dice > 0.9


def test_progress_reaches_one_and_cancel_stops():
    image = phantom_image(np.eye(3))
    preprocessing = Preprocessing(slice_size=(64, 64))
    reports = []
    segment_image(image, WindowNet(preprocessing), preprocessing, batch_size=4, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 6  # preparing, then 18 slices / 4
    assert reports[0] == (0.0, "preparing the network")
    cancel = threading.Event()

    def cancel_after_first(fraction, message):
        cancel.set()

    with pytest.raises(Cancelled):
        segment_image(image, WindowNet(preprocessing), preprocessing, batch_size=4, progress=cancel_after_first, cancel=cancel)


def test_largest_component_option_keeps_one_object():
    array = np.full((10, 32, 32), -1000, dtype=np.int16)
    array[2:8, 4:14, 4:14] = 150
    array[3:5, 20:23, 20:23] = 150
    image = sitk.GetImageFromArray(array)
    preprocessing = Preprocessing(slice_size=(32, 32))
    all_objects = segment_image(image, WindowNet(preprocessing), preprocessing)
    largest = segment_image(image, WindowNet(preprocessing), preprocessing, keep_largest=True)
    assert all_objects.foreground_voxels == 6 * 100 + 2 * 9
    assert largest.foreground_voxels == 6 * 100


def test_non_ct_and_bad_threshold_are_refused():
    preprocessing = Preprocessing(slice_size=(32, 32))
    mri_like = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 800, (8, 32, 32)).astype(np.float32))
    with pytest.raises(InvalidImageError, match="does not look like a CT"):
        segment_image(mri_like, WindowNet(preprocessing), preprocessing)
    segment_image(mri_like, WindowNet(preprocessing), preprocessing, allow_non_ct=True)
    with pytest.raises(LiteSegError, match="threshold"):
        segment_image(phantom_image(np.eye(3)), WindowNet(preprocessing), preprocessing, threshold=1.5)


@pytest.fixture()
def random_monet_card(tmp_path) -> ModelCard:
    """A card with an untrained MoNet, to exercise loading, checksums and the file paths."""
    torch.manual_seed(0)
    weights = tmp_path / "models" / "random_monet.pt"
    weights.parent.mkdir()
    torch.save(build_model("monet").state_dict(), weights)
    data = {
        "name": "random-monet", "version": "0", "network": "monet", "weights": weights.name,
        "sha256": sha256_file(weights),
        "input": {"preprocessing": Preprocessing().to_dict()},
        "output": {"activation": "sigmoid", "threshold": 0.5},
        "labels": [PANCREAS_LABEL],
    }
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(data))
    return ModelCard.read(card_path)


def test_segment_file_writes_on_the_input_grid_and_never_overwrites(tmp_path, random_monet_card):
    source = write_image(phantom_image(GEOMETRIES["left_handed_permuted"]), tmp_path / "ct.nrrd")
    output = tmp_path / "out" / "seg.nrrd"  # same format as the input: exact grid
    result = segment_file(source, output, random_monet_card.path)
    assert set(result.seconds) == {"read", "preprocess", "inference", "postprocess", "write"}
    assert_same_grid(read_image(output), read_image(source))
    with pytest.raises(LiteSegError, match="not overwritten"):
        segment_file(source, output, random_monet_card.path)
    with pytest.raises(LiteSegError, match="input"):
        segment_file(source, source, random_monet_card.path, overwrite=True)


def test_bad_input_leaves_no_output(tmp_path, random_monet_card):
    flat = sitk.Image([16, 16, 8], sitk.sitkInt16)
    source = write_image(flat, tmp_path / "flat.nii.gz")
    output = tmp_path / "seg.nii.gz"
    with pytest.raises(InvalidImageError, match="empty"):
        segment_file(source, output, random_monet_card.path)
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.nii.gz", "models"]


def test_tampered_or_missing_weights_are_refused(random_monet_card):
    weights = random_monet_card.weights_path
    load_network(random_monet_card)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its model card"):
        load_network(random_monet_card)
    weights.unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_network(random_monet_card)


def test_folder_mode_segments_each_volume_and_reports_failures(tmp_path, random_monet_card):
    inputs = tmp_path / "in"
    write_image(phantom_image(GEOMETRIES["axial_identity"]), inputs / "a.nii.gz")
    write_image(phantom_image(GEOMETRIES["oblique_20deg"]), inputs / "b.mha")
    write_image(sitk.Image([8, 8, 8], sitk.sitkInt16), inputs / "c_empty.nrrd")
    cases = segment_folder(inputs, tmp_path / "out", random_monet_card.path)
    assert [c.input.name for c in cases] == ["a.nii.gz", "b.mha", "c_empty.nrrd"]
    assert [bool(c.error) for c in cases] == [False, False, True]
    assert "empty" in str(cases[2].error)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.mha"]
    assert_same_grid(read_image(tmp_path / "out" / "b.mha"), read_image(inputs / "b.mha"))


def test_model_cards_are_listed_without_importing_torch():
    """Slicer fills its model selector before torch is installed: listing cards must not need it."""
    import subprocess
    import sys

    code = "import sys, liteseg.io.modelcard as m; m.bundled_cards(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_detection_model_is_refused_by_the_segmentation_path(tmp_path):
    from liteseg.io.modelcard import find_card
    from liteseg.segmentation.inference import load_model

    lowres = find_card("lowres-lesion")
    assert not lowres.segments_slices
    with pytest.raises(WeightsError, match="not a slice-by-slice segmentation model"):
        load_model("lowres-lesion")
    write_image(phantom_image(GEOMETRIES["axial_identity"]), tmp_path / "ct.nii.gz")
    with pytest.raises(WeightsError, match="not a slice-by-slice"):
        segment_file(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", model=lowres.path)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_a_single_axial_slice_is_segmented_on_its_grid_and_a_single_coronal_slice_is_refused():
    image = phantom_image(GEOMETRIES["axial_ras_like"])
    preprocessing = Preprocessing(slice_size=(32, 32))
    network = WindowNet(preprocessing)
    whole = sitk.GetArrayFromImage(segment_image(image, network, preprocessing, backend="eager").labelmap)
    k = int(np.argmax(whole.sum(axis=(1, 2))))
    one = image[:, :, k : k + 1]
    for localisation in (None, Localisation(15.0, 4)):
        result = segment_image(one, network, preprocessing, backend="eager", localisation=localisation)
        assert result.labelmap.GetSize() == one.GetSize() and result.labelmap.GetOrigin() == one.GetOrigin()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap)[0], whole[k])
    with pytest.raises(InvalidImageError, match="single slice that is not axial"):
        segment_image(image[:, 10:11, :], network, preprocessing, backend="eager")
