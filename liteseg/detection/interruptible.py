"""3D convolutions that can be interrupted: run in slabs, with a callback before each slab.

One full-resolution 3D convolution of a large tile takes seconds on a laptop CPU; a Cancel click
(seen when the progress callback runs) would wait that long. Inside `interruptible_convolutions`
each 'same' convolution of a module runs in slabs along its first spatial axis, each slab given
its neighbours' rows as context and zeros only at the volume's own ends, so the slabs together
equal the whole convolution up to float rounding.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_SLAB_MACS = 2**32  # multiply-accumulates per slab: about 0.15 s on 2 cores
DEFAULT_SLAB_VOXELS = 2**20  # output voxels per slab, for the memory-bound 1x1x1 convolutions
BFLOAT16_SLAB_SCALE = 8  # bfloat16 (on CPUs that have it natively) runs 3-5x faster: larger slabs, fewer copies

SlabCallback = Callable[[float], None]  # called with the share of the convolution already done


def _slabs_apply(conv: nn.Conv3d) -> bool:
    """Whether `conv` may be cut along depth: stride 1, no dilation, zero 'same' padding."""
    kernel, padding = conv.kernel_size[0], conv.padding
    return (conv.stride == (1, 1, 1) and conv.dilation == (1, 1, 1) and conv.padding_mode == "zeros"
            and not isinstance(padding, str) and kernel == 2 * padding[0] + 1)


def _forward_in_slabs(conv: nn.Conv3d, callback: SlabCallback, max_macs: int, max_voxels: int,
                      x: torch.Tensor) -> torch.Tensor:
    depth, plane = x.shape[2], x.shape[3] * x.shape[4]
    if x.dtype == torch.bfloat16:
        max_macs, max_voxels = max_macs * BFLOAT16_SLAB_SCALE, max_voxels * BFLOAT16_SLAB_SCALE
    rows = max(1, min(max_macs // (plane * conv.weight[0].numel() * conv.out_channels), max_voxels // plane))
    if depth <= rows or not _slabs_apply(conv):
        callback(0.0)
        return nn.Conv3d.forward(conv, x)
    pad = conv.padding[0]
    layout = torch.channels_last_3d if x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
    out = None
    for first in range(0, depth, rows):
        callback(first / depth)
        stop = min(first + rows, depth)
        low, high = max(first - pad, 0), min(stop + pad, depth)
        part = x[:, :, low:high]  # a view: inside the volume the neighbours' rows are the padding
        if (first - low, high - stop) != (pad, pad):  # a slab at an end of the volume: zeros beyond it
            part = F.pad(part, (0, 0, 0, 0, pad - (first - low), pad - (high - stop))).contiguous(memory_format=layout)
        y = F.conv3d(part, conv.weight, conv.bias, 1, (0, *conv.padding[1:]))
        if out is None:
            out = torch.empty((*y.shape[:2], depth, *y.shape[3:]), dtype=y.dtype, device=y.device, memory_format=layout)
        out[:, :, first:stop] = y
    return out


@contextlib.contextmanager
def interruptible_convolutions(module: nn.Module, callback: SlabCallback, max_macs: int = DEFAULT_SLAB_MACS,
                               max_voxels: int = DEFAULT_SLAB_VOXELS) -> Iterator[None]:
    """Inside the block, every 3D convolution of `module` runs in slabs of at most `max_macs`
    multiply-accumulates and `max_voxels` output voxels, calling `callback(share_done)` before each (0.0 when a convolution
    starts; it may raise, e.g. `Cancelled`, to stop the forward pass)."""
    convolutions = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    for conv in convolutions:
        conv.forward = functools.partial(_forward_in_slabs, conv, callback, max_macs, max_voxels)
    try:
        yield
    finally:
        for conv in convolutions:
            del conv.forward  # the class's own forward again
