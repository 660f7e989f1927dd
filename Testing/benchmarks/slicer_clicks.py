""""Segment pancreas" clicked three times in Slicer's logic (slicer-core, no Qt), the bundled
model on the sample CT resampled to 512x512x150 (as `liteseg bench` does), already in the scene:

    python Testing/benchmarks/slicer_clicks.py [--threads N]

The first click loads the model and prepares the network (OpenVINO compiles it, first runs per
shape); later clicks show what a user waits for once the module has run. Prints each click's
`lastTimings`.
"""

from __future__ import annotations

import argparse
import runpy
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from liteseg.benchmarks.segmentation import resample_like
from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample

ROOT = Path(__file__).resolve().parents[2]
runpy.run_path(str(ROOT / "LiteSegSlicer" / "LiteSegSlicerLib" / "paths.py"))["addCheckoutPaths"]()
SlicerCore = runpy.run_path(str(ROOT / "Testing" / "slicer" / "slicer_harness.py"))["SlicerCore"]

from LiteSegSlicerLib.segmentation_logic import SegmentationLogic  # noqa: E402  (after the checkout paths)
from LiteSegSlicerLib.volume_bridge import addVolumeFromImage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clicks", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        ct_path, _ = resample_like(fetch_sample(SAMPLE_CT), fetch_sample(SAMPLE_PANCREAS), Path(folder), (512, 512, 150))
        ct = sitk.ReadImage(str(ct_path))
    core = SlicerCore()
    node = addVolumeFromImage(core.scene, ct, "CT")
    logic = SegmentationLogic()
    for click in range(1, args.clicks + 1):
        started = time.perf_counter()
        logic.process(node)
        seconds = time.perf_counter() - started
        stages = ", ".join(f"{name} {value:.2f}" for name, value in logic.lastTimings.items() if name != "total")
        print(f"click {click}: {seconds:.2f} s ({stages})", flush=True)


if __name__ == "__main__":
    main()
