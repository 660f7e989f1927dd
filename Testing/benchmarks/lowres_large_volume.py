"""LowRes on a 512x512x128 volume (the first DeepLesion slab repeated 8 times, as `liteseg
bench-detection` builds it), beside the 3D U-Net sliding window of `bench-detection`, in one run.

    python Testing/benchmarks/lowres_large_volume.py [--threads N] [--budgets V ...] [--no-unet]

Rows: `liteseg detect` in a fresh process, read to write (what a user waits for); `detect_image`
in this process at each stage-2 precision and tile budget (seconds per stage, detections,
labelled voxels, Dice of the labels against float32's, the rule for a lower precision being at
least 0.995); the 3D U-Net (random weights: its cost does not depend on them) run as a sliding
window of 16x64x64 windows with 50% overlap, float32.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from liteseg.benchmarks.detection import repeated_slices
from liteseg.cpu import native_bfloat16
from liteseg.detection.lowres import DEFAULT_MAX_VOXELS_STAGE2, detect_image, find_lowres_card, load_detector
from liteseg.detection.sliding_window import detect_sliding_window
from liteseg.evaluation.metrics import dice
from liteseg.io.data import data_root
from liteseg.models.unet3d import unet3d

SLAB = "ct/lesions_DeepLesion/CT_Lesion_000001_02_01_008-023_img_uint8.nii.gz"
WINDOW = (16, 64, 64)  # the 3D U-Net's patch, as in bench-detection


def large_volume(repeats: int = 8) -> sitk.Image:
    return repeated_slices(sitk.ReadImage(str(data_root() / SLAB)), repeats)


def cli_seconds(volume: sitk.Image, threads: int) -> tuple[float, str]:
    """Wall-clock seconds of `liteseg detect` in a fresh process (imports, read, detect, write)
    and its timing line."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "volume.nii.gz"
        sitk.WriteImage(volume, str(source))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "liteseg", "--threads", str(threads), "detect", str(source),
                               str(Path(folder) / "labels.nii.gz")], capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
    return seconds, next(line for line in done.stdout.splitlines() if line.startswith("time "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=[DEFAULT_MAX_VOXELS_STAGE2],
                        help="stage-2 tile budgets in voxels")
    parser.add_argument("--no-unet", action="store_true", help="skip the 3D U-Net (about 10 minutes on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = large_volume()
    network, preprocessing = load_detector(find_lowres_card(None))
    print(f"volume {'x'.join(map(str, volume.GetSize()))}, torch {torch.__version__}, {args.threads} threads, "
          f"native bfloat16: {'yes' if native_bfloat16() else 'no'}")
    seconds, line = cli_seconds(volume, args.threads)
    print(f"liteseg detect, fresh process, read to write: {seconds:.1f} s wall clock; it says: {line}")
    print(f"{'run':<34} {'stage 1 s':>9} {'stage 2 s':>9} {'total s':>8} {'detections':>10} {'voxels':>8} {'Dice vs fp32':>12}")
    precisions = ["float32"] + (["bfloat16"] if native_bfloat16() else [])
    reference = None
    for budget in args.budgets:
        for precision in precisions:
            started = time.perf_counter()
            result = detect_image(volume, network, preprocessing, max_voxels_stage2=budget, precision=precision)
            total = time.perf_counter() - started
            labels = sitk.GetArrayFromImage(result.labelmap) > 0
            reference = labels if reference is None else reference
            print(f"{f'LowRes {precision}, tiles {budget:,}':<34} {result.seconds['stage1']:>9.1f} "
                  f"{result.seconds['stage2']:>9.1f} {total:>8.1f} {len(result.detections):>10} {int(labels.sum()):>8} "
                  f"{dice(labels, reference):>12.4f}")
    if not args.no_unet:
        baseline = unet3d().eval()
        started = time.perf_counter()
        result = detect_sliding_window(volume, baseline, preprocessing, WINDOW)
        total = time.perf_counter() - started
        print(f"{'3D U-Net sliding window, float32':<34} {'':>9} {'':>9} {total:>8.1f}  (random weights: time only)")


if __name__ == "__main__":
    main()
