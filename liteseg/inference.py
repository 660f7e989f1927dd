"""Geometry-exact slice-by-slice inference: image in, uint8 labelmap on exactly the input grid out.

Used by the CLI (`liteseg segment`) and by the Slicer modules, which pass a progress callback
and a cancel flag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from .components import largest_component
from .errors import Cancelled, LiteSegError
from .geometry import slice_orientation
from .imageio import as_3d, case_name, check_ct_intensities, check_volume, image_suffix, read_image, write_image
from .modelcard import DEFAULT_MODEL, ModelCard, find_card, load_network
from .preprocessing import Preprocessing, resize_slices
from .progress import CancelFlag, ProgressCallback, is_cancelled

@dataclass
class SegmentationResult:
    """A labelmap on the input grid, with the time each stage took (seconds)."""

    labelmap: sitk.Image
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def foreground_voxels(self) -> int:
        return int(np.count_nonzero(sitk.GetArrayViewFromImage(self.labelmap)))

    @property
    def foreground_ml(self) -> float:
        return self.foreground_voxels * float(np.prod(self.labelmap.GetSpacing())) / 1000.0


def predict_canonical(
    network: nn.Module,
    volume: np.ndarray,
    slice_size: tuple[int, int],
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelFlag = None,
) -> np.ndarray:
    """Labels (uint8) of a normalised canonical volume (slices, rows, cols), slice by slice.

    Slices are resized to `slice_size` linearly, probabilities resized back linearly and
    thresholded batch by batch, so no full-resolution float copy of the volume's output is kept.
    """
    if not 0.0 < threshold < 1.0:
        raise LiteSegError(f"threshold must be between 0 and 1, got {threshold}")
    n_slices, rows, cols = volume.shape
    labels = np.zeros(volume.shape, dtype=np.uint8)
    network.eval()
    with torch.inference_mode():
        for start in range(0, n_slices, batch_size):
            if is_cancelled(cancel):
                raise Cancelled("segmentation cancelled")
            stop = min(start + batch_size, n_slices)
            batch = torch.from_numpy(np.ascontiguousarray(volume[start:stop]))[:, None]
            logits = network(resize_slices(batch, slice_size))
            if logits.shape[1] == 1:
                probability = resize_slices(torch.sigmoid(logits), (rows, cols))[:, 0]
                labels[start:stop] = (probability > threshold).numpy()
            else:
                probability = resize_slices(torch.softmax(logits, dim=1), (rows, cols))
                labels[start:stop] = probability.argmax(dim=1).numpy().astype(np.uint8)
            if progress is not None:
                progress(stop / n_slices, f"slice {stop}/{n_slices}")
    return labels


def segment_image(
    image: sitk.Image,
    network: nn.Module,
    preprocessing: Preprocessing,
    threshold: float = 0.5,
    keep_largest: bool = False,
    batch_size: int = 16,
    allow_non_ct: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelFlag = None,
) -> SegmentationResult:
    """Segment a 3D image slice by slice along its axial axis; the labelmap has its exact grid."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    image = as_3d(image)
    check_volume(image)
    if preprocessing.modality == "CT" and not allow_non_ct:
        check_ct_intensities(image)
    orientation = slice_orientation(image)
    volume = orientation.to_canonical(sitk.GetArrayViewFromImage(image))
    normalized = preprocessing.normalize(volume)
    times["preprocess"] = time.perf_counter() - started

    started = time.perf_counter()
    labels = predict_canonical(
        network, normalized, preprocessing.slice_size, threshold, batch_size, progress, cancel
    )
    times["inference"] = time.perf_counter() - started

    started = time.perf_counter()
    if keep_largest:
        labels = largest_component(labels > 0) * labels
    labelmap = sitk.GetImageFromArray(np.ascontiguousarray(orientation.from_canonical(labels)))
    labelmap.CopyInformation(image)
    times["postprocess"] = time.perf_counter() - started
    return SegmentationResult(labelmap, times)


def load_model(model: str | Path = DEFAULT_MODEL) -> tuple[nn.Module, ModelCard]:
    """The network (checksum verified, eval mode) and card of a bundled model name or card path."""
    card = find_card(model)
    return load_network(card), card


def segment_file(
    input_path: str | Path,
    output_path: str | Path,
    model: str | Path = DEFAULT_MODEL,
    overwrite: bool = False,
    **options,
) -> SegmentationResult:
    """Read `input_path` (file or DICOM folder), segment it, write `output_path` atomically.

    `options` are those of `segment_image` (threshold, keep_largest, batch_size, ...); the
    threshold defaults to the model card's.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise LiteSegError("output path is the input path: refusing to overwrite the input")
    if output_path.exists() and not overwrite:
        raise LiteSegError(f"output exists, not overwritten: {output_path} (use --overwrite)")
    network, card = load_model(model)
    started = time.perf_counter()
    image = read_image(input_path)
    read_seconds = time.perf_counter() - started
    options.setdefault("threshold", card.threshold)
    result = segment_image(image, network, card.preprocessing, **options)
    started = time.perf_counter()
    write_image(result.labelmap, output_path, overwrite=overwrite)
    result.seconds = {"read": read_seconds, **result.seconds, "write": time.perf_counter() - started}
    return result


@dataclass
class FolderCase:
    """Outcome of one volume of a folder run."""

    input: Path
    output: Optional[Path]
    error: str = ""
    seconds: float = 0.0
    foreground_ml: float = 0.0


def folder_inputs(folder: Path) -> list[Path]:
    """Image files directly in `folder`, plus sub-folders holding a DICOM series, sorted."""
    inputs = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if image_suffix(path) and path.is_file():
            inputs.append(path)
        elif path.is_dir() and sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)):
            inputs.append(path)
    return inputs


def segment_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    model: str | Path = DEFAULT_MODEL,
    overwrite: bool = False,
    progress_bar: bool = True,
    **options,
) -> list[FolderCase]:
    """Segment every volume of a folder into `output_dir` (same file names; DICOM -> .nii.gz).

    A failing case is recorded and the others go on; the caller reports the summary.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = folder_inputs(input_dir)
    if not inputs:
        raise LiteSegError(f"no images (.nii.gz, .nii, .nrrd, .mha, .mhd or DICOM series) in {input_dir}")
    network, card = load_model(model)
    options.setdefault("threshold", card.threshold)
    cases: list[FolderCase] = []
    iterator = inputs
    if progress_bar:
        from tqdm import tqdm

        iterator = tqdm(inputs, desc="segmenting", unit="volume")
    for path in iterator:
        output = output_dir / (case_name(path) + (image_suffix(path) or ".nii.gz"))
        started = time.perf_counter()
        try:
            if output.exists() and not overwrite:
                raise LiteSegError(f"output exists, not overwritten: {output} (use --overwrite)")
            result = segment_image(read_image(path), network, card.preprocessing, **options)
            write_image(result.labelmap, output, overwrite=overwrite)
            cases.append(FolderCase(path, output, seconds=time.perf_counter() - started, foreground_ml=result.foreground_ml))
        except LiteSegError as error:
            cases.append(FolderCase(path, None, error=str(error), seconds=time.perf_counter() - started))
    return cases

