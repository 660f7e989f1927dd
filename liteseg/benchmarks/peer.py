"""The peer our users would run instead, timed on the same CT: TotalSegmentator `--fast` (task 297,
a 3 mm nnU-Net), replicated with random weights, since its weights cannot be downloaded here.

The replica: `dynamic_network_architectures`' PlainConvUNet (5 stages, 32-64-128-256-320 features,
3x3x3 kernels, strides 1-2-2-2-2, 2 convolutions per stage in encoder and decoder, InstanceNorm,
LeakyReLU, 118 classes), run as nnU-Net runs it: the CT resampled to 3 mm and z-scored, a sliding
window of 112x112x128 voxels with tile step 0.8 and Gaussian weighting (sigma 1/8 of the patch, no
mirroring), the argmax resampled back to the CT's grid. Its cost does not depend on the weights.

`dynamic_network_architectures` is optional and not a declared extra: its dependencies (timm,
torchvision) would replace the CPU build of torch; install it alone with
`pip install --no-deps dynamic_network_architectures==0.4.4 einops`.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.benchmarks.fresh_process import run_in_fresh_process
from liteseg.benchmarks.memory import peak_rss_mb
from liteseg.errors import LiteSegError

PATCH = (112, 112, 128)  # (z, y, x) of the 3 mm plan
SPACING_MM = 3.0
TILE_STEP = 0.8
CLASSES = 118
INSTALL = "pip install --no-deps dynamic_network_architectures==0.4.4 einops"


def plain_conv_unet() -> type:
    """nnU-Net's PlainConvUNet class; LiteSegError saying how to install it when it is missing."""
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        raise LiteSegError(f"the peer benchmark needs dynamic_network_architectures, which is not installed ({INSTALL})") from None
    return PlainConvUNet


def peer_network() -> torch.nn.Module:
    """The TotalSegmentator `--fast` network with random weights, in eval mode."""
    return plain_conv_unet()(
        input_channels=1, n_stages=5, features_per_stage=(32, 64, 128, 256, 320), conv_op=torch.nn.Conv3d,
        kernel_sizes=3, strides=(1, 2, 2, 2, 2), n_conv_per_stage=2, num_classes=CLASSES, n_conv_per_stage_decoder=2,
        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    ).eval()


def window_steps(size: int, patch: int, step: float = TILE_STEP) -> list[int]:
    """nnU-Net's window starts along one axis: the fewest windows at most `step` x patch apart,
    spread evenly from 0 to size - patch (`size` >= `patch`)."""
    if size <= patch:
        return [0]
    count = math.ceil((size - patch) / (patch * step)) + 1
    spacing = (size - patch) / (count - 1)
    return [round(spacing * i) for i in range(count)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's window weights: a Gaussian of sigma `sigma_scale` x patch centred in the patch,
    scaled to a maximum of 10, with no zero (a float32 tensor of shape `patch`)."""
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (n * sigma_scale)) ** 2) for n in patch]
    weights = np.einsum("i,j,k->ijk", *axes)
    weights = weights / weights.max() * 10
    weights[weights == 0] = weights[weights > 0].min()
    return torch.from_numpy(weights.astype(np.float32))


def sliding_window_labels(network: torch.nn.Module, volume: torch.Tensor, patch: Sequence[int] = PATCH) -> tuple[np.ndarray, int]:
    """Argmax of the Gaussian-weighted logits of `network` over windows of `patch` on a (D, H, W)
    float32 volume (zero-padded to at least the patch), and the number of windows."""
    shape = volume.shape
    padded = torch.zeros([max(n, p) for n, p in zip(shape, patch)])
    padded[: shape[0], : shape[1], : shape[2]] = volume
    weights = gaussian_importance(patch)
    logits = torch.zeros((CLASSES, *padded.shape))
    total = torch.zeros(padded.shape)
    starts = list(itertools.product(*(window_steps(n, p) for n, p in zip(padded.shape, patch))))
    with torch.inference_mode():
        for start in starts:
            index = tuple(slice(a, a + p) for a, p in zip(start, patch))
            logits[(slice(None), *index)] += network(padded[index][None, None])[0] * weights
            total[index] += weights
    labels = (logits / total).argmax(0)[: shape[0], : shape[1], : shape[2]]
    return labels.numpy().astype(np.uint8), len(starts)


@dataclass
class PeerRow:
    seconds: dict[str, float]
    grid_3mm: tuple[int, ...]
    windows: int
    peak_mb: float

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def network(self) -> float:
        return self.seconds["sliding window"]


def peer_job(ct_path: str, threads: int) -> PeerRow:
    """The replica's whole job (run in a fresh process): read, resample to 3 mm, z-score, sliding
    window, argmax, resample back (nearest), write."""
    import tempfile
    from pathlib import Path

    torch.set_num_threads(threads)
    network = peer_network()
    seconds = {}
    started = time.perf_counter()
    ct = sitk.ReadImage(ct_path)
    seconds["read"] = time.perf_counter() - started
    started = time.perf_counter()
    size = [max(1, round(n * s / SPACING_MM)) for n, s in zip(ct.GetSize(), ct.GetSpacing())]
    coarse = sitk.Resample(ct, size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), [SPACING_MM] * 3,
                           ct.GetDirection(), -1024, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(coarse)
    volume = torch.from_numpy((array - array.mean()) / max(float(array.std()), 1e-8))
    seconds["preprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    labels, windows = sliding_window_labels(network, volume)
    seconds["sliding window"] = time.perf_counter() - started
    started = time.perf_counter()
    coarse_labels = sitk.GetImageFromArray(labels)
    coarse_labels.CopyInformation(coarse)
    full = sitk.Resample(coarse_labels, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    seconds["postprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        sitk.WriteImage(full, str(Path(folder) / "seg.nii.gz"), useCompression=True)
    seconds["write"] = time.perf_counter() - started
    return PeerRow(seconds, tuple(array.shape), windows, peak_rss_mb())


def bench_peer(ct_path: str, threads: int) -> PeerRow:
    """`peer_job` in a fresh process (its peak memory its own)."""
    plain_conv_unet()  # a missing dependency is said here, not in the child
    return run_in_fresh_process(peer_job, str(ct_path), threads)


def format_peer_table(peer: PeerRow, ours_total: float, ours_network: float) -> str:
    stages = ", ".join(f"{stage} {value:.2f}" for stage, value in peer.seconds.items())
    return "\n".join([
        f"TotalSegmentator --fast replica (random weights): 3 mm grid {'x'.join(map(str, peer.grid_3mm))}, "
        f"{peer.windows} window(s) of {'x'.join(map(str, PATCH))}, peak {peer.peak_mb:.0f} MB",
        f"  whole job {peer.total:.2f} s ({stages})",
        f"  ratio to our default job: whole job {peer.total / ours_total:.1f}x, network {peer.network / ours_network:.1f}x",
    ])
