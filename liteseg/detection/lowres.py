"""LowRes two-stage detection: boxes from stage 1, full-resolution refinement by stage 2.

`detect_image` runs stage 1 on the whole volume (in overlapping tiles when it is large),
thresholds the 1/8-resolution logits, takes the 26-connected components, grows each one's box by
`margin` low-resolution voxels (clipped to the image), runs stage 2 on the stage-1 features
cropped to each box and writes the box's logits into a full-resolution logit map. That map starts
from the trilinearly upsampled stage-1 logits, as the authors' code does (the paper says zeros);
with the default margin of 1 the choice cannot change the labelmap, because outside every box
the upsampled logits only mix cells below the threshold.

The network works in the canonical (S, P, L) orientation (`geometry.slice_orientation`) with the
volume padded at its far ends to a multiple of 8 (with 0, the bottom of the normalised range), so
that every level nests exactly; results are mapped back to the image's own array order exactly.

Stage 2 refines each box in overlapping tiles of at most `max_voxels_stage2` voxels (cut like
stage 1's, with `STAGE2_HALO` cells of context, so a tile's core equals the unsplit box there up
to float rounding) and only the tiles whose core holds a cell of the component or of its margin:
in a box around a sprawling component the far, empty parts keep the upsampled stage-1 logits,
which are below the threshold there. Progress is reported and the cancel flag checked before
every slab of every convolution of both stages (`interruptible`), so a large volume neither
freezes a GUI nor ignores Cancel.

Stage 2 runs in bfloat16 on CPUs that compute it natively (AVX512-BF16 or AMX; `precision`
"auto"), else in float32: on a 512x512x128 volume its labelmap agreed with float32's at Dice
0.999 (README "Performance"). Stage 1, which decides the boxes, is always float32. Large
temporary tensors reuse freed memory instead of fresh page-faulting mappings
(`liteseg.cpu.reused_large_allocations`).

Memory: the stage-1 features of the whole volume are kept for stage 2 (about 11 bytes per input
voxel in float32), the full-resolution logit map is float16 (2 bytes per voxel) and is filled
slab by slab; stage 1 itself runs on tiles of at most `max_voxels_stage1` input voxels.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from liteseg.components import Box, component_boxes, label_components
from liteseg.cpu import native_bfloat16, reused_large_allocations
from liteseg.detection.interruptible import interruptible_convolutions
from liteseg.detection.preprocessing import DetectionPreprocessing, canonical_input
from liteseg.detection.results import DetectionResult, labelmap_image, make_detection
from liteseg.detection.tiling import STAGE2_HALO, plan_tiles
from liteseg.errors import Cancelled, LiteSegError, Remedy, WeightsError
from liteseg.io.images import as_3d
from liteseg.io.modelcard import ModelCard, bundled_cards, find_card, load_network
from liteseg.models.lowres import LowResFeatures, LowResNet, LowResStage1
from liteseg.progress import CancelFlag, ProgressCallback, is_cancelled

DEFAULT_MAX_VOXELS_STAGE1 = 2**25  # input voxels per stage-1 tile: ~1.3 GB of activations (~40 B/voxel)


DEFAULT_MAX_VOXELS_STAGE2 = 2**22  # full-resolution voxels per stage-2 tile (~17 channels: ~0.3 GB per activation)


# Stitched stage-1 levels and their voxels per x8 voxel along each axis (x1 is the input).
_LEVEL_FACTOR = {"x2_inp": 4, "x2": 4, "x4": 2, "x8": 1, "logits8": 1}


_SLAB_CELLS = 4  # x8 rows per slab when upsampling the stage-1 logits to full resolution


LOWRES_NETWORK = "lowres"  # the network name of LowRes model cards


_LOGIT_LIMIT = 60000.0  # logits are clamped to the float16 range of the full-resolution map


PRECISIONS = ("auto", "float32", "bfloat16")  # of stage 2; "auto": bfloat16 where the CPU has it natively


def stage2_dtype(precision: str) -> torch.dtype:
    """The dtype stage 2 runs in for a `precision` of PRECISIONS (see the module docstring)."""
    if precision not in PRECISIONS:
        raise LiteSegError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and not native_bfloat16():
        raise LiteSegError("this CPU has no native bfloat16 (AVX512-BF16 or AMX): it would be emulated, slower than "
                           "float32", Remedy("precision", "float32"))
    native = precision == "bfloat16" or (precision == "auto" and native_bfloat16())
    return torch.bfloat16 if native else torch.float32


def stage1_features(
    stage1: LowResStage1,
    volume: torch.Tensor,
    max_voxels: int = DEFAULT_MAX_VOXELS_STAGE1,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelFlag = None,
) -> LowResFeatures:
    """Stage 1 on a (1, 1, D, H, W) volume, in overlapping tiles aligned to multiples of 8 when
    it has more than `max_voxels` voxels; each tile's central part is stitched into every level,
    which equals the untiled pass up to float rounding. `stage1` must be in eval mode. Progress
    is reported and `cancel` checked before every slab of every convolution (`interruptible`),
    so that even one large tile neither freezes a GUI nor ignores Cancel."""
    spatial = tuple(volume.shape[2:])
    tiles = plan_tiles([-(-n // 8) for n in spatial], max_voxels)
    convolutions = sum(isinstance(m, torch.nn.Conv3d) for m in stage1.modules())
    state = {"tile": 0, "convolution": 0}

    def checkpoint(share: float) -> None:
        state["convolution"] += share == 0.0  # a convolution starts
        if is_cancelled(cancel):
            raise Cancelled("detection cancelled")
        if progress is not None:
            done = (state["tile"] + (state["convolution"] - 1 + share) / convolutions) / len(tiles)
            progress(done, f"stage 1 tile {state['tile'] + 1}/{len(tiles)}" if len(tiles) > 1 else "stage 1")

    with interruptible_convolutions(stage1, checkpoint):
        if len(tiles) == 1:
            features = stage1(volume)
            if progress is not None:
                progress(1.0, "stage 1")
            return features
        stitched: dict[str, torch.Tensor] = {}
        for number, (core, tile) in enumerate(tiles):
            state["tile"], state["convolution"] = number, 0
            part = stage1(volume[(..., *(slice(a * 8, b * 8) for a, b in zip(tile.start, tile.stop)))])
            for name, factor in _LEVEL_FACTOR.items():
                level = getattr(part, name)
                if name not in stitched:
                    sizes = [-(-n * factor // 8) for n in spatial]
                    stitched[name] = level.new_empty((*level.shape[:2], *sizes))
                target = stitched[name]
                ends = [min(b * factor, n) for b, n in zip(core.stop, target.shape[2:])]
                source = tuple(slice((c - t) * factor, e - t * factor) for c, t, e in zip(core.start, tile.start, ends))
                target[(..., *(slice(c * factor, e) for c, e in zip(core.start, ends)))] = level[(..., *source)]
        if progress is not None:
            progress(1.0, f"stage 1 tile {len(tiles)}/{len(tiles)}")
    return LowResFeatures(volume, **stitched)


def channels_last(network: LowResNet) -> LowResNet:
    """An eval-mode copy of `network` with its weights in channels-last layout: oneDNN then runs
    every 3D convolution, and the activations that follow, channels-last (1.78x faster on a
    512x512x128 volume on 2 cores, the same labelmap; README "Performance")."""
    return copy.deepcopy(network).eval().to(memory_format=torch.channels_last_3d)


def upsampled_logits(logits8: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """Stage-1 logits (1, 1, d, h, w) upsampled x8 trilinearly and cropped to `shape`, as float16,
    computed in slabs along the first axis (each with one x8 row of context per side, which is
    all a trilinear x8 sample uses, so the slabs equal the whole)."""
    out = np.empty(tuple(shape), dtype=np.float16)
    rows = logits8.shape[2]
    for a in range(0, rows, _SLAB_CELLS):
        b = min(a + _SLAB_CELLS, rows)
        lo, hi = max(a - 1, 0), min(b + 1, rows)
        up = F.interpolate(logits8[:, :, lo:hi], scale_factor=8, mode="trilinear", align_corners=False)
        stop = min(b * 8, shape[0])
        rows_up = up[0, 0, (a - lo) * 8 : (a - lo) * 8 + stop - a * 8, : shape[1], : shape[2]]
        out[a * 8 : stop] = rows_up.clamp(-_LOGIT_LIMIT, _LOGIT_LIMIT).numpy()
    return out


def _object_mask(labels: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Voxels of the 26-connected components of `labels` (a box of the final map) that touch
    `core` (the box's own stage-1 cells), so that a neighbour reaching into the margin is not
    counted."""
    if not labels.any():
        return labels
    components, _ = label_components(labels)
    touching = np.unique(components[core & labels])
    return np.isin(components, touching[touching > 0])


def grown_cells(mask8: np.ndarray, margin: int) -> np.ndarray:
    """`mask8` grown by `margin` cells along every axis (a cube, like the boxes' margin)."""
    if margin == 0:
        return mask8.astype(bool)
    image = sitk.GetImageFromArray(mask8.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [margin] * 3, sitk.sitkBox)).astype(bool)


def refine_box(stage2: torch.nn.Module, features: LowResFeatures, box8: Box, wanted: np.ndarray,
               logit_map: np.ndarray, max_voxels: int = DEFAULT_MAX_VOXELS_STAGE2,
               on_tile: Optional[Callable[[int, int], None]] = None) -> int:
    """Stage 2 over the x8 box `box8`, tile by tile (`plan_tiles` with `STAGE2_HALO`), writing the
    full-resolution logits of each tile's core into `logit_map` (clamped to float16). Only tiles
    whose core holds a True cell of `wanted` (the box's cells to refine) are computed;
    `on_tile(done, planned)` is called before each. Stage 2 runs in the dtype of its weights (the
    features of each tile are converted to it). Returns the number of tiles computed."""
    shape = logit_map.shape
    dtype = next(stage2.parameters()).dtype
    origin = np.asarray(box8.start)
    tiles = [(core, tile) for core, tile in plan_tiles(box8.shape, max_voxels, STAGE2_HALO, "max_voxels_stage2")
             if wanted[core.slices()].any()]
    for number, (core, tile) in enumerate(tiles):
        if on_tile is not None:
            on_tile(number, len(tiles))
        start, stop = tuple(origin + tile.start), tuple(origin + tile.stop)
        logits = stage2(features.crop(start, stop).to(dtype))[0, 0].float()
        target = Box(tuple(origin + core.start), tuple(origin + core.stop)).scaled(8, shape)
        offset = [(c - t) * 8 for c, t in zip(core.start, tile.start)]
        inside = logits[tuple(slice(o, o + n) for o, n in zip(offset, target.shape))]
        logit_map[target.slices()] = inside.clamp(-_LOGIT_LIMIT, _LOGIT_LIMIT).numpy()
    return len(tiles)


def detect_image(
    image: sitk.Image,
    network: LowResNet,
    preprocessing: DetectionPreprocessing,
    threshold: float = 0.5,
    margin: int = 1,
    max_voxels_stage1: int = DEFAULT_MAX_VOXELS_STAGE1,
    allow_non_ct: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelFlag = None,
    refine: bool = True,
    max_voxels_stage2: int = DEFAULT_MAX_VOXELS_STAGE2,
    precision: str = "auto",
) -> DetectionResult:
    """Detect and segment objects with a LowRes network; see the module docstring.

    `refine` False skips stage 2: the final map is then the upsampled stage-1 map (used to
    validate stage 1 while it trains, before stage 2 has learnt anything).

    `precision` (PRECISIONS) is that of stage 2. `threshold` (probability) is used both on the
    stage-1 logits and on the final map. The detections are the stage-1 components whose box holds
    refined voxels touching the component's own cells, in stage-1 label order (raster order of
    the canonical grid). Finding nothing gives an empty labelmap and no detections.
    """
    if not 0.0 < threshold < 1.0:
        raise LiteSegError(f"threshold must be between 0 and 1, got {threshold}")
    if int(margin) != margin or margin < 0:
        raise LiteSegError(f"margin must be a non-negative whole number, got {margin}")
    logit_threshold = math.log(threshold / (1.0 - threshold))
    dtype = stage2_dtype(precision)
    times: dict[str, float] = {}
    started = time.perf_counter()
    image = as_3d(image)
    orientation, shape, padded = canonical_input(image, preprocessing, allow_non_ct)
    times["preprocess"] = time.perf_counter() - started

    def stage_progress(low: float, high: float) -> Optional[ProgressCallback]:
        if progress is None:
            return None
        return lambda fraction, message: progress(low + (high - low) * fraction, message)

    network = channels_last(network)
    network.stage2.to(dtype)
    with torch.inference_mode(), reused_large_allocations():
        started = time.perf_counter()
        features = stage1_features(
            network.stage1, torch.from_numpy(padded)[None, None], max_voxels_stage1, stage_progress(0.0, 0.6), cancel
        )
        mask8 = (features.logits8[0, 0] > logit_threshold).numpy()
        labels8, _ = label_components(mask8)
        components = component_boxes(mask8, margin)
        logit_map = upsampled_logits(features.logits8, shape)
        times["stage1"] = time.perf_counter() - started

        started = time.perf_counter()
        boxes = [component.box.scaled(8, shape) for component in components]
        if refine:
            _refine_components(network.stage2, features, labels8, components, margin, logit_map,
                               max_voxels_stage2, stage_progress(0.6, 1.0), cancel)
        times["stage2"] = time.perf_counter() - started

    started = time.perf_counter()
    foreground = logit_map > np.float32(logit_threshold)
    detections = []
    for component, box in zip(components, boxes):
        own = labels8[component.box.slices()] == component.label
        core = own.repeat(8, 0).repeat(8, 1).repeat(8, 2)[tuple(slice(0, n) for n in box.shape)]
        mask = _object_mask(foreground[box.slices()], core)
        if mask.any():
            peak = float(np.max(logit_map[box.slices()][mask]))
            detections.append(make_detection(len(detections) + 1, image, orientation, shape, box, mask, peak))
    labelmap = labelmap_image(foreground, orientation, image)
    times["postprocess"] = time.perf_counter() - started
    if progress is not None:
        progress(1.0, f"{len(detections)} detection(s)")
    return DetectionResult(labelmap, detections, times)


def _refine_components(stage2: torch.nn.Module, features: LowResFeatures, labels8: np.ndarray,
                       components: Sequence, margin: int, logit_map: np.ndarray, max_voxels: int,
                       progress: Optional[ProgressCallback], cancel: CancelFlag) -> None:
    """Stage 2 over every component's box (`refine_box` on the component's cells grown by
    `margin`), reporting progress in [0, 1] and checking `cancel` before each convolution slab."""
    state = {"fraction": 0.0, "message": "stage 2"}

    def checkpoint(share: float = 0.0) -> None:
        if is_cancelled(cancel):
            raise Cancelled("detection cancelled")
        if progress is not None:
            progress(state["fraction"], state["message"])

    count = len(components)
    with interruptible_convolutions(stage2, checkpoint):
        for number, component in enumerate(components):
            def on_tile(done: int, planned: int, number: int = number) -> None:
                state["fraction"] = (number + done / planned) / count
                state["message"] = f"stage 2 box {number + 1}/{count}, tile {done + 1}/{planned}"
                checkpoint()

            wanted = grown_cells(labels8[component.box.slices()] == component.label, margin)
            refine_box(stage2, features, component.box, wanted, logit_map, max_voxels, on_tile)


def find_lowres_card(model: str | Path | None) -> ModelCard:
    """The card of `model` (name or .json path), or of the only bundled LowRes model."""
    if model is None:
        cards = [card for card in bundled_cards() if card.network == LOWRES_NETWORK]
        if not cards:
            raise WeightsError("no LowRes model is bundled: give a model card", Remedy("model", "CARD.json"))
        if len(cards) > 1:
            raise LiteSegError(f"several LowRes models are bundled ({', '.join(c.name for c in cards)})",
                               Remedy("model", "NAME", "to choose one"))
        return cards[0]
    card = find_card(model)
    if card.network != LOWRES_NETWORK:
        raise LiteSegError(f"model {card.name!r} is a {card.network!r} network; detection needs a {LOWRES_NETWORK!r} model")
    return card


def load_detector(card: ModelCard) -> tuple[LowResNet, DetectionPreprocessing]:
    """The card's LowRes network (checksum verified, eval mode) and its detection preprocessing."""
    try:
        preprocessing = DetectionPreprocessing.from_dict(card.data["input"]["preprocessing"])
    except (KeyError, TypeError) as error:
        raise WeightsError(f"model card {card.path} has no usable input preprocessing: {error}") from None
    return load_network(card), preprocessing  # type: ignore[return-value]
