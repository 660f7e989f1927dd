"""`liteseg detect`: LowRes detection of one volume into a labelmap and a CSV of detections."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from liteseg.cli.console import ProgressBar
from liteseg.detection.lowres import (
    DEFAULT_MAX_VOXELS_STAGE1,
    DEFAULT_MAX_VOXELS_STAGE2,
    PRECISIONS,
    detect_image,
    find_lowres_card,
    load_detector,
    stage2_dtype,
)
from liteseg.detection.results import default_csv_path, write_detections_csv
from liteseg.io.images import check_output_path, read_image, write_image


def configure_detect_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `liteseg detect INPUT OUTPUT`."""
    parser.add_argument("input", type=Path, help="volume file (NIfTI, NRRD, MHA) or DICOM series folder")
    parser.add_argument("output", type=Path, help="output labelmap file")
    parser.add_argument(
        "--model", default=None, help="LowRes model card .json or bundled model name (default: the bundled LowRes model)"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="probability threshold of stage 1 and of the final map (default: the card's, else 0.5)"
    )
    parser.add_argument("--margin", type=int, default=1, help="box margin in low-resolution (x8) voxels (default 1)")
    parser.add_argument("--csv", type=Path, default=None, help="detections CSV (default: OUTPUT name + _detections.csv)")
    parser.add_argument(
        "--max-voxels-stage1",
        type=int,
        default=DEFAULT_MAX_VOXELS_STAGE1,
        help=f"largest stage-1 tile in input voxels, bounds memory (default {DEFAULT_MAX_VOXELS_STAGE1})",
    )
    parser.add_argument(
        "--max-voxels-stage2",
        type=int,
        default=DEFAULT_MAX_VOXELS_STAGE2,
        help=f"largest stage-2 tile in full-resolution voxels, bounds memory (default {DEFAULT_MAX_VOXELS_STAGE2})",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="of stage 2: auto (default) is bfloat16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), "
                        "else float32")
    parser.add_argument("--allow-non-ct", action="store_true", help="skip the input intensity check (Hounsfield units for a HU-window model, 0-255 for a "
                        "grey-level model)")
    parser.add_argument("--series", default=None, metavar="UID",
                        help="the DICOM series to read when the INPUT folder holds several (Series Instance UID)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run_detect(args: argparse.Namespace) -> int:
    """Detect objects in `args.input`; write the labelmap and the detections CSV."""
    csv_path = args.csv or default_csv_path(args.output)
    check_output_path(args.output, args.input, args.overwrite)
    check_output_path(csv_path, args.input, args.overwrite, suffixes=("",))
    card = find_lowres_card(args.model)
    network, preprocessing = load_detector(card)
    threshold = args.threshold if args.threshold is not None else float(card.data["output"].get("threshold", 0.5))
    started = time.perf_counter()
    image = read_image(args.input, args.series)
    seconds = {"read": time.perf_counter() - started}
    bar = ProgressBar("detecting")
    try:
        result = detect_image(
            image,
            network,
            preprocessing,
            threshold=threshold,
            margin=args.margin,
            max_voxels_stage1=args.max_voxels_stage1,
            max_voxels_stage2=args.max_voxels_stage2,
            precision=args.precision,
            allow_non_ct=args.allow_non_ct,
            progress=bar,
        )
    finally:
        bar.close()
    seconds.update(result.seconds)
    started = time.perf_counter()
    write_image(result.labelmap, args.output, overwrite=args.overwrite)
    write_detections_csv(result.detections, csv_path)
    seconds["write"] = time.perf_counter() - started
    print(f"model: {card.name} {card.version}")
    for d in result.detections:
        r, a, s = d.centre_ras
        print(f"  {d.index}: probability {d.max_probability:.3f}, {d.volume_ml:.3f} ml, centre RAS ({r:.1f}, {a:.1f}, {s:.1f}) mm")
    print(f"wrote {args.output}: {len(result.detections)} detection(s)")
    print(f"wrote {csv_path}")
    print(f"time {sum(seconds.values()):.2f} s (" + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()) + ")"
          f", stage 2 in {str(stage2_dtype(args.precision)).removeprefix('torch.')}")
    return 0
