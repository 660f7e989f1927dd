"""`liteseg quantize`: an int8 OpenVINO model of a 2D model's weights, calibrated on its training
patients and checked against float32 on its held-out patients and the sample CT."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import date
from pathlib import Path

from liteseg.io.modelcard import DEFAULT_MODEL


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from liteseg.benchmarks.precision import NIH_SLICES
    from liteseg.segmentation.quantization import SLICES_PER_PATIENT

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name or model card .json (default {DEFAULT_MODEL})")
    parser.add_argument("--slices", type=Path, default=NIH_SLICES, metavar="DATASET",
                        help="the slice dataset the model was trained on (default: the NIH pancreas slices)")
    parser.add_argument("--per-patient", type=int, default=SLICES_PER_PATIENT, metavar="N",
                        help=f"calibration slices per training patient (default {SLICES_PER_PATIENT})")


def run(args: argparse.Namespace) -> int:
    """Quantise, check, and record the int8 model in the card (used by "auto" only if the check passed)."""
    from liteseg.benchmarks.precision import MAX_DICE_CHANGE, backend_rows, format_backend_table, largest_change
    from liteseg.evaluation.slices import held_out_patients
    from liteseg.io.data import SAMPLE_CT, SAMPLE_PANCREAS, fetch_sample
    from liteseg.io.modelcard import write_card
    from liteseg.segmentation.inference import load_model
    from liteseg.segmentation.openvino_runtime import register_int8
    from liteseg.segmentation.quantization import calibration_batches, int8_entry, quantize_network
    from liteseg.training.slice_dataset import cases_from_dataset

    network, card = load_model(args.model)
    cases = cases_from_dataset(args.slices)
    held_out = set(held_out_patients(card))
    training = sorted({case.patient for case in cases} - held_out)
    batches = calibration_batches(cases, training, card, args.per_patient)
    model = quantize_network(network, batches, card.path.parent / f"{card.name}.int8.xml")
    print(f"wrote {model} (calibrated on {len(batches)} slices of {len(training)} training patients)")
    register_int8(network, model)
    rows, note = backend_rows(network, card, fetch_sample(SAMPLE_CT), fetch_sample(SAMPLE_PANCREAS), args.slices,
                              backends=("fast", "openvino-int8"))
    print(format_backend_table(rows, note))
    reference, int8 = rows
    if note:
        print("not recorded as checked: the held-out patients could not be read")
    largest = largest_change(int8, reference)
    check = {
        "against": "PyTorch float32 (fast backend), the card's threshold and localisation",
        "held_out_dice_change": {p: round(d - reference.patient_dice[p], 6) for p, d in int8.patient_dice.items()},
        "sample_ct_dice_change": round(int8.sample_dice - reference.sample_dice, 6),
        "largest_change": round(largest, 6),
        "rule": f"at most {MAX_DICE_CHANGE} on every held-out patient and on the sample CT",
        "passed": bool(largest <= MAX_DICE_CHANGE and not note),
        "date": date.today().isoformat(),
    }
    data = dict(card.data)
    data["int8"] = int8_entry(card, model, training, check, "liteseg " + shlex.join(sys.argv[1:]))
    write_card(card.path, data)
    print(f"recorded in {card.path}: largest Dice change {largest:.4f}, "
          f"{'passed: auto takes it' if check['passed'] else 'not passed: auto does not take it'}")
    return 0
