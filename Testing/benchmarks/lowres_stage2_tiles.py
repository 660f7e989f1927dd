"""LowRes stage 2 in tiles against one pass per box, on the bundled LowRes model and a 512x512x128
volume (the first DeepLesion slab repeated 8 times, as `liteseg bench-detection` builds it).

    python Testing/benchmarks/lowres_stage2_tiles.py [BUDGET ...]   # default: 2**22 and 2**30 voxels

Prints one row per stage-2 tile budget: seconds per stage, detections, labelled voxels.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.detection.lowres import detect_image, find_lowres_card, load_detector
from liteseg.io.data import data_root

SLAB = "ct/lesions_DeepLesion/CT_Lesion_000001_02_01_008-023_img_uint8.nii.gz"


def large_volume(repeats: int = 8) -> sitk.Image:
    slab = sitk.ReadImage(str(data_root() / SLAB))
    volume = sitk.GetImageFromArray(np.concatenate([sitk.GetArrayFromImage(slab)] * repeats, axis=0))
    volume.SetSpacing(slab.GetSpacing())
    volume.SetDirection(slab.GetDirection())
    return volume


def main(budgets: list[int]) -> None:
    volume = large_volume()
    network, preprocessing = load_detector(find_lowres_card(None))
    print(f"volume {'x'.join(map(str, volume.GetSize()))}, torch threads {torch.get_num_threads()}")
    print(f"{'stage-2 tile budget':>20} {'stage 1 s':>9} {'stage 2 s':>9} {'total s':>8} {'detections':>10} {'voxels':>8}")
    for budget in budgets:
        started = time.perf_counter()
        result = detect_image(volume, network, preprocessing, max_voxels_stage2=budget)
        total = time.perf_counter() - started
        voxels = int(sitk.GetArrayViewFromImage(result.labelmap).sum())
        print(f"{budget:>20,} {result.seconds['stage1']:>9.1f} {result.seconds['stage2']:>9.1f} {total:>8.1f} "
              f"{len(result.detections):>10} {voxels:>8}")


if __name__ == "__main__":
    main([int(v) for v in sys.argv[1:]] or [2**22, 2**30])
