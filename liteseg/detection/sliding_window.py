"""The 3D U-Net baseline of LowRes (the paper's Table 1) as a detector: a sliding window over the
whole volume.

`sliding_window_logits` runs the network (`models.unet3d`) on overlapping windows of the
canonical, normalised volume (the same input LowRes gets) and averages the overlapping logits;
`detect_sliding_window` thresholds that map and makes one detection per 26-connected component
(box = the component's bounding box), so both methods are scored by the same FROC code.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.components import component_boxes, label_components
from liteseg.detection.preprocessing import DetectionPreprocessing, canonical_input
from liteseg.detection.results import DetectionResult, labelmap_image, make_detection
from liteseg.errors import LiteSegError
from liteseg.io.images import as_3d
from liteseg.models.unet3d import MULTIPLE


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
