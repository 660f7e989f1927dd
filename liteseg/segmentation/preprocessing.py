"""Each model's own input preprocessing, stored in its model card and applied identically in
training and inference."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from liteseg.errors import LiteSegError

if TYPE_CHECKING:
    import torch


Normaliser = Callable[[np.ndarray], np.ndarray]
"""Maps raw intensities (any part of one volume) to float32 network input."""


@dataclass(frozen=True)
class Preprocessing:
    """Intensity normalisation and slice size of a 2D slice-by-slice model.

    modality "CT": clip to `window` (HU) and scale to [0, 1] (MoNet pancreas: [-150, 200]).
    modality "MR": z-score over the volume's nonzero voxels (no window).
    """

    modality: str = "CT"
    window: tuple[float, float] | None = (-150.0, 200.0)
    slice_size: tuple[int, int] = (256, 256)

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MR"):
            raise LiteSegError(f"unknown modality {self.modality!r}; expected 'CT' or 'MR'")
        if self.modality == "CT" and (self.window is None or self.window[0] >= self.window[1]):
            raise LiteSegError(f"a CT preprocessing needs a window (low, high), got {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        window = data.get("window")
        return cls(
            modality=data["modality"],
            window=tuple(window) if window is not None else None,  # type: ignore[arg-type]
            slice_size=tuple(data["slice_size"]),  # type: ignore[arg-type]
        )

    def normalize(self, volume: np.ndarray) -> np.ndarray:
        """Intensities of a whole volume mapped to the network's range, as float32."""
        return self.normalizer(volume)(volume)

    def normalizer(self, volume: np.ndarray) -> Normaliser:
        """A function normalising any part of `volume` (e.g. a batch of slices) exactly as
        `normalize` does the whole: MR statistics are those of the whole volume, computed in
        chunks so that no float copy of the volume is made."""
        if self.modality == "CT":
            low, high = self.window  # type: ignore[misc]
            return lambda part: (np.clip(part.astype(np.float32, copy=False), low, high) - low) / np.float32(high - low)
        mean, std = nonzero_mean_std(volume)
        return lambda part: ((part.astype(np.float32, copy=False) - mean) / std).astype(np.float32, copy=False)


def nonzero_mean_std(volume: np.ndarray, chunk: int = 16) -> tuple[float, float]:
    """Mean and standard deviation of the nonzero voxels (all voxels when none is nonzero),
    accumulated over chunks of the first axis in float64; a zero deviation is reported as 1."""
    count, total, squares = 0, 0.0, 0.0
    for start in range(0, volume.shape[0], chunk):
        part = volume[start : start + chunk]
        values = part[part != 0].astype(np.float64)
        count, total, squares = count + values.size, total + values.sum(), squares + np.square(values).sum()
    if count == 0:
        return 0.0, 1.0
    mean = total / count
    return mean, float(np.sqrt(max(squares / count - mean * mean, 0.0))) or 1.0


def resize_slices(slices: "torch.Tensor", size: tuple[int, int], labels: bool = False) -> "torch.Tensor":
    """Resize a batch of slices (N, C, H, W): linear for images and probabilities, nearest for labels."""
    import torch.nn.functional as F  # here, so that model cards can be read without torch

    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    if labels:
        return F.interpolate(slices, size=size, mode="nearest-exact")
    return F.interpolate(slices, size=size, mode="bilinear", align_corners=False)
