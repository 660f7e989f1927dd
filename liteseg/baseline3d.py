"""The 3D U-Net baseline of LowRes (the paper's Table 1): a sliding window over the whole volume.

`unet3d` is a plain 3D U-Net of LowRes's depth (three 2x2x2 poolings, down to 1/8 resolution),
16 filters doubled at every level, one sigmoid output. `sliding_window_logits` runs it on
overlapping windows of the canonical, normalised volume (the same input LowRes gets) and
averages the overlapping logits; `detect_sliding_window` thresholds that map and makes one
detection per 26-connected component (box = the component's bounding box), so both methods are
scored by the same FROC code. `train_unet3d` trains it on the LowRes patch sampler with soft Dice
plus binary cross-entropy and Adam: a benchmark baseline, not a shipped model (no checkpoints,
no model card).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .components import component_boxes, label_components
from .detection import DetectionPreprocessing, DetectionResult, canonical_input, labelmap_image, make_detection
from .errors import LiteSegError
from .imageio import as_3d
from .models.pocketnet import PocketNet
from .training.losses import dice_loss
from .training.patches import PatchVolume, random_flips, sample_batch

DEPTH = 3  # poolings, as LowRes's 1/8 resolution
MULTIPLE = 2**DEPTH


def unet3d() -> PocketNet:
    """The baseline network: U-Net blocks, 16-32-64-128 filters, 2x2x2 pooling, one output."""
    return PocketNet("unet", spatial_dims=3, constant_width=False, out_channels=1, filters=16, depth=DEPTH,
                     scale=(2, 2, 2))


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Starts of windows of `window` voxels covering `size` voxels with at least `overlap`
    (fraction) between neighbours, the last one flush with the end (one window when it fits)."""
    if window >= size:
        return [0]
    count = math.ceil((size - window) / (window * (1.0 - overlap))) + 1
    return sorted({round(i * (size - window) / (count - 1)) for i in range(count)})


def sliding_window_logits(network: torch.nn.Module, volume: np.ndarray, window: Sequence[int], overlap: float = 0.5) -> np.ndarray:
    """Mean logits of `network` over overlapping windows of a (D, H, W) float32 volume whose
    sizes are multiples of 8; windows larger than the volume shrink to it."""
    if not 0.0 <= overlap < 1.0:
        raise LiteSegError(f"overlap must be in [0, 1), got {overlap}")
    window = [min(w, n) for w, n in zip(window, volume.shape)]
    if any(w % MULTIPLE for w in window):
        raise LiteSegError(f"window {window} must be multiples of {MULTIPLE}")
    total = np.zeros(volume.shape, np.float32)
    count = np.zeros(volume.shape, np.float32)
    starts = list(itertools.product(*(window_starts(n, w, overlap) for n, w in zip(volume.shape, window))))
    tensor = torch.from_numpy(volume)
    network.eval()
    with torch.inference_mode():
        for start in starts:
            index = tuple(slice(a, a + w) for a, w in zip(start, window))
            total[index] += network(tensor[index][None, None])[0, 0].numpy()
            count[index] += 1.0
    return total / count


def detect_sliding_window(image: sitk.Image, network: torch.nn.Module, preprocessing: DetectionPreprocessing,
                          window: Sequence[int], threshold: float = 0.5, overlap: float = 0.5,
                          allow_non_ct: bool = False) -> DetectionResult:
    """Labelmap and detections of the baseline on `image` (same conventions as `detect_image`)."""
    if not 0.0 < threshold < 1.0:
        raise LiteSegError(f"threshold must be between 0 and 1, got {threshold}")
    times: dict[str, float] = {}
    started = time.perf_counter()
    image = as_3d(image)
    orientation, shape, padded = canonical_input(image, preprocessing, allow_non_ct, MULTIPLE)
    times["preprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    logits = sliding_window_logits(network, padded, window, overlap)[: shape[0], : shape[1], : shape[2]]
    times["network"] = time.perf_counter() - started
    started = time.perf_counter()
    foreground = logits > math.log(threshold / (1.0 - threshold))
    labels, _ = label_components(foreground)
    detections = []
    for component in component_boxes(foreground, margin=0):
        box = component.box
        mask = labels[box.slices()] == component.label
        detections.append(make_detection(len(detections) + 1, image, orientation, shape, box, mask,
                                         float(logits[box.slices()][mask].max())))
    times["postprocess"] = time.perf_counter() - started
    return DetectionResult(labelmap_image(foreground, orientation, image), detections, times)


def unet3d_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Soft Dice (over the batch) plus binary cross-entropy."""
    return dice_loss(logits, labels) + F.binary_cross_entropy_with_logits(logits, labels)


def train_unet3d(volumes: Sequence[PatchVolume], steps: int, batch_size: int, patch_size: Sequence[int],
                 seed: int = 0, lr: float = 1e-3, flip: bool = True,
                 progress: Optional[Callable[[int, float], None]] = None) -> PocketNet:
    """The baseline trained for `steps` batches of lesion-centred-with-probability-0.5 patches
    with Adam (`lr`, then lr/10 for the last fifth); `progress(step, loss)`. Adam rather than
    LowRes's SGD: with SGD at 1e-2 the loss did not fall within a few hundred batches."""
    if steps < 1 or batch_size < 1:
        raise LiteSegError(f"steps and batch size must be at least 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = unet3d().train()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr if step <= round(0.8 * steps) else lr / 10
        images, labels, _ = sample_batch(volumes, batch_size, patch_size, generator)
        if flip:
            images, labels = random_flips(images, labels, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = unet3d_loss(network(images), labels)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, float(loss.item()))
    return network.eval()
