"""3D patch sampling for LowRes training (patches centred on a lesion with probability 0.5).

A `PatchVolume` holds one case in the canonical (S, P, L) orientation that detection uses
(`geometry.slice_orientation`), normalised by the model's `DetectionPreprocessing`, with its 0/1
lesion mask and the list of lesion voxels. `sample_patch` cuts one patch of `patch_size`
(canonical order: slices, rows, columns); `sample_batch` draws a batch from several volumes.

Patch size: the LowRes paper uses 64^3 patches (the default `DEFAULT_PATCH_SIZE`). A volume
smaller than the patch along an axis is padded with 0 (the bottom of the normalised range, as
detection pads) and label 0, at a random side: DeepLesion slabs are 512 x 512 x 13-16 voxels, so
for them use e.g. (16, 64, 64), which pads the 13-16 slices to 16 (a multiple of 8, so the
stage-1 levels nest exactly) instead of padding three quarters of a 64-slice patch.

Placement along each axis of n voxels with a patch of p: the patch start lies in
[min(0, n - p), max(0, n - p)] (negative starts pad before the volume). A lesion-centred patch
puts its centre (index p // 2) on a lesion voxel drawn uniformly among all lesion voxels of the
volume, clamped to that range, so the voxel is always inside the patch; otherwise the start is
uniform over the range. Every random choice uses the given seeded `torch.Generator`.
`random_flips` mirrors patches along the in-plane axes (an optional augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.errors import LiteSegError
from liteseg.io.geometry import slice_orientation
from liteseg.io.images import label_mask

DEFAULT_PATCH_SIZE = (64, 64, 64)
LESION_PROBABILITY = 0.5


@dataclass
class PatchVolume:
    """One case ready for sampling: `image` float16 in [0, 1] and `label` uint8 0/1, both
    (D, H, W) in canonical order, and `lesion_voxels` (N, 3) int32 indices of label 1."""

    image: torch.Tensor
    label: torch.Tensor
    lesion_voxels: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def has_lesion(self) -> bool:
        return len(self.lesion_voxels) > 0

    @classmethod
    def from_arrays(cls, image: np.ndarray, label: np.ndarray) -> PatchVolume:
        """From a normalised canonical image array and a 0/1 (or boolean) label array."""
        if image.ndim != 3 or image.shape != label.shape:
            raise LiteSegError(f"need 3D image and label arrays of one shape, got {image.shape} and {label.shape}")
        mask = np.ascontiguousarray(label != 0)
        return cls(
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float16)),
            torch.from_numpy(mask.astype(np.uint8)),
            torch.from_numpy(np.argwhere(mask).astype(np.int32)),
        )


def canonical_volume(image: sitk.Image, reference: sitk.Image, preprocessing, label_values: Iterable[int] | None = None) -> PatchVolume:
    """A `PatchVolume` of an image and its label on the same grid: both viewed in the canonical
    orientation, the image normalised by `preprocessing` (anything with `normalize(array)`,
    e.g. `DetectionPreprocessing`), the label merged to 0/1 (`label_values`; None: nonzero)."""
    orientation = slice_orientation(image)
    volume = preprocessing.normalize(orientation.to_canonical(sitk.GetArrayViewFromImage(image)))
    labels = label_mask(orientation.to_canonical(sitk.GetArrayViewFromImage(reference)), label_values)
    return PatchVolume.from_arrays(volume, labels)


class Patch(NamedTuple):
    """A sampled patch: image (1, *patch_size) float32, label (1, *patch_size) float32 0/1,
    the patch start in volume voxels (negative where padded before) and whether it was centred
    on a lesion voxel."""

    image: torch.Tensor
    label: torch.Tensor
    start: tuple[int, int, int]
    on_lesion: bool


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """The patch size as three positive ints, or LiteSegError."""
    size = tuple(int(p) for p in patch_size)
    if len(size) != 3 or any(p < 1 for p in size) or any(p != q for p, q in zip(size, patch_size)):
        raise LiteSegError(f"patch size must be three positive whole numbers, got {tuple(patch_size)}")
    return size  # type: ignore[return-value]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _crop(tensor: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """tensor[start : start + size] along the three axes, zero-padded where outside."""
    out = tensor.new_zeros(tuple(size))
    source, target = [], []
    for a, p, n in zip(start, size, tensor.shape):
        lo, hi = max(a, 0), min(a + p, n)
        source.append(slice(lo, hi))
        target.append(slice(lo - a, hi - a))
    out[tuple(target)] = tensor[tuple(source)]
    return out


def sample_patch(
    volume: PatchVolume,
    patch_size: Sequence[int],
    generator: torch.Generator,
    on_lesion: bool | None = None,
    lesion_probability: float = LESION_PROBABILITY,
) -> Patch:
    """One patch of `volume` (see the module docstring). `on_lesion` None draws it with
    `lesion_probability`; a volume without lesion voxels always gives a uniform patch."""
    size = check_patch_size(patch_size)
    if on_lesion is None:
        on_lesion = bool(torch.rand((), generator=generator).item() < lesion_probability)
    on_lesion = on_lesion and volume.has_lesion
    ranges = [(min(0, n - p), max(0, n - p)) for n, p in zip(volume.shape, size)]
    if on_lesion:
        centre = volume.lesion_voxels[_randint(0, len(volume.lesion_voxels) - 1, generator)].tolist()
        start = tuple(min(max(c - p // 2, lo), hi) for c, p, (lo, hi) in zip(centre, size, ranges))
    else:
        start = tuple(_randint(lo, hi, generator) for lo, hi in ranges)
    image = _crop(volume.image, start, size).float()[None]
    label = _crop(volume.label, start, size).float()[None]
    return Patch(image, label, start, on_lesion)  # type: ignore[arg-type]


def sample_batch(
    volumes: Sequence[PatchVolume],
    batch_size: int,
    patch_size: Sequence[int],
    generator: torch.Generator,
    lesion_probability: float = LESION_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A batch (B, 1, *patch_size) of images and labels and how many were lesion-centred.

    Each patch is lesion-centred with `lesion_probability`, then taken from a volume drawn
    uniformly among those with lesions (lesion-centred) or among all volumes (uniform)."""
    if not volumes:
        raise LiteSegError("no volumes to sample patches from")
    with_lesion = [v for v in volumes if v.has_lesion]
    images, labels, centred = [], [], 0
    for _ in range(batch_size):
        on_lesion = bool(torch.rand((), generator=generator).item() < lesion_probability) and bool(with_lesion)
        pool = with_lesion if on_lesion else volumes
        patch = sample_patch(pool[_randint(0, len(pool) - 1, generator)], patch_size, generator, on_lesion=on_lesion)
        images.append(patch.image)
        labels.append(patch.label)
        centred += patch.on_lesion
    return torch.stack(images), torch.stack(labels), centred


def random_flips(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch of a batch (B, 1, D, H, W) and its label mirrored along H (rows, P) and W
    (columns, L), each with probability 0.5 (slices are never mirrored)."""
    flips = torch.rand((images.shape[0], 2), generator=generator) < 0.5
    images, labels = images.clone(), labels.clone()
    for b, (rows, columns) in enumerate(flips.tolist()):
        dims = [d for d, flip in ((2, rows), (3, columns)) if flip]
        if dims:
            images[b] = images[b].flip(dims)
            labels[b] = labels[b].flip(dims)
    return images, labels
