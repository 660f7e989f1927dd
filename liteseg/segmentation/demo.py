"""`liteseg demo`: segment the sample CT with the bundled weights, draw outlines, print Dice and time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from liteseg.evaluation.metrics import dice
from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample
from liteseg.io.geometry import slice_orientation
from liteseg.io.images import read_image, write_image
from liteseg.io.modelcard import DEFAULT_MODEL
from liteseg.progress import ProgressCallback
from liteseg.segmentation.inference import load_model, segment_image, with_card_defaults

DISPLAY_WINDOW = (-200.0, 300.0)  # HU, soft-tissue display
PREDICTION_RGB = (255, 40, 40)
REFERENCE_RGB = (40, 220, 40)


@dataclass
class DemoResult:
    segmentation: Path
    picture: Path
    dice: float
    seconds: dict[str, float]
    model: str
    card: Path  # the model card: what the model was trained on and what it was measured on
    recorded_dice: Optional[float]  # the card's Dice on this CT (liteseg evaluate --record), if any


def outline(mask: np.ndarray) -> np.ndarray:
    """Boolean outline (one pixel wide, inside the object) of a 2D mask."""
    contour = sitk.BinaryContour(sitk.GetImageFromArray(mask.astype(np.uint8)), fullyConnected=True)
    return sitk.GetArrayFromImage(contour).astype(bool)


def outline_picture(
    ct: sitk.Image, prediction: sitk.Image, reference: sitk.Image, zoom: int = 3
) -> np.ndarray:
    """RGB uint8 picture of three axial slices through the reference object, with the
    prediction's outline in red and the reference's in green (radiological display)."""
    orientation = slice_orientation(ct)
    volume = orientation.to_canonical(sitk.GetArrayViewFromImage(ct)).astype(np.float32)
    predicted = orientation.to_canonical(sitk.GetArrayViewFromImage(prediction)) > 0
    expected = orientation.to_canonical(sitk.GetArrayViewFromImage(reference)) > 0.5
    filled = np.flatnonzero(expected.any(axis=(1, 2)))
    if filled.size == 0:
        filled = np.array([volume.shape[0] // 2])
    picks = [int(filled[int(q * (filled.size - 1))]) for q in (0.25, 0.5, 0.75)]
    low, high = DISPLAY_WINDOW
    panels = []
    for index in picks:
        grey = ((np.clip(volume[index], low, high) - low) / (high - low) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[outline(expected[index])] = REFERENCE_RGB
        rgb[outline(predicted[index])] = PREDICTION_RGB
        panels.append(rgb.repeat(zoom, axis=0).repeat(zoom, axis=1))
    gap = np.zeros((panels[0].shape[0], 4, 3), dtype=np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def run_demo(
    output_dir: str | Path = "liteseg-demo",
    model: str | Path = DEFAULT_MODEL,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Segment the sample CT; write the labelmap and the outline PNG into `output_dir`.

    The demo's own two output files are replaced on every run.
    """
    output_dir = Path(output_dir)
    started = time.perf_counter()
    ct = read_image(fetch_sample(SAMPLE_CT))
    reference = read_image(fetch_sample(SAMPLE_PANCREAS))
    network, card = load_model(model)
    load_seconds = time.perf_counter() - started
    result = segment_image(ct, network, card.preprocessing, **with_card_defaults(card, {"progress": progress}))
    started = time.perf_counter()
    segmentation = write_image(result.labelmap, output_dir / "sample_ct_pancreas.nii.gz", overwrite=True)
    picture_path = output_dir / "sample_ct_pancreas_outline.png"
    picture = sitk.GetImageFromArray(outline_picture(ct, result.labelmap, reference), isVector=True)
    sitk.WriteImage(picture, str(picture_path))
    seconds = {"load": load_seconds, **result.seconds, "write": time.perf_counter() - started}
    score = dice(sitk.GetArrayViewFromImage(result.labelmap) > 0, sitk.GetArrayViewFromImage(reference) > 0.5)
    return DemoResult(segmentation, picture_path, score, seconds, f"{card.name} {card.version}", card.path,
                      card.sample_ct_dice)
