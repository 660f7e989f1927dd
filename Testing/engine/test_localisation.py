"""The localisation pass: coarse slices, the region they bound, and segmenting only there."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_inference import WindowNet

from liteseg.errors import WeightsError
from liteseg.io.modelcard import find_card
from liteseg.models import MODELS, build_model
from liteseg.segmentation.inference import Localiser, load_localiser, segment_image
from liteseg.segmentation.localisation import (
    MULTIPLE,
    Localisation,
    Region,
    coarse_indices,
    find_regions,
    region_slices,
    regions_fraction,
)
from liteseg.segmentation.preprocessing import Preprocessing

LOCALISER = "monet-pancreas-nih-128"  # the bundled 128x128 first-look model


def test_coarse_slices_cover_both_ends():
    assert list(coarse_indices(1, 5)) == [0]
    assert list(coarse_indices(10, 3)) == [0, 3, 6, 9]
    indices = coarse_indices(150, 7)
    assert np.all(np.diff(indices) == 7)
    assert indices[0] <= 3 and 149 - indices[-1] <= 3
    assert Localisation(step_mm=15).step(2.5) == 6 and Localisation(step_mm=15).step(40) == 1


def test_region_is_the_coarse_box_widened_by_a_step_and_the_margin():
    masks = np.zeros((4, 64, 64), dtype=bool)
    masks[1, 20:25, 30:41] = True
    masks[2, 22:30, 28:33] = True
    [region] = find_regions(masks, np.array([2, 7, 12, 17]), n_slices=20, step=5, margin_px=6)  # touching: one part
    assert (region.first, region.stop) == (2, 18)  # hits at slices 7 and 12, one step each way
    assert region.row0 <= 14 and region.row1 >= 36 and region.col0 <= 22 and region.col1 >= 47
    assert (region.row1 - region.row0) % MULTIPLE == 0 and (region.col1 - region.col0) % MULTIPLE == 0
    assert region.fraction_of(20, (64, 64)) < 0.25


def test_region_is_clipped_to_the_slice_and_none_without_foreground():
    masks = np.zeros((2, 32, 32), dtype=bool)
    assert find_regions(masks, np.array([0, 5]), 8, 5, 4) == []
    masks[0, 0:3, 29:32] = True
    assert find_regions(masks, np.array([0, 5]), 8, 5, 4) == [Region(0, 6, 0, MULTIPLE, 32 - MULTIPLE, 32)]  # grown inwards


def test_each_separate_find_gets_its_own_region_and_overlapping_regions_merge():
    masks = np.zeros((4, 128, 128), dtype=bool)
    masks[0, 5:10, 5:10] = True  # A
    masks[3, 100:110, 100:110] = True  # B: far from A in slices and in the slice
    indices = np.array([2, 12, 22, 32])
    a, b = find_regions(masks, indices, n_slices=40, step=10, margin_px=8)
    assert (a.first, a.stop, b.first, b.stop) == (0, 13, 22, 40)
    assert (a.row0, a.row1, b.row0, b.row1) == (0, 32, 92, 124)  # 5:10 and 100:110 widened by 8, grown to 32
    union = Region(0, 40, 0, 128, 0, 128)
    assert regions_fraction([a, b], 40, (128, 128)) < 0.1 * union.fraction_of(40, (128, 128))
    masks[1, 5:10, 30:35] = True  # C: not touching A, but its region overlaps A's: one region holding both
    merged, _ = find_regions(masks, indices, n_slices=40, step=10, margin_px=8)
    assert (merged.first, merged.stop) == (0, 23) and merged.col0 == 0 and merged.col1 >= 43
    assert (merged.row1 - merged.row0) % MULTIPLE == 0 and (merged.col1 - merged.col0) % MULTIPLE == 0


def test_region_slices_are_the_runs_the_regions_cover():
    regions = [Region(10, 12, 0, 16, 0, 16), Region(0, 5, 0, 16, 0, 16), Region(3, 8, 16, 32, 0, 16)]
    assert region_slices(regions) == [(0, 8), (10, 12)]


def organ_phantom(size: int = 64, organs: tuple = (np.s_[25:37, 30:42, 10:26],)) -> sitk.Image:
    """A 60-slice CT-like volume (2 mm slices, `size` x `size`) with 'organs' (default: one over slices 25-36)."""
    array = np.full((60, size, size), 40, dtype=np.int16)
    array[:, :4] = -1000
    for organ in organs:
        array[organ] = 150
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def test_localised_segmentation_runs_only_in_the_region_and_finds_the_organ():
    image = organ_phantom()
    preprocessing = Preprocessing(slice_size=(64, 64))
    full = segment_image(image, WindowNet(preprocessing), preprocessing, backend="eager")
    network = WindowNet(preprocessing)
    fractions = []
    localised = segment_image(image, network, preprocessing, backend="eager", localisation=Localisation(10.0, 8),
                              progress=lambda fraction, message: fractions.append(fraction))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(localised.labelmap), sitk.GetArrayViewFromImage(full.labelmap))
    [region] = localised.regions
    assert region.first <= 25 and region.stop >= 37 and region.n_slices < 30
    coarse = coarse_indices(60, 5)
    seen_slices = sum(shape[0] for shape in network.seen)
    assert seen_slices == len(coarse) + region.n_slices
    assert {shape[2:] for shape in network.seen[-1:]} == {(region.row1 - region.row0, region.col1 - region.col0)}
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert set(localised.seconds) == {"preprocess", "localise", "inference", "postprocess"}


def thin_object_volume(slice_index: int) -> sitk.Image:
    array = np.full((30, 32, 32), 40, dtype=np.int16)
    array[:, :2] = -1000
    array[slice_index, 10:14, 10:14] = 150  # one thin object
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


def test_when_the_coarse_pass_finds_nothing_a_second_look_then_an_empty_result_not_the_whole_volume():
    preprocessing = Preprocessing(slice_size=(32, 32))
    network = WindowNet(preprocessing)
    # coarse slices 4, 14, 24 (10 mm apart), then the second look at 9, 19, 29
    found = segment_image(thin_object_volume(19), network, preprocessing, backend="eager", localisation=Localisation(10.0, 4))
    assert found.regions and found.foreground_voxels == 16 and not found.message
    network.seen.clear()
    fractions = []
    empty = segment_image(thin_object_volume(17), network, preprocessing, backend="eager", localisation=Localisation(10.0, 4),
                          progress=lambda f, m: fractions.append(f))
    assert empty.regions == [] and empty.foreground_voxels == 0
    assert "nothing found in the scanned range" in empty.message and "6 of 30 slices" in empty.message
    assert sum(shape[0] for shape in network.seen) == 6  # never the whole volume
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert empty.labelmap.GetSize() == (32, 32, 30) and empty.labelmap.GetPixelID() == sitk.sitkUInt8
    whole = segment_image(thin_object_volume(17), network, preprocessing, backend="eager", localisation=None)
    assert whole.foreground_voxels == 16 and not whole.message  # on request, every slice

def test_two_finds_on_the_same_slices_are_segmented_in_two_boxes_exactly_as_the_whole_volume():
    image = organ_phantom(128, (np.s_[20:34, 10:22, 10:24], np.s_[24:40, 100:118, 96:120]))  # on the same slices
    preprocessing = Preprocessing(slice_size=(128, 128))
    full = segment_image(image, WindowNet(preprocessing), preprocessing, backend="eager")
    network = WindowNet(preprocessing)
    localised = segment_image(image, network, preprocessing, backend="eager", localisation=Localisation(10.0, 8), batch_size=4)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(localised.labelmap), sitk.GetArrayViewFromImage(full.labelmap))
    first, second = localised.regions
    assert not first.overlaps(second) and first.first < second.stop and second.first < first.stop  # shared slices
    assert regions_fraction(localised.regions, 60, (128, 128)) < 0.15
    crops = {shape[2:] for shape in network.seen if shape[2:] != (128, 128)}
    assert crops == {(first.row1 - first.row0, first.col1 - first.col0), (second.row1 - second.row0, second.col1 - second.col0)}


def test_the_first_look_runs_the_localiser_on_its_own_grid_and_the_network_only_in_the_region():
    image = organ_phantom()
    preprocessing = Preprocessing(slice_size=(64, 64))
    full = segment_image(image, WindowNet(preprocessing), preprocessing, backend="eager")
    network, small = WindowNet(preprocessing), Preprocessing(slice_size=(32, 32))
    localiser = Localiser(WindowNet(small), small, 0.5)
    localised = segment_image(image, network, preprocessing, backend="eager", localisation=Localisation(10.0, 8),
                              localiser=localiser)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(localised.labelmap), sitk.GetArrayViewFromImage(full.labelmap))
    [region] = localised.regions
    assert {shape[2:] for shape in localiser.network.seen} == {(32, 32)}
    assert sum(shape[0] for shape in localiser.network.seen) == len(coarse_indices(60, 5))
    assert sum(shape[0] for shape in network.seen) == region.n_slices  # no coarse slice run by the network
    assert region.first <= 25 and region.stop >= 37
    with pytest.raises(WeightsError, match="first-look model takes MR"):
        mr = Preprocessing(modality="MR", window=None, slice_size=(32, 32))
        segment_image(image, network, preprocessing, localisation=Localisation(10.0, 8), localiser=Localiser(WindowNet(small), mr, 0.5))


def test_a_localisation_naming_a_model_loads_it_once_and_says_when_its_weights_are_missing(tmp_path):
    localiser = load_localiser(LOCALISER)
    assert localiser is load_localiser(LOCALISER) and localiser.preprocessing.slice_size == (128, 128)
    assert localiser.threshold == find_card(LOCALISER).threshold and not localiser.network.training
    card = find_card(LOCALISER)
    shutil.copy(card.path, tmp_path / card.path.name)  # the card without its weights
    with pytest.raises(WeightsError, match="first-look model cannot be used: weights file missing"):
        load_localiser(str(tmp_path / card.path.name))
    shutil.copy(card.weights_path, tmp_path / card.weights_path.name)
    data = json.loads(card.path.read_text())
    (tmp_path / card.path.name).write_text(json.dumps({**data, "sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="first-look model cannot be used: weights file .* does not match"):
        load_localiser(str(tmp_path / card.path.name))


@pytest.mark.parametrize("name", [name for name, spec in MODELS.items() if spec.spatial_dims == 2])
def test_every_2d_network_runs_on_a_crop_of_the_localisation_multiple(name):
    """A localised crop is a multiple of MULTIPLE on each side; every 2D network must take it
    (U-Net-16 crashed on crops that were multiples of 4 only)."""
    network = build_model(name).eval()
    with torch.no_grad():
        out = network(torch.zeros(1, 1, 3 * MULTIPLE, 5 * MULTIPLE))
    assert out.shape[2:] == (3 * MULTIPLE, 5 * MULTIPLE)
