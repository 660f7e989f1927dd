"""Time from cancel to return in the two Slicer logics, on Slicer's non-Qt core (slicer-core), with
the bundled models on the sample CT resampled to 512x512x150 (as `liteseg bench` does):

    python Testing/benchmarks/slicer_cancel.py

Each logic's `process` runs once to completion (its time and the longest gap between its progress
reports: in Slicer the panel's Cancel click is seen at the next report) and once with its cancel
flag set by a timer after 40 % of that time; the row gives the seconds from the flag to
`Cancelled` and the nodes the cancelled run left in the scene (0 expected).
"""

from __future__ import annotations

import runpy
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from liteseg.benchmarks.cancel import format_cancel_table, time_to_cancel
from liteseg.benchmarks.segmentation import resample_like
from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample

ROOT = Path(__file__).resolve().parents[2]
runpy.run_path(str(ROOT / "LiteSegSlicer" / "LiteSegSlicerLib" / "paths.py"))["addCheckoutPaths"]()
SlicerCore = runpy.run_path(str(ROOT / "Testing" / "slicer" / "slicer_harness.py"))["SlicerCore"]

from LiteSegSlicerLib.detection_logic import DetectionLogic  # noqa: E402  (after the checkout paths)
from LiteSegSlicerLib.segmentation_logic import SegmentationLogic  # noqa: E402
from LiteSegSlicerLib.volume_bridge import addVolumeFromImage  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        ct_path, _ = resample_like(fetch_sample(SAMPLE_CT), fetch_sample(SAMPLE_PANCREAS), Path(folder), (512, 512, 150))
        ct = sitk.ReadImage(str(ct_path))
    grey = sitk.GetImageFromArray(np.clip(sitk.GetArrayViewFromImage(ct), 0, 255).astype(np.uint8))
    grey.CopyInformation(ct)  # the bundled LowRes model reads grey levels 0-255
    core = SlicerCore()
    ct_node = addVolumeFromImage(core.scene, ct, "CT")
    grey_node = addVolumeFromImage(core.scene, grey, "CT grey levels")
    segmentation, detection = SegmentationLogic(), DetectionLogic()
    jobs = {
        "SegmentationLogic.process 512x512x150": lambda progress, cancel: segmentation.process(
            ct_node, progress=progress, cancel=cancel),
        "DetectionLogic.process 512x512x150": lambda progress, cancel: detection.process(
            grey_node, progress=progress, cancel=cancel),
    }
    rows, left = [], []
    for job, run in jobs.items():
        added: list[int] = []  # nodes each call added: the completed run, then the cancelled one

        def counted(progress, cancel, run=run, added=added):
            before = core.scene.GetNumberOfNodes()
            try:
                return run(progress, cancel)
            finally:
                added.append(core.scene.GetNumberOfNodes() - before)

        rows.append(time_to_cancel(job, counted, at=0.4))
        left.append(added[1])
    print(f"torch threads {torch.get_num_threads()}")
    print(format_cancel_table(rows))
    print("nodes left by the cancelled runs:", ", ".join(f"{row.job.split('.')[0]} {n}" for row, n in zip(rows, left)))
    core.close()


if __name__ == "__main__":
    main()
