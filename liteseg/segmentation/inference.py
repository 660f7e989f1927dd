"""Geometry-exact slice-by-slice inference: image in, uint8 labelmap on exactly the input grid out.

Used by the CLI (`liteseg segment`) and by the Slicer modules, which pass a progress callback
and a cancel flag.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from liteseg.components import largest_component
from liteseg.errors import Cancelled, InvalidImageError, LiteSegError, WeightsError
from liteseg.io.dicom_series import series_files
from liteseg.io.geometry import slice_orientation
from liteseg.io.images import (
    as_3d,
    case_name,
    check_ct_intensities,
    check_output_path,
    check_volume,
    image_suffix,
    read_image,
    write_image,
)
from liteseg.io.modelcard import DEFAULT_MODEL, ModelCard, find_card, load_network
from liteseg.progress import BarFactory, CancelFlag, ProgressCallback, is_cancelled, iterate
from liteseg.segmentation.localisation import (
    Localisation,
    Region,
    coarse_indices,
    covered_slices,
    find_regions,
    region_slices,
)
from liteseg.segmentation.preprocessing import Normaliser, Preprocessing, resize_slices
from liteseg.segmentation.runtime import Runner, batch_for, make_runner


@dataclass
class SegmentationResult:
    """A labelmap on the input grid, with the time each stage took (seconds), the regions the
    full pass segmented (none: the whole volume, or nothing: see `message`) and a message for
    the user when the localisation pass found nothing (the labelmap is then empty)."""

    labelmap: sitk.Image
    seconds: dict[str, float] = field(default_factory=dict)
    regions: list[Region] = field(default_factory=list)
    message: str = ""

    @property
    def foreground_voxels(self) -> int:
        return int(np.count_nonzero(sitk.GetArrayViewFromImage(self.labelmap)))

    @property
    def foreground_ml(self) -> float:
        return self.foreground_voxels * float(np.prod(self.labelmap.GetSpacing())) / 1000.0


def _model_input(volume: np.ndarray, index, normalise: Normaliser, slice_size: tuple[int, int]) -> torch.Tensor:
    """Slices `index` of a canonical volume, normalised and resized to the model's grid (N, 1, H, W)."""
    part = normalise(np.ascontiguousarray(volume[index]))
    return resize_slices(torch.from_numpy(np.ascontiguousarray(part))[:, None], slice_size)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _labels(probability: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """uint8 labels of model-grid probabilities (N, C, H, W) resized linearly to `size`."""
    probability = resize_slices(probability, size)
    if probability.shape[1] == 1:
        return (probability[:, 0] > threshold).numpy().astype(np.uint8)
    return probability.argmax(dim=1).numpy().astype(np.uint8)


def check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise LiteSegError(f"threshold must be between 0 and 1, got {threshold}")


def _batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


class SliceProgress:
    """Reports `done / total` slices, checking the cancel flag at each report."""

    def __init__(self, total: int, progress: Optional[ProgressCallback], cancel: CancelFlag) -> None:
        self.total, self.done, self.progress, self.cancel = total, 0, progress, cancel

    def check(self) -> None:
        if is_cancelled(self.cancel):
            raise Cancelled("segmentation cancelled")

    def advance(self, slices: int, what: str) -> None:
        self.done += slices
        if self.progress is not None:
            self.progress(min(self.done / self.total, 1.0), what)


@dataclass(frozen=True)
class Localiser:
    """A network that runs the localisation's first look instead of the segmenting one, with its
    own preprocessing (e.g. a 128x128 slice grid) and threshold."""

    network: nn.Module
    preprocessing: Preprocessing
    threshold: float

    @classmethod
    def of(cls, network: nn.Module, card: ModelCard) -> "Localiser":
        return cls(network, card.preprocessing, card.threshold)


@dataclass(frozen=True)
class FirstLook:
    """How the first look runs: the runner, its normaliser, its slice grid and threshold."""

    runner: Runner
    normalise: Normaliser
    slice_size: tuple[int, int]
    threshold: float


def load_localiser(model: str) -> Localiser:
    """The localiser a card's localisation names (bundled model name or card path), loaded once
    per process for each card and weights checksum."""
    card = find_card(model)
    return _loaded_localiser(str(card.path.resolve()), card.data["sha256"])


@functools.lru_cache(maxsize=4)
def _loaded_localiser(card_path: str, _sha256: str) -> Localiser:
    try:
        return Localiser.of(*load_model(card_path))
    except WeightsError as error:
        raise WeightsError(f"the localisation's first-look model cannot be used: {error.message}") from None


def locate(
    look: FirstLook,
    volume: np.ndarray,
    grid: tuple[int, int],
    indices: np.ndarray,
    step: int,
    localisation: Localisation,
    batch_size: int,
    progress: SliceProgress,
) -> list[Region]:
    """Run the first look on the canonical slices `indices` (about `step` apart); the regions
    around its foreground on the segmenting model's slice `grid` (none when it finds nothing)."""
    masks = []
    for batch in _batches(indices, batch_size):
        progress.check()
        logits = look.runner(_model_input(volume, batch, look.normalise, look.slice_size))
        masks.append(_labels(_probabilities(logits), grid, look.threshold) > 0)
        progress.advance(len(batch), f"locating: slice {batch[-1] + 1}/{volume.shape[0]}")
    return find_regions(np.concatenate(masks), indices, volume.shape[0], step, localisation.margin_px)


def predict_canonical(
    runner: Runner,
    volume: np.ndarray,
    normalise: Normaliser,
    slice_size: tuple[int, int],
    write: Callable[[int, np.ndarray], None],
    threshold: float = 0.5,
    batch_size: int = 16,
    regions: Sequence[Region] = (),
    progress: Optional[SliceProgress] = None,
) -> None:
    """Labels (uint8) of a canonical volume (slices, rows, cols), batch by batch, each batch of
    consecutive slices handed to `write(first_slice, labels)`: slices are normalised and resized
    to `slice_size`, probabilities resized back linearly and thresholded, so no copy of the whole
    volume is ever made. With `regions` (not overlapping), only their slices and in-plane boxes
    are run (the caller's output is background elsewhere)."""
    check_threshold(threshold)
    n_slices, rows, cols = volume.shape
    regions = list(regions) or [Region(0, n_slices, 0, slice_size[0], 0, slice_size[1])]
    progress = progress or SliceProgress(covered_slices(regions), None, None)
    for first, stop in region_slices(regions):
        for batch in _batches(np.arange(first, stop), batch_size):
            progress.check()
            inputs = _model_input(volume, batch, normalise, slice_size)
            probability = None
            for region in regions:
                inside = torch.from_numpy((batch >= region.first) & (batch < region.stop))
                if not inside.any():
                    continue
                crop = inputs[inside, :, region.row0 : region.row1, region.col0 : region.col1]
                logits = runner(crop)
                if probability is None:
                    probability = torch.zeros((len(batch), logits.shape[1], *slice_size))
                    if logits.shape[1] > 1:
                        probability[:, 0] = 1.0  # background outside the regions
                probability[inside, :, region.row0 : region.row1, region.col0 : region.col1] = _probabilities(logits)
            write(int(batch[0]), _labels(probability, (rows, cols), threshold))
            progress.advance(len(batch), f"slice {batch[-1] + 1}/{n_slices}")


def segment_image(
    image: sitk.Image,
    network: nn.Module,
    preprocessing: Preprocessing,
    threshold: float = 0.5,
    keep_largest: bool = False,
    batch_size: Optional[int] = None,
    allow_non_ct: bool = False,
    localisation: Optional[Localisation] = None,
    backend: str = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: CancelFlag = None,
    localiser: Optional[Localiser] = None,
) -> SegmentationResult:
    """Segment a 3D image slice by slice along its axial axis; the labelmap has its exact grid.

    With `localisation`, a coarse pass over every few slices first finds where the organ can be
    and the full pass runs only in the regions around what it found; when it finds nothing, a
    second look halfway between its slices, and when that finds nothing either, an empty labelmap
    with `message` saying so (no slow whole-volume pass: `localisation=None` segments every slice). The coarse pass runs
    `localiser`, else the model `localisation.model` names (`load_localiser`), else `network`.
    `backend` is how the network is executed (see `liteseg.segmentation.runtime`; results equal up to float
    rounding); `batch_size` (slices per batch) defaults to the backend's best.
    """
    check_threshold(threshold)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise LiteSegError(f"batch_size must be a whole number of slices >= 1, got {batch_size}")
    times: dict[str, float] = {}
    started = time.perf_counter()
    image = as_3d(image)
    check_volume(image, single_slice=True)
    if preprocessing.modality == "CT" and not allow_non_ct:
        check_ct_intensities(image)
    orientation = slice_orientation(image)
    volume = orientation.to_canonical(sitk.GetArrayViewFromImage(image))
    if min(volume.shape[1:]) < 2:
        raise InvalidImageError(f"input is a single slice that is not axial (canonical shape {volume.shape}): "
                                "this model segments axial slices")
    normalise = preprocessing.normalizer(volume)
    if progress is not None:
        progress(0.0, "preparing the network")  # OpenVINO converts a network once per set of weights (seconds)
    runner = make_runner(network, backend)
    times["preprocess"] = time.perf_counter() - started

    regions: list[Region] = []
    labelmap = sitk.Image(image.GetSize(), sitk.sitkUInt8)  # background; filled slab by slab
    labelmap.CopyInformation(image)
    n_slices = volume.shape[0]
    tracker = SliceProgress(n_slices, progress, cancel)
    if localisation is not None:
        started = time.perf_counter()
        look = _first_look(localisation, localiser, volume, preprocessing, backend, FirstLook(
            runner, normalise, preprocessing.slice_size, threshold))
        step = localisation.step(orientation.canonical_spacing(image)[0])
        looks = [coarse_indices(n_slices, step)]
        if step > 1:  # a finer second look, halfway between, only if the first finds nothing
            looks.append(looks[0][looks[0] + step // 2 < n_slices] + step // 2)
        tracker.total = len(looks[0]) + n_slices
        for number, indices in enumerate(looks):
            tracker.total += len(indices) if number else 0
            regions = locate(look, volume, preprocessing.slice_size, indices, step, localisation,
                             batch_size or batch_for(look.slice_size, backend), tracker)
            if regions:
                break
        times["localise"] = time.perf_counter() - started
        if not regions:
            looked = sum(len(indices) for indices in looks)
            if progress is not None:
                progress(1.0, "nothing found")
            return SegmentationResult(labelmap, times, [], (
                f"nothing found in the scanned range: the localisation pass looked at {looked} of {n_slices} "
                "slices and found no foreground, so the result is empty; segment the whole volume "
                "(localisation off) to check every slice"))
        tracker.total = tracker.done + covered_slices(regions)

    started = time.perf_counter()
    crop = max(((r.row1 - r.row0, r.col1 - r.col0) for r in regions), default=preprocessing.slice_size,
               key=lambda size: size[0] * size[1])
    predict_canonical(runner, volume, normalise, preprocessing.slice_size,
                      lambda first, labels: orientation.paste_slices(labelmap, first, labels), threshold,
                      batch_size or batch_for(crop, backend), regions, tracker)
    times["inference"] = time.perf_counter() - started

    started = time.perf_counter()
    if keep_largest:
        labels = sitk.GetArrayFromImage(labelmap)
        labelmap = sitk.GetImageFromArray(largest_component(labels > 0) * labels)
        labelmap.CopyInformation(image)
    times["postprocess"] = time.perf_counter() - started
    return SegmentationResult(labelmap, times, regions)


def _first_look(localisation: Localisation, localiser: Optional[Localiser], volume: np.ndarray,
                preprocessing: Preprocessing, backend: str, own: FirstLook) -> FirstLook:
    """The first look of `localisation`: `localiser`, else the model it names, else `own` (the
    segmenting network's); a localiser must take the same modality."""
    if localiser is None and localisation.model is not None:
        localiser = load_localiser(localisation.model)
    if localiser is None:
        return own
    if localiser.preprocessing.modality != preprocessing.modality:
        raise WeightsError(f"the localisation's first-look model takes {localiser.preprocessing.modality} "
                           f"but the segmenting model takes {preprocessing.modality}")
    return FirstLook(make_runner(localiser.network, backend), localiser.preprocessing.normalizer(volume),
                     localiser.preprocessing.slice_size, localiser.threshold)


def with_card_defaults(card: ModelCard, options: dict) -> dict:
    """`segment_image` options with the model card's threshold and localisation where not given."""
    return {"threshold": card.threshold, "localisation": card.localisation, **options}


def load_model(model: str | Path = DEFAULT_MODEL) -> tuple[nn.Module, ModelCard]:
    """The network (checksum verified, eval mode) and card of a bundled model name or card path;
    a card that is not a slice segmentation model (e.g. a LowRes detector) is refused. A checked
    int8 model beside the card becomes the network's "openvino-int8" form (see `quantization`)."""
    from liteseg.segmentation.quantization import register_card_int8

    card = find_card(model)
    if not card.segments_slices:
        raise WeightsError(f"model {card.name!r} (network {card.network}) is not a slice-by-slice segmentation model: "
                           "use it for detection (liteseg detect, the LowResDetect module)")
    network = load_network(card)
    register_card_int8(card, network)
    return network, card


def segment_file(
    input_path: str | Path,
    output_path: str | Path,
    model: str | Path = DEFAULT_MODEL,
    overwrite: bool = False,
    series: Optional[str] = None,
    dicom_seg: str | Path | None = None,
    **options,
) -> SegmentationResult:
    """Read `input_path` (file or DICOM folder; `series`: the series UID when it holds several),
    segment it, write `output_path` atomically, and for a DICOM input also a DICOM SEG at
    `dicom_seg` when given (`dicom_seg.write_dicom_seg`, needs highdicom).

    `options` are those of `segment_image` (threshold, keep_largest, localisation, ...); the
    threshold and localisation default to the model card's.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path, overwrite)
    if dicom_seg is not None:
        check_output_path(Path(dicom_seg), input_path, overwrite, suffixes=("",))
    if dicom_seg is not None:
        from liteseg.io.dicom_seg import require_highdicom

        if not input_path.is_dir():
            raise LiteSegError(f"a DICOM SEG references a DICOM series: {input_path} is not a DICOM folder")
        require_highdicom()
    network, card = load_model(model)
    started = time.perf_counter()
    files = series_files(input_path, series) if dicom_seg is not None else None  # scanned once, for both
    image = read_image(input_path, series, files)
    read_seconds = time.perf_counter() - started
    result = segment_image(image, network, card.preprocessing, **with_card_defaults(card, options))
    started = time.perf_counter()
    write_image(result.labelmap, output_path, overwrite=overwrite)
    result.seconds = {"read": read_seconds, **result.seconds, "write": time.perf_counter() - started}
    if dicom_seg is not None:
        from liteseg.io.dicom_seg import write_dicom_seg

        started = time.perf_counter()
        write_dicom_seg(result.labelmap, files, card, dicom_seg, overwrite)
        result.seconds["dicom_seg"] = time.perf_counter() - started
    return result


@dataclass
class FolderCase:
    """Outcome of one volume of a folder run."""

    input: Path
    output: Optional[Path]
    error: Optional[LiteSegError] = None
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
    bars: Optional[BarFactory] = None,
    **options,
) -> list[FolderCase]:
    """Segment every volume of a folder into `output_dir` (same file names; DICOM -> .nii.gz).

    A failing case is recorded and the others go on; the caller reports the summary. `bars`
    counts the volumes on a bar (none without it).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = folder_inputs(input_dir)
    if not inputs:
        raise LiteSegError(f"no images (.nii.gz, .nii, .nrrd, .mha, .mhd or DICOM series) in {input_dir}")
    network, card = load_model(model)
    options = with_card_defaults(card, options)
    cases: list[FolderCase] = []
    for path in iterate(inputs, bars, "segmenting", "volume"):
        output = output_dir / (case_name(path) + (image_suffix(path) or ".nii.gz"))
        started = time.perf_counter()
        try:
            check_output_path(output, path, overwrite)
            result = segment_image(read_image(path), network, card.preprocessing, **options)
            write_image(result.labelmap, output, overwrite=overwrite)
            cases.append(FolderCase(path, output, seconds=time.perf_counter() - started, foreground_ml=result.foreground_ml))
        except LiteSegError as error:
            cases.append(FolderCase(path, None, error=error, seconds=time.perf_counter() - started))
    return cases

