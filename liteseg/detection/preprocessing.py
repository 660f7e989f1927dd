"""Intensity normalisation of a LowRes model's input, and the canonical, padded volume the networks
work on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from liteseg.errors import ALLOW_NON_CT, InvalidImageError, LiteSegError
from liteseg.io.geometry import SliceOrientation, slice_orientation
from liteseg.io.images import check_ct_intensities, check_volume

_PREPROCESSING_KINDS = ("hu_window", "grey_0_255")


@dataclass(frozen=True)
class DetectionPreprocessing:
    """Intensity normalisation of a LowRes model's input (3D, native spacing).

    kind "hu_window": clip to `window` in HU and scale to [0, 1] (LUNA16: [-1000, 300]); the
    input must look like a CT in HU. kind "grey_0_255": grey levels 0-255 (DeepLesion PNG
    slices) divided by 255 after clipping to [0, 255]; the input must lie in [0, 255] (a CT in
    HU does not). `allow_non_ct` skips either check.
    """

    kind: str = "hu_window"
    window: Optional[tuple[float, float]] = (-1000.0, 300.0)

    def __post_init__(self) -> None:
        if self.kind not in _PREPROCESSING_KINDS:
            raise LiteSegError(f"unknown detection preprocessing {self.kind!r}; expected one of {_PREPROCESSING_KINDS}")
        if self.kind == "hu_window" and (self.window is None or self.window[0] >= self.window[1]):
            raise LiteSegError(f"preprocessing 'hu_window' needs a window (low, high), got {self.window}")
        if self.kind == "grey_0_255" and self.window is not None:
            raise LiteSegError("preprocessing 'grey_0_255' takes no window")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DetectionPreprocessing:
        if "kind" not in data:
            raise LiteSegError(f"not a detection preprocessing (no 'kind'): {data}")
        window = data.get("window")
        return cls(kind=data["kind"], window=tuple(window) if window is not None else None)  # type: ignore[arg-type]

    def check(self, image: sitk.Image, allow_non_ct: bool = False) -> None:
        """Refuse an image whose intensities cannot be what this preprocessing expects."""
        if allow_non_ct:
            return
        if self.kind == "hu_window":
            check_ct_intensities(image)
            return
        array = sitk.GetArrayViewFromImage(image)
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise InvalidImageError(
                f"input intensities {low:g} to {high:g}: this model expects grey levels 0-255 (DeepLesion 8-bit "
                "slices), not Hounsfield units; rescale the volume to 0-255 or use a model trained on HU",
                ALLOW_NON_CT,
            )

    def normalize(self, volume: np.ndarray) -> np.ndarray:
        """The volume mapped to [0, 1] as float32."""
        low, high = self.window if self.kind == "hu_window" else (0.0, 255.0)  # type: ignore[misc]
        volume = volume.astype(np.float32, copy=False)
        return (np.clip(volume, low, high) - np.float32(low)) / np.float32(high - low)


def canonical_input(image: sitk.Image, preprocessing: DetectionPreprocessing, allow_non_ct: bool,
                    multiple: int = 8) -> tuple[SliceOrientation, tuple[int, int, int], np.ndarray]:
    """Check `image` (3D: `imageio.as_3d`) and return its orientation, its canonical shape and the
    normalised canonical volume zero-padded at the far ends to a multiple of `multiple` (float32)."""
    check_volume(image)
    preprocessing.check(image, allow_non_ct)
    orientation = slice_orientation(image)
    volume = orientation.to_canonical(sitk.GetArrayViewFromImage(image))
    padded = np.zeros(tuple(-(-n // multiple) * multiple for n in volume.shape), dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = preprocessing.normalize(volume)
    return orientation, volume.shape, padded
