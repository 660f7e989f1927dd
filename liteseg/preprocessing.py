"""Each model's own input preprocessing, stored in its model card and applied identically in
training and inference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

import numpy as np

from .errors import LiteSegError

if TYPE_CHECKING:
    import torch


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
        volume = volume.astype(np.float32, copy=False)
        if self.modality == "CT":
            low, high = self.window  # type: ignore[misc]
            return (np.clip(volume, low, high) - low) / (high - low)
        foreground = volume[volume != 0]
        foreground = foreground if foreground.size else volume.ravel()
        std = float(foreground.std()) or 1.0
        return (volume - float(foreground.mean())) / std


def resize_slices(slices: "torch.Tensor", size: tuple[int, int], labels: bool = False) -> "torch.Tensor":
    """Resize a batch of slices (N, C, H, W): linear for images and probabilities, nearest for labels."""
    import torch.nn.functional as F  # here, so that model cards can be read without torch

    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    if labels:
        return F.interpolate(slices, size=size, mode="nearest-exact")
    return F.interpolate(slices, size=size, mode="bilinear", align_corners=False)
