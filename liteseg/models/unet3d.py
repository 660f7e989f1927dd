"""The 3D U-Net baseline of LowRes (the paper's Table 1): a plain 3D U-Net of LowRes's depth
(three 2x2x2 poolings, down to 1/8 resolution), 16 filters doubled at every level, one sigmoid
output. Run by `detection.sliding_window`, trained by `training.unet3d_trainer`."""

from __future__ import annotations

from liteseg.models.pocketnet import PocketNet

DEPTH = 3  # poolings, as LowRes's 1/8 resolution
MULTIPLE = 2**DEPTH


def unet3d() -> PocketNet:
    """The baseline network: U-Net blocks, 16-32-64-128 filters, 2x2x2 pooling, one output."""
    return PocketNet("unet", spatial_dims=3, constant_width=False, out_channels=1, filters=16, depth=DEPTH,
                     scale=(2, 2, 2))
