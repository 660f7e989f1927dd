"""LowRes detection: boxes, margins, stage-2 crops, stage-1 tiling, geometry, CLI.

Box logic is tested with a LowRes network whose outputs are known: stage 1 computes its real
features but its x8 logits are +10 where an x8 cell holds a normalised voxel above 0.5 (max
pooling, like the training target) and -10 elsewhere; stage 2 returns 20 * (input - 0.5), so the
refined mask is exactly the bright voxels of each box. The pipeline around them is the real one.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from conftest import GEOMETRIES, phantom_image, physical_grid

from liteseg.cli.detect import configure_detect_parser, run_detect
from liteseg.components import Box
from liteseg.detection.lowres import (
    channels_last,
    detect_image,
    find_lowres_card,
    grown_cells,
    refine_box,
    stage1_features,
    stage2_dtype,
    upsampled_logits,
)
from liteseg.detection import lowres as lowres_module
from liteseg.detection.interruptible import BFLOAT16_SLAB_SCALE, interruptible_convolutions
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.detection.results import DETECTION_CSV_COLUMNS, default_csv_path, write_detections_csv
from liteseg.detection.tiling import STAGE2_HALO, plan_tiles
from liteseg.cpu import native_bfloat16
from liteseg.errors import Cancelled, InvalidImageError, LiteSegError, Remedy, WeightsError
from liteseg.models.lowres import LowResFeatures, LowResNet, LowResStage1, LowResStage2

GREY = DetectionPreprocessing("grey_0_255", None)
SIGMOID_10 = 1.0 / (1.0 + math.exp(-10.0))


class KnownStage1(LowResStage1):
    def forward(self, x: torch.Tensor) -> LowResFeatures:
        features = super().forward(x)
        return features._replace(logits8=20.0 * (F.max_pool3d(x, 8, ceil_mode=True) - 0.5))


class KnownStage2(LowResStage2):
    def forward(self, features: LowResFeatures) -> torch.Tensor:
        return 20.0 * (features.x1 - 0.5)


def known_network() -> LowResNet:
    network = LowResNet()
    network.stage1 = KnownStage1()
    network.stage2 = KnownStage2()
    return network.eval()


def random_network(seed: int = 0) -> LowResNet:
    """A real LowResNet with random weights and non-trivial BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    network = LowResNet()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network.eval()


def grey_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def labelmap_array(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.labelmap)


# --- preprocessing -------------------------------------------------------------------------


def test_preprocessing_round_trip_and_checks():
    for preprocessing in (DetectionPreprocessing(), GREY, DetectionPreprocessing("hu_window", (-100.0, 200.0))):
        data = json.loads(json.dumps(preprocessing.to_dict()))
        assert DetectionPreprocessing.from_dict(data) == preprocessing
    assert DetectionPreprocessing().to_dict() == {"kind": "hu_window", "window": (-1000.0, 300.0)}
    np.testing.assert_allclose(DetectionPreprocessing().normalize(np.array([-2000, -1000, -350, 300, 900])), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(GREY.normalize(np.array([0, 51, 255, 300])), [0, 0.2, 1, 1])
    with pytest.raises(LiteSegError, match="unknown"):
        DetectionPreprocessing("zscore", None)
    with pytest.raises(LiteSegError, match="needs a window"):
        DetectionPreprocessing("hu_window", None)
    with pytest.raises(LiteSegError, match="no 'kind'"):
        DetectionPreprocessing.from_dict({"modality": "CT", "window": [-150, 200], "slice_size": [256, 256]})


def test_grey_input_is_not_checked_for_hu_but_hu_input_is():
    array = np.zeros((16, 16, 16), np.uint8)
    array[4:8, 4:8, 4:8] = 255
    image = grey_image(array)
    assert len(detect_image(image, known_network(), GREY).detections) == 1
    with pytest.raises(InvalidImageError, match="Hounsfield"):
        detect_image(image, known_network(), DetectionPreprocessing())
    detect_image(image, known_network(), DetectionPreprocessing(), allow_non_ct=True)


def test_grey_model_refuses_hounsfield_units():
    array = np.full((16, 16, 16), -1000, np.int16)
    array[4:8, 4:8, 4:8] = 60
    image = sitk.GetImageFromArray(array)
    with pytest.raises(InvalidImageError, match="expects grey levels 0-255"):
        detect_image(image, known_network(), GREY)
    detect_image(image, known_network(), GREY, allow_non_ct=True)  # the user's choice


def test_a_single_slice_is_refused_by_the_3d_detector_with_the_reason():
    array = np.zeros((1, 16, 16), np.uint8)
    array[0, 4:8, 4:8] = 255
    with pytest.raises(InvalidImageError, match="a single slice; this 3D model needs a volume of at least 2 slices"):
        detect_image(grey_image(array), known_network(), GREY)


# --- boxes, margins, objects ---------------------------------------------------------------


def test_single_object_box_volume_centre_probability():
    array = np.zeros((48, 40, 46), np.uint8)  # (k, j, i); 46 is not a multiple of 8
    array[10:20, 5:12, 30:41] = 255
    spacing, origin = (0.8, 0.7, 2.0), (10.0, -5.0, 3.0)
    result = detect_image(grey_image(array, spacing, origin), known_network(), GREY)
    assert labelmap_array(result).dtype == np.uint8
    np.testing.assert_array_equal(labelmap_array(result), array > 0)
    (detection,) = result.detections
    # x8 cells k 1-2, j 0-1, i 3-5; margin 1 -> k [0, 4), j [0, 3), i [2, 7) -> x8, clipped to 46.
    assert detection.index == 1
    assert detection.box == Box((0, 0, 16), (32, 24, 46))
    assert detection.size_mm == pytest.approx((32 * 2.0, 24 * 0.7, 30 * 0.8))
    assert detection.volume_ml == pytest.approx(10 * 7 * 11 * 0.8 * 0.7 * 2.0 / 1000)
    assert detection.centre == pytest.approx((10 + 35 * 0.8, -5 + 8 * 0.7, 3 + 14.5 * 2.0))
    assert detection.centre_ras == pytest.approx((-(10 + 35 * 0.8), -(-5 + 8 * 0.7), 3 + 14.5 * 2.0))
    assert detection.max_probability == pytest.approx(SIGMOID_10)
    np.testing.assert_array_equal(detection.mask, array[detection.box.slices()] > 0)
    assert set(result.seconds) == {"preprocess", "stage1", "stage2", "postprocess"}


def test_without_refinement_the_map_is_the_upsampled_stage1_map():
    array = np.zeros((48, 40, 46), np.uint8)
    array[10:20, 5:12, 30:41] = 255
    image = grey_image(array)
    network = known_network()
    result = detect_image(image, network, GREY, refine=False)
    padded = np.zeros((48, 40, 48), np.float32)
    padded[..., :46] = array / 255.0
    logits8 = network.stage1(torch.from_numpy(padded)[None, None]).logits8
    expected = upsampled_logits(logits8, array.shape).astype(np.float32) > 0
    np.testing.assert_array_equal(labelmap_array(result), expected)
    assert not np.array_equal(expected, array > 0)  # coarser than the refined map
    (detection,) = result.detections
    assert detection.box == detect_image(image, network, GREY).detections[0].box


@pytest.mark.parametrize("margin, stop", [(0, 8), (1, 16), (2, 24)])
def test_margin_and_clipping_at_the_border(margin, stop):
    array = np.zeros((32, 32, 32), np.uint8)
    array[0:5, 0:5, 27:32] = 200
    result = detect_image(grey_image(array), known_network(), GREY, margin=margin)
    (detection,) = result.detections
    assert detection.box == Box((0, 0, 32 - stop), (stop, stop, 32))
    np.testing.assert_array_equal(labelmap_array(result), array > 0)
    assert detection.max_probability == pytest.approx(1.0 / (1.0 + math.exp(-20 * (200 / 255 - 0.5))), rel=1e-3)


def test_two_touching_objects_make_one_detection():
    array = np.zeros((32, 32, 48), np.uint8)
    array[8:16, 8:16, 8:20] = 255
    array[8:16, 8:16, 20:30] = 220  # shares a face with the first
    result = detect_image(grey_image(array), known_network(), GREY)
    (detection,) = result.detections
    assert detection.volume_ml == pytest.approx(8 * 8 * 22 / 1000)
    assert detection.box == Box((0, 0, 0), (24, 24, 40))


def test_two_separate_objects_keep_their_own_voxels_in_overlapping_boxes():
    array = np.zeros((24, 24, 64), np.uint8)
    array[8:14, 8:14, 2:16] = 255  # x8 cells i 0-1
    array[8:14, 8:14, 24:40] = 255  # cells i 3-4: one empty cell between, boxes overlap
    result = detect_image(grey_image(array), known_network(), GREY, margin=2)
    first, second = result.detections
    assert (first.index, second.index) == (1, 2)
    assert first.box == Box((0, 0, 0), (24, 24, 32)) and second.box == Box((0, 0, 8), (24, 24, 56))
    assert first.volume_ml == pytest.approx(6 * 6 * 14 / 1000)  # the second reaches into its box
    assert second.volume_ml == pytest.approx(6 * 6 * 16 / 1000)
    assert first.centre[0] == pytest.approx(8.5) and second.centre[0] == pytest.approx(31.5)
    np.testing.assert_array_equal(labelmap_array(result), array > 0)


def test_no_object_found_gives_an_empty_result():
    array = np.zeros((24, 24, 24), np.uint8)
    array[4:12, 4:12, 4:12] = 100  # 0.39 after scaling: below the threshold everywhere
    image = grey_image(array, (0.5, 0.6, 0.7))
    result = detect_image(image, known_network(), GREY)
    assert result.detections == []
    assert not labelmap_array(result).any()
    assert result.labelmap.GetSize() == image.GetSize()


def test_progress_and_cancel():
    array = np.zeros((24, 24, 24), np.uint8)
    array[4:12, 4:12, 4:12] = 255
    reports = []
    detect_image(grey_image(array), known_network(), GREY, progress=lambda f, m: reports.append(f))
    assert reports == sorted(reports) and reports[-1] == 1.0
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        detect_image(grey_image(array), known_network(), GREY, cancel=flag)


def test_options_are_validated():
    array = np.zeros((16, 16, 16), np.uint8)
    array[4:8, 4:8, 4:8] = 255
    for options in ({"threshold": 1.0}, {"margin": -1}, {"margin": 1.5}, {"max_voxels_stage1": 1000}):
        with pytest.raises(LiteSegError):
            detect_image(grey_image(array), known_network(), GREY, **options)


# --- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", ["oblique_20deg", "left_handed", "left_handed_permuted", "sagittal_acquired"])
def test_output_geometry_and_content_follow_the_input(geometry):
    image = phantom_image(GEOMETRIES[geometry])
    result = detect_image(image, known_network(), DetectionPreprocessing())
    labelmap = result.labelmap
    assert labelmap.GetSize() == image.GetSize()
    assert labelmap.GetSpacing() == image.GetSpacing()
    assert labelmap.GetOrigin() == image.GetOrigin()
    assert labelmap.GetDirection() == image.GetDirection()
    body = sitk.GetArrayFromImage(image) > -350  # normalised above 0.5 in the [-1000, 300] window
    np.testing.assert_array_equal(labelmap_array(result), body)
    (detection,) = result.detections
    np.testing.assert_array_equal(detection.mask, body[detection.box.slices()])
    assert np.count_nonzero(body[detection.box.slices()]) == np.count_nonzero(body)
    assert detection.centre == pytest.approx(tuple(physical_grid(image)[body].mean(axis=0)), abs=1e-6)
    assert detection.volume_ml == pytest.approx(np.count_nonzero(body) * np.prod(image.GetSpacing()) / 1000)


# --- stage 2 on crops, stage-1 tiling, upsampling -------------------------------------------


def test_stage2_on_a_crop_matches_the_full_volume_pass_where_the_crop_has_context():
    """Stage 2 sees only its box (as in the paper, no extra context), so near a box face that
    is not on the volume border its logits differ from a full-volume stage-2 pass. Measured
    on random weights, the difference vanishes 22 voxels inside; 24 voxels (3 x8 voxels) is
    compared. Volume sizes are multiples of 8 so that every level nests exactly."""
    network = random_network()
    volume = torch.rand(1, 1, 48, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        features = network.stage1(volume)
        full = network.stage2(features)[0, 0]
        start, stop = (0, 2, 0), (4, 6, 6)
        crop = network.stage2(features.crop(start, stop))[0, 0]
    assert crop.shape == (32, 32, 48)
    reference = full[0:32, 16:48, 0:48]
    # Faces on the volume border (k = 0, j = 48, i = 0 and 48) need no margin; j = 16, k = 32 do.
    torch.testing.assert_close(crop[:8, 24:, :], reference[:8, 24:, :], rtol=0, atol=1e-5)
    assert (crop[:, 0] - reference[:, 0]).abs().max() > 1e-3


def test_plan_tiles_partitions_the_grid_within_the_budget():
    grid = (30, 25, 7)
    tiles = plan_tiles(grid, 400_000, halo=3)
    covered = np.zeros(grid, int)
    for core, tile in tiles:
        covered[core.slices()] += 1
        assert all(t0 == max(c0 - 3, 0) and t1 == min(c1 + 3, n) for c0, c1, t0, t1, n in zip(core.start, core.stop, tile.start, tile.stop, grid))
        assert math.prod(tile.shape) * 512 <= 400_000
    assert (covered == 1).all() and len(tiles) > 1
    assert plan_tiles(grid, 10**9) == [(Box((0, 0, 0), grid), Box((0, 0, 0), grid))]
    with pytest.raises(LiteSegError, match="smallest"):
        plan_tiles(grid, 1000)


@pytest.mark.parametrize("shape, max_voxels", [((240, 16, 16), 50_000), ((176, 168, 8), 210_000)])
def test_tiled_stage1_equals_the_untiled_pass(shape, max_voxels):
    network = random_network(2)
    volume = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(3))
    assert len(plan_tiles([n // 8 for n in shape], max_voxels)) > 1
    with torch.inference_mode():
        untiled = network.stage1(volume)
        tiled = stage1_features(network.stage1, volume, max_voxels)
    for name, a, b in zip(LowResFeatures._fields, untiled, tiled):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)


def test_detection_with_tiled_stage1_equals_untiled():
    array = np.zeros((200, 16, 24), np.uint8)
    array[20:30, 4:10, 4:12] = 255
    array[150:170, 2:12, 10:20] = 230
    image = grey_image(array)
    untiled = detect_image(image, known_network(), GREY)
    tiled = detect_image(image, known_network(), GREY, max_voxels_stage1=75_000)
    np.testing.assert_array_equal(labelmap_array(tiled), labelmap_array(untiled))
    assert [(d.box, d.volume_ml) for d in tiled.detections] == [(d.box, d.volume_ml) for d in untiled.detections]
    assert len(tiled.detections) == 2


def hybrid_network(seed: int = 0) -> LowResNet:
    """Known stage 1 (boxes where the input is bright; its features from seeded random weights)
    and a real stage 2 with random weights."""
    torch.manual_seed(seed)
    network = known_network()
    network.stage2 = random_network(seed).stage2
    return network.eval()


def test_tiled_stage2_equals_the_unsplit_box():
    network = random_network(5)
    volume = torch.rand(1, 1, 48, 128, 96, generator=torch.Generator().manual_seed(6))
    box8 = Box((0, 1, 1), (6, 15, 11))
    shape = (48, 128, 96)
    with torch.inference_mode():
        features = network.stage1(volume)
        unsplit = network.stage2(features.crop(box8.start, box8.stop))[0, 0].numpy()
        logit_map = np.full(shape, 99.0, np.float16)
        budget = (2 * STAGE2_HALO + 1) ** 3 * 512
        computed = refine_box(network.stage2, features, box8, np.ones(box8.shape, bool), logit_map, budget)
    assert computed == len(plan_tiles(box8.shape, budget, STAGE2_HALO)) > 1
    box = box8.scaled(8, shape)
    np.testing.assert_allclose(logit_map[box.slices()].astype(np.float32), unsplit, rtol=2e-3, atol=2e-3)
    outside = np.ones(shape, bool)
    outside[box.slices()] = False
    assert (logit_map[outside] == 99.0).all()


def test_stage2_computes_only_the_tiles_near_the_component():
    network = random_network(7)
    volume = torch.rand(1, 1, 32, 192, 192, generator=torch.Generator().manual_seed(8))
    box8 = Box((0, 0, 0), (4, 24, 24))
    wanted = np.zeros(box8.shape, bool)
    wanted[0, 0, 0] = True  # one corner cell of a sprawling component
    budget = (2 * STAGE2_HALO + 1) ** 3 * 512
    logit_map = np.full((32, 192, 192), 99.0, np.float16)
    with torch.inference_mode():
        features = network.stage1(volume)
        computed = refine_box(network.stage2, features, box8, wanted, logit_map, budget)
    planned = plan_tiles(box8.shape, budget, STAGE2_HALO)
    assert computed == 1 < len(planned)
    core = next(core for core, _ in planned if core.start == (0, 0, 0)).scaled(8, logit_map.shape)
    assert (logit_map[core.slices()] != 99.0).all()
    assert np.count_nonzero(logit_map != 99.0) == np.prod(core.shape)


def test_grown_cells_is_a_cube_of_the_margin():
    mask = np.zeros((5, 6, 7), bool)
    mask[2, 3, 3] = True
    np.testing.assert_array_equal(np.argwhere(grown_cells(mask, 1)).min(axis=0), (1, 2, 2))
    np.testing.assert_array_equal(np.argwhere(grown_cells(mask, 1)).max(axis=0), (3, 4, 4))
    assert grown_cells(mask, 1).sum() == 27 and grown_cells(mask, 0).sum() == 1


def test_detection_with_tiled_stage2_equals_one_pass_per_box():
    array = np.zeros((48, 112, 104), np.uint8)
    array[8:40, 10:100, 12:90] = 255
    image = grey_image(array)
    whole = detect_image(image, hybrid_network(), GREY)
    tiled = detect_image(image, hybrid_network(), GREY, max_voxels_stage2=(2 * STAGE2_HALO + 4) ** 3 * 512)
    np.testing.assert_array_equal(labelmap_array(tiled), labelmap_array(whole))
    assert [(d.box, d.volume_ml) for d in tiled.detections] == [(d.box, d.volume_ml) for d in whole.detections]


def test_stage2_reports_progress_and_honours_cancel_between_convolutions():
    array = np.zeros((24, 24, 24), np.uint8)
    array[4:12, 4:12, 4:12] = 255
    reports = []
    detect_image(grey_image(array), hybrid_network(), GREY, progress=lambda f, m: reports.append((f, m)))
    stage2 = [m for _, m in reports if m.startswith("stage 2 box 1/1, tile 1/1")]
    convolutions = sum(isinstance(m, torch.nn.Conv3d) for m in LowResStage2().modules())
    assert len(stage2) >= convolutions  # once per tile, then before every convolution
    calls = []
    stage1_checks = sum(isinstance(m, torch.nn.Conv3d) for m in LowResStage1().modules())

    def cancel_in_stage2() -> bool:
        calls.append(len(reports))
        return len(calls) > stage1_checks + 8  # the first checks pass (stage 1's, tile start, first convolutions)

    reports.clear()
    with pytest.raises(Cancelled):
        detect_image(grey_image(array), hybrid_network(), GREY, cancel=cancel_in_stage2,
                     progress=lambda f, m: reports.append((f, m)))
    assert reports[-1][1].startswith("stage 2") and reports[-1][0] < 1.0


@pytest.mark.parametrize("max_voxels", [10**9, 50_000])  # one tile, several
def test_stage1_reports_progress_and_honours_cancel_before_every_convolution(max_voxels):
    network = random_network(2)
    volume = torch.rand(1, 1, 240, 16, 16, generator=torch.Generator().manual_seed(3))
    tiles = len(plan_tiles([n // 8 for n in volume.shape[2:]], max_voxels))
    convolutions = sum(isinstance(m, torch.nn.Conv3d) for m in network.stage1.modules())
    reports = []
    with torch.inference_mode():
        stage1_features(network.stage1, volume, max_voxels, progress=lambda f, m: reports.append(f))
    assert len(reports) == tiles * convolutions + 1 and reports == sorted(reports) and reports[-1] == 1.0
    checks = []
    with pytest.raises(Cancelled), torch.inference_mode():
        stage1_features(network.stage1, volume, max_voxels, cancel=lambda: checks.append(1) or len(checks) > 3)
    assert len(checks) == 4  # stopped at the fourth convolution
    assert not any(m._forward_pre_hooks for m in network.stage1.modules())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_convolution_in_slabs_equals_the_whole_convolution(kernel, layout):
    conv = torch.nn.Conv3d(3, 4, kernel, padding=kernel // 2).to(memory_format=layout)
    x = torch.randn(1, 3, 23, 9, 7, generator=torch.Generator().manual_seed(5)).contiguous(memory_format=layout)
    shares = []
    macs_per_row = 9 * 7 * 3 * kernel**3 * 4
    with torch.inference_mode():
        whole = conv(x)
        with interruptible_convolutions(conv, shares.append, max_macs=5 * macs_per_row):
            slabs = conv(x)
    assert shares == [first / 23 for first in range(0, 23, 5)]  # 5 rows per slab, the last 3
    torch.testing.assert_close(slabs, whole, rtol=1e-5, atol=1e-5)
    assert slabs.is_contiguous(memory_format=layout)  # the layout oneDNN chose is kept for what follows


def test_bfloat16_convolutions_run_in_larger_slabs():
    conv = torch.nn.Conv3d(3, 4, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(1, 3, 40, 9, 7, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    macs_per_row = 9 * 7 * 3 * 27 * 4
    counts = {}
    with torch.inference_mode():
        whole = conv(x)
        for dtype in (torch.float32, torch.bfloat16):
            shares = []
            with interruptible_convolutions(conv.to(dtype), shares.append, max_macs=macs_per_row):
                slabs = conv(x.to(dtype))
            counts[dtype] = len(shares)
    assert counts == {torch.float32: 40, torch.bfloat16: 40 // BFLOAT16_SLAB_SCALE}
    torch.testing.assert_close(slabs, whole)


def test_stage2_precision_follows_the_cpu_and_refuses_emulated_bfloat16(monkeypatch):
    monkeypatch.setattr(lowres_module, "native_bfloat16", lambda: False)
    assert stage2_dtype("auto") == stage2_dtype("float32") == torch.float32
    with pytest.raises(LiteSegError, match="no native bfloat16") as error:
        stage2_dtype("bfloat16")
    assert error.value.remedy == Remedy("precision", "float32")
    monkeypatch.setattr(lowres_module, "native_bfloat16", lambda: True)
    assert stage2_dtype("auto") == stage2_dtype("bfloat16") == torch.bfloat16
    assert stage2_dtype("float32") == torch.float32
    with pytest.raises(LiteSegError, match="unknown precision 'float16'"):
        stage2_dtype("float16")


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_stage2_is_close_to_float32_and_leaves_the_callers_network_in_float32():
    network = random_network(5)
    volume = torch.rand(1, 1, 32, 64, 64, generator=torch.Generator().manual_seed(6))
    box8 = Box((0, 0, 0), (4, 8, 8))
    maps = {}
    with torch.inference_mode():
        features = network.stage1(volume)
        for dtype in (torch.float32, torch.bfloat16):
            maps[dtype] = np.zeros((32, 64, 64), np.float16)
            refine_box(channels_last(network).stage2.to(dtype), features, box8, np.ones(box8.shape, bool), maps[dtype])
    reference = maps[torch.float32].astype(np.float32)
    assert np.abs(reference).max() > 0.1
    np.testing.assert_allclose(maps[torch.bfloat16].astype(np.float32), reference, atol=0.05 * np.abs(reference).max())
    array = np.zeros((32, 64, 64), np.uint8)
    array[8:24, 16:48, 16:48] = 255
    detect_image(grey_image(array), network, GREY, precision="bfloat16")
    assert all(p.dtype == torch.float32 for p in network.parameters())


def test_detection_runs_a_channels_last_copy_and_leaves_the_callers_network_as_it_was():
    network = LowResNet().train()
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    fast = channels_last(network)
    assert network.training and not fast.training
    assert all(p.is_contiguous() for p in network.parameters())  # the caller's weights keep their layout
    assert fast.stage2.refine1[0].body[1].weight.is_contiguous(memory_format=torch.channels_last_3d)
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)
    volume = torch.rand(1, 1, 16, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(fast.eval()(volume), network.eval()(volume), rtol=1e-4, atol=1e-4)


def test_interruptible_convolutions_restore_the_modules_and_stop_where_the_callback_raises():
    stage2 = LowResStage2()
    features = LowResFeatures(*(torch.rand(1, c, *(n * s for n in (2, 2, 2)))
                                for c, s in ((1, 8), (1, 4), (16, 4), (32, 2), (64, 1), (1, 1))))
    with torch.inference_mode():
        expected = stage2(features)

        calls = []

        def cancel_third(share: float) -> None:
            calls.append(share)
            if len(calls) == 3:
                raise Cancelled("stop")

        with pytest.raises(Cancelled), interruptible_convolutions(stage2, cancel_third, max_macs=2**16):
            stage2(features)
        assert len(calls) == 3
        assert not any("forward" in vars(m) for m in stage2.modules())
        torch.testing.assert_close(stage2(features), expected)


def test_upsampled_logits_in_slabs_equal_one_interpolation():
    logits8 = torch.randn(1, 1, 11, 3, 4, generator=torch.Generator().manual_seed(4))
    whole = F.interpolate(logits8, scale_factor=8, mode="trilinear", align_corners=False)[0, 0, :85, :20, :30]
    np.testing.assert_allclose(upsampled_logits(logits8, (85, 20, 30)), whole.numpy(), rtol=1e-3, atol=1e-3)


# --- CSV and CLI ---------------------------------------------------------------------------


def test_detections_csv_columns(tmp_path):
    array = np.zeros((32, 32, 32), np.uint8)
    array[2:6, 3:8, 20:30] = 255
    result = detect_image(grey_image(array, (0.5, 1.0, 2.0)), known_network(), GREY)
    path = write_detections_csv(result.detections, tmp_path / "d.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == DETECTION_CSV_COLUMNS
    row, detection = rows[0], result.detections[0]
    assert int(row["index"]) == 1
    assert float(row["volume_ml"]) == pytest.approx(detection.volume_ml, abs=1e-6)
    assert float(row["centre_r_mm"]) == pytest.approx(-detection.centre[0], abs=1e-3)
    assert [int(row[f"box_{a}_{e}"]) for a in "kji" for e in ("start", "stop")] == [0, 16, 0, 16, 8, 32]
    assert float(row["size_i_mm"]) == pytest.approx(24 * 0.5)
    empty = write_detections_csv([], tmp_path / "e.csv")
    assert empty.read_text().strip() == ",".join(DETECTION_CSV_COLUMNS)


def write_lowres_card(folder, preprocessing: dict) -> str:
    weights = folder / "lowres-test.pt"
    torch.save(random_network(5).state_dict(), weights)
    card = {
        "name": "lowres-test",
        "version": "0.0.1",
        "network": "lowres",
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "input": {"preprocessing": preprocessing},
        "output": {"activation": "sigmoid", "threshold": 0.5},
        "labels": [{"value": 1, "name": "Lesion"}],
    }
    path = folder / "lowres-test.json"
    path.write_text(json.dumps(card))
    return str(path)


def test_detect_command_writes_labelmap_and_csv(tmp_path, capsys):
    array = np.zeros((24, 24, 32), np.uint8)
    array[6:14, 6:14, 8:20] = 255
    image = grey_image(array, (0.7, 0.7, 1.5), (4.0, 5.0, 6.0))
    sitk.WriteImage(image, str(tmp_path / "in.nii.gz"))
    parser = argparse.ArgumentParser()
    configure_detect_parser(parser)
    card = write_lowres_card(tmp_path, GREY.to_dict())
    args = parser.parse_args([str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"), "--model", card, "--threshold", "0.3"])
    assert run_detect(args) == 0
    output = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert output.GetSize() == image.GetSize() and output.GetOrigin() == pytest.approx(image.GetOrigin())
    csv_path = default_csv_path(tmp_path / "out.nii.gz")
    assert csv_path == tmp_path / "out_detections.csv"
    assert csv_path.read_text().splitlines()[0] == ",".join(DETECTION_CSV_COLUMNS)
    assert "detection(s)" in capsys.readouterr().out
    with pytest.raises(LiteSegError, match="exists"):
        run_detect(args)


def test_detect_command_refuses_a_non_lowres_card(tmp_path):
    parser = argparse.ArgumentParser()
    configure_detect_parser(parser)
    card = json.loads(open(write_lowres_card(tmp_path, GREY.to_dict())).read())
    card["network"] = "monet"
    (tmp_path / "monet.json").write_text(json.dumps(card))
    args = parser.parse_args(["in.nii.gz", str(tmp_path / "out.nii.gz"), "--model", str(tmp_path / "monet.json")])
    with pytest.raises(LiteSegError, match="lowres"):
        run_detect(args)


def test_without_a_bundled_lowres_model_the_card_must_be_given(tmp_path, monkeypatch):
    monkeypatch.setenv("LITESEG_MODELS", str(tmp_path))
    with pytest.raises(WeightsError, match=r"no LowRes model is bundled: give a model card \(model=CARD.json\)$"):
        find_lowres_card(None)
    card = write_lowres_card(tmp_path, GREY.to_dict())
    assert find_lowres_card(None).path == find_lowres_card(card).path
