"""The `liteseg` command: models, segment, train, evaluate, demo."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from liteseg import __version__
from liteseg.cli.console import ProgressBar, progress_bar
from liteseg.errors import LiteSegError
from liteseg.extras import matplotlib_available
from liteseg.io.modelcard import DEFAULT_MODEL
from liteseg.segmentation.localisation import Localisation
from liteseg.segmentation.runtime import BACKENDS


def describe(error: LiteSegError) -> str:
    """The error's message with its remedy as a flag of this command line, e.g. "(use --overwrite
    to replace it)" for the engine's `overwrite=True`."""
    remedy = error.remedy
    if remedy is None:
        return error.message
    flag = "--" + remedy.parameter.replace("_", "-") + ("" if remedy.value == "True" else f" {remedy.value}")
    hint = f"use {flag} {remedy.effect}".rstrip()
    return f"{error.message} ({hint})"


def _format_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{stage} {value:.2f} s" for stage, value in seconds.items())


def cmd_models(_args: argparse.Namespace) -> int:
    from liteseg.io.modelcard import bundled_cards
    from liteseg.models.params import format_model_table, model_table_rows

    print(format_model_table(model_table_rows()))
    print("\nBundled weights:")
    for card in bundled_cards():
        print(f"  {card.name} {card.version}: network {card.network}, {card.data.get('title', '')}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from liteseg.segmentation.inference import segment_file, segment_folder

    options = dict(
        keep_largest=args.largest_component,
        batch_size=args.batch_size,
        allow_non_ct=args.allow_non_ct,
        backend=args.backend,
    )
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.localise is not None:
        from liteseg.io.modelcard import find_card

        options["localisation"] = (find_card(args.model).localisation or Localisation()) if args.localise else None
    if args.folder and args.dicom_seg is not None:
        raise LiteSegError("--dicom-seg writes the SEG of one DICOM series: give that series folder, without --folder")
    if args.folder:
        cases = segment_folder(args.input, args.output, args.model, args.overwrite, bars=progress_bar, **options)
        failed = [c for c in cases if c.error]
        for case in cases:
            status = f"FAILED: {describe(case.error)}" if case.error else f"{case.foreground_ml:.1f} ml -> {case.output}"
            print(f"{case.input.name}: {status} ({case.seconds:.1f} s)")
        total = sum(c.seconds for c in cases)
        print(f"{len(cases) - len(failed)} of {len(cases)} volumes segmented in {total:.1f} s")
        return 1 if failed else 0
    if args.input.is_dir() and not _looks_like_dicom(args.input):
        raise LiteSegError(f"{args.input} is a folder without a DICOM series; use --folder to segment every volume in it")
    bar = ProgressBar("segmenting")
    try:
        result = segment_file(args.input, args.output, args.model, args.overwrite, progress=bar,
                              series=args.series, dicom_seg=args.dicom_seg, **options)
    finally:
        bar.close()
    total = sum(result.seconds.values())
    print(f"wrote {args.output}: {result.foreground_voxels} voxels ({result.foreground_ml:.1f} ml) labelled")
    if args.dicom_seg is not None:
        print(f"wrote {args.dicom_seg}: DICOM SEG referencing the source series")
    if result.message:
        print(result.message)
    print(f"time {total:.2f} s ({_format_seconds(result.seconds)})")
    return 0


def _looks_like_dicom(folder: Path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.slices is not None:
        return evaluate_model(args)
    if args.prediction is None or args.reference is None:
        raise LiteSegError("give a PREDICTION and a REFERENCE, or --slices DATASET with --model")
    from liteseg.evaluation.segmentation import evaluate_paths, format_metrics_table, write_csv

    rows = evaluate_paths(args.prediction, args.reference, ref_labels=args.label_values)
    print(format_metrics_table(rows))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.froc:
        from liteseg.evaluation.detection import evaluate_detections, format_detection_table
        from liteseg.evaluation.froc import plot_froc, write_froc_csv

        cases, dices, curve = evaluate_detections(args.prediction, args.reference, ref_labels=args.label_values)
        print(format_detection_table(cases, dices, curve))
        print(f"wrote {write_froc_csv(curve, args.froc.with_name(args.froc.name + '.csv'))}")
        if matplotlib_available("FROC plot"):
            print(f"wrote {plot_froc(curve, args.froc.with_name(args.froc.name + '.png'))}")
    return 0


CHECKED_STEP_MM = 15.0  # the coarse step of the bundled pancreas model's localisation


def evaluate_model(args: argparse.Namespace) -> int:
    """`liteseg evaluate --slices`: a model's per-patient Dice on held-out slice-dataset patients,
    and with --sample-ct its whole-volume figures on the sample CT."""
    import csv

    from liteseg.evaluation.slices import (
        check_whole_volume,
        evaluate_slice_patients,
        format_patient_table,
        format_volume_table,
        held_out_patients,
        record_evaluation,
    )
    from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample
    from liteseg.io.images import read_image
    from liteseg.segmentation.inference import load_model
    from liteseg.training.slice_dataset import cases_from_slice_dataset

    network, card = load_model(args.model)
    patients = args.patients or held_out_patients(card)
    bar = ProgressBar("held-out patients")
    try:
        rows = evaluate_slice_patients(cases_from_slice_dataset(args.slices), patients, network, card, progress=bar,
                                       backend=args.backend)
    finally:
        bar.close()
    print(f"model: {card.name} {card.version}")
    print(format_patient_table(rows))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("patient", "slices", "dice", "pred_pixels", "ref_pixels"))
            writer.writerows((r.patient, r.slices, f"{r.dice:.6f}", r.pred_pixels, r.ref_pixels) for r in rows)
        print(f"wrote {args.csv}")
    checks, localisation = [], None
    if args.localiser is not None and not args.sample_ct:
        raise LiteSegError("--localiser is checked on the sample CT: give --sample-ct too")
    if args.sample_ct:
        ct, reference = read_image(fetch_sample(SAMPLE_CT)), read_image(fetch_sample(SAMPLE_PANCREAS))
        localisation = card.localisation or Localisation(CHECKED_STEP_MM)
        if args.localiser is not None:
            localisation = dataclasses.replace(localisation, model=args.localiser)
        checks = [check_whole_volume(ct, reference, network, card, setting, args.backend) for setting in (localisation, None)]
        print("sample CT (ct/pancreas_TS-A; reference: TotalSegmentator's predicted pancreas, not manual)")
        print(format_volume_table(checks))
    if args.record:
        data = record_evaluation(card, args.slices.name, rows, checks, localisation, "liteseg " + shlex.join(sys.argv[1:]))
        state = "on" if "localisation" in data.get("inference", {}) else "off"
        print(f"recorded in {card.path} (localisation by default: {state})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from liteseg.segmentation.demo import run_demo

    bar = ProgressBar("segmenting sample CT")
    try:
        result = run_demo(args.output_dir, args.model, progress=bar)
    finally:
        bar.close()
    print(f"model: {result.model}")
    print(f"segmentation: {result.segmentation}")
    print(f"outline picture: {result.picture}")
    print(f"Dice against the sample's reference pancreas mask: {result.dice:.3f}")
    if result.recorded_dice is not None:
        print(f"(the model card records {result.recorded_dice:.3f} on this CT, which the model never saw; "
              f"what it was trained on and its held-out figures: {result.card})")
    print(f"time {sum(result.seconds.values()):.2f} s ({_format_seconds(result.seconds)})")
    return 0


TRAIN_METHODS = ("monet", "lowres")


def train_parser(method: str) -> argparse.ArgumentParser:
    """The options of `liteseg train --method METHOD` (each method has its own)."""
    parser = argparse.ArgumentParser(prog=f"liteseg train --method {method}")
    if method == "lowres":
        from liteseg.cli.train_lowres import configure_lowres_parser, run_lowres

        configure_lowres_parser(parser)
        parser.set_defaults(run=run_lowres)
    else:
        from liteseg.cli.train import configure_parser, run

        configure_parser(parser)
        parser.set_defaults(run=run)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    method_args = train_parser(args.method).parse_args(args.rest)
    return method_args.run(method_args)


def cmd_bench(args: argparse.Namespace) -> int:
    from liteseg.benchmarks.segmentation import run_bench

    run_bench(args.networks, args.slices, args.batch_size, args.repeats, args.threads, not args.no_end_to_end, log=print,
              memory_slices=args.memory_slices)
    return 0


def cmd_bench_detection(args: argparse.Namespace) -> int:
    from liteseg.benchmarks.detection import run_detection_bench
    from liteseg.training.datasets import cases_from_pairs_csv

    print(run_detection_bench(args.lopo_dir, cases_from_pairs_csv(args.dataset), args.unet_steps, args.unet_batch_size,
                              args.repeat_slices, log=print))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liteseg", description="Fast CPU segmentation with very small networks.")
    parser.add_argument("--version", action="version", version=f"liteseg {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the networks with parameter counts and the bundled weights")
    models.set_defaults(run=cmd_models)

    segment = commands.add_parser("segment", help="segment a volume (NIfTI, NRRD, MHA, DICOM folder) or a folder of volumes")
    segment.add_argument("input", type=Path)
    segment.add_argument("output", type=Path, help="output labelmap file (or folder with --folder)")
    segment.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name or model card .json (default {DEFAULT_MODEL})")
    segment.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model card's)")
    segment.add_argument("--largest-component", action="store_true", help="keep only the largest connected component")
    segment.add_argument("--localise", action=argparse.BooleanOptionalAction, default=None,
                         help="a coarse pass over every few slices first (the model card's settings and first-look "
                         "model), then segment only the regions around what it finds (default: the model card's choice; "
                         "on for the bundled pancreas model)")
    segment.add_argument("--backend", choices=BACKENDS, default="auto",
                         help="auto (default): openvino where installed (bfloat16 on CPUs with native bfloat16), else fast; "
                         "openvino = OpenVINO float32 (pip install 'liteseg[openvino]'); fast = PyTorch, BatchNorm folded + "
                         "channels-last; eager = the network as trained")
    segment.add_argument("--batch-size", type=int, default=None, help="slices per forward pass (default: the backend's best)")
    segment.add_argument("--folder", action="store_true", help="segment every volume in the INPUT folder into the OUTPUT folder")
    segment.add_argument("--allow-non-ct", action="store_true", help="skip the check that a CT model gets Hounsfield units")
    segment.add_argument("--dicom-seg", type=Path, default=None, metavar="OUT.dcm",
                         help="for a DICOM series input, also write a DICOM Segmentation object referencing it "
                         "(needs highdicom: pip install 'liteseg[dicom]')")
    segment.add_argument("--series", default=None, metavar="UID",
                         help="the DICOM series to segment when the INPUT folder holds several (Series Instance UID)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output files")
    segment.set_defaults(run=cmd_segment)

    train = commands.add_parser(
        "train", add_help=False, help="train a network headless and write weights with a model card "
        "(--method monet, the default, or lowres; `liteseg train --method M --help` lists the options)"
    )
    train.add_argument("--method", choices=TRAIN_METHODS, default="monet")
    train.set_defaults(run=cmd_train)

    federated = commands.add_parser(
        "federated", help="federated training on Flower (pip install 'liteseg[federated]'): simulate the sites on "
        "this machine, or deploy a SuperLink and one SuperNode per site on localhost")
    from liteseg.cli.federated import configure_parser as configure_federated_parser, run as run_federated

    configure_federated_parser(federated)
    federated.set_defaults(run=run_federated)

    quantize = commands.add_parser("quantize", help="an int8 OpenVINO model of a 2D model, checked against float32 "
                                   "(pip install 'liteseg[int8]')")
    from liteseg.cli.quantize import configure_parser as configure_quantize_parser, run as run_quantize

    configure_quantize_parser(quantize)
    quantize.set_defaults(run=run_quantize)

    detect = commands.add_parser("detect", help="LowRes two-stage detection: labelmap plus a CSV of detected objects")
    from liteseg.cli.detect import configure_detect_parser, run_detect

    configure_detect_parser(detect)
    detect.set_defaults(run=run_detect)

    evaluate = commands.add_parser("evaluate", help="per-case Dice and 95%% Hausdorff distance, printed and as CSV")
    evaluate.add_argument("prediction", type=Path, nargs="?", help="predicted labelmap file or folder")
    evaluate.add_argument("reference", type=Path, nargs="?", help="reference labelmap file or folder (matched by file name)")
    evaluate.add_argument("--slices", type=Path, metavar="DATASET",
                          help="instead of files: segment the held-out patients of a slice dataset description "
                          "(.json) with --model and print the Dice pooled over each patient's slices")
    evaluate.add_argument("--model", default=DEFAULT_MODEL, help="with --slices: bundled model name or model card .json")
    evaluate.add_argument("--patients", nargs="+", metavar="ID",
                          help="with --slices: the patients to evaluate (default: the model card's held-out patients)")
    evaluate.add_argument("--sample-ct", action="store_true",
                          help="with --slices: also the sample CT's 3D Dice and the volume labelled >= 30 mm from "
                          "its pancreas, localised and whole-volume")
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto",
                          help="with --slices: how the network runs (default auto; fast = PyTorch float32, the reference "
                          "the recorded figures use)")
    evaluate.add_argument("--localiser", default=None, metavar="MODEL",
                          help="with --sample-ct: the bundled model name or model card .json that runs the localisation's "
                          "first look (default: the card's, else the model itself), recorded with --record")
    evaluate.add_argument("--label-values", type=int, nargs="+", default=None, help="reference values counted as foreground (default: nonzero)")
    evaluate.add_argument("--csv", type=Path, default=None, help="write the per-case metrics to this CSV")
    evaluate.add_argument("--froc", type=Path, default=None, metavar="PREFIX",
                          help="detections too (each prediction's liteseg detect CSV beside it): object Dice, average "
                          "recall over 0-5 false positives per scan, FROC curve written to PREFIX.csv and PREFIX.png")
    evaluate.add_argument("--record", action="store_true",
                          help="with --slices: write the figures into the model card (section evaluation); with "
                          "--sample-ct, localisation becomes the card's default only if it lowers Dice by at most 0.01")
    evaluate.set_defaults(run=cmd_evaluate)

    bench = commands.add_parser("bench", help="CPU timing of the networks (MoNet paper Table 2) and of the whole job")
    bench.add_argument("--networks", nargs="+", default=["unet64", "unet16", "attention_unet", "monet"])
    bench.add_argument("--slices", type=int, default=150, help="slices of 256x256 per timed run (default 150)")
    bench.add_argument("--batch-size", type=int, default=30, help="slices per forward pass (default 30)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (default 3)")
    bench.add_argument("--no-end-to-end", action="store_true", help="skip the 512x512x150 CT job")
    bench.add_argument("--memory-slices", type=int, default=1500, metavar="N",
                       help="slices of the 512x512 CT whose peak memory is measured (default 1500)")
    bench.set_defaults(run=cmd_bench)

    bench_detection = commands.add_parser(
        "bench-detection", help="LowRes against a 3D U-Net sliding window on the held-out folds of a "
        "leave-one-patient-out run: seconds, average recall, object Dice (LowRes paper Table 1)")
    bench_detection.add_argument("lopo_dir", type=Path, metavar="DIR",
                                 help="output of liteseg train --method lowres --leave-one-patient-out")
    bench_detection.add_argument("dataset", type=Path, metavar="DATASET", help="the CSV (image,label,patient) it was trained on")
    bench_detection.add_argument("--unet-steps", type=int, default=500, metavar="N",
                                 help="training batches of each fold's 3D U-Net when DIR/unet3d/PATIENT.pt is missing (default 500)")
    bench_detection.add_argument("--unet-batch-size", type=int, default=4, metavar="N", help="patches per 3D U-Net batch (default 4)")
    bench_detection.add_argument("--repeat-slices", type=int, default=8, metavar="N",
                                 help="large-volume timing: the first case repeated N times along the slices (default 8)")
    bench_detection.set_defaults(run=cmd_bench_detection)

    demo = commands.add_parser("demo", help="segment the sample CT with the bundled weights, print Dice and time")
    demo.add_argument("--output-dir", type=Path, default=Path("liteseg-demo"))
    demo.add_argument("--model", default=DEFAULT_MODEL)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except LiteSegError as error:
        print(f"liteseg: error: {describe(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("liteseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
