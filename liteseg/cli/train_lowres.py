"""Options and entry point of `liteseg train --method lowres` (LowRes two-stage detector)."""

from __future__ import annotations

import argparse

from liteseg.cli.console import progress_bar
from liteseg.cli.train import add_data_options, cases_from_args, recorded_command
from liteseg.detection.preprocessing import DetectionPreprocessing
from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard
from liteseg.training.lowres_lopo import train_lowres_lopo
from liteseg.training.lowres_trainer import LowResTrainConfig, format_score, train_lowres
from liteseg.training.patches import DEFAULT_PATCH_SIZE, LESION_PROBABILITY


def configure_lowres_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `liteseg train --method lowres` (the data options are those of the MoNet trainer)."""
    parser.description = (
        "Train the two-stage LowRes detector (the paper's recipe) on labelled volumes and write its "
        "weights, model card, training curve and a resumable checkpoint into --output."
    )
    add_data_options(parser)
    parser.add_argument("--name", default="lowres-lesion", help="model name (file names of weights and card)")
    parser.add_argument("--version", default="1.0.0", help="model version recorded in the card")
    parser.add_argument("--stage1-epochs", type=int, default=100, metavar="N", help="stage-1 epochs (default 100)")
    parser.add_argument("--stage2-epochs", type=int, default=100, metavar="N", help="stage-2 epochs (default 100)")
    parser.add_argument("--iterations", type=int, default=100, metavar="N", help="batches per epoch (default 100)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per batch (default 32)")
    parser.add_argument("--stage2-batch-size", type=int, default=None, metavar="N",
                        help="patches per stage-2 batch (default: --batch-size)")
    parser.add_argument("--lr", type=float, default=1e-2, help="SGD learning rate (default 1e-2)")
    parser.add_argument("--lr-final", type=float, default=1e-3,
                        help="learning rate after 80%% of each stage's epochs (default 1e-3)")
    parser.add_argument("--patch-size", type=int, nargs=3, default=list(DEFAULT_PATCH_SIZE), metavar=("S", "P", "L"),
                        help="patch size in canonical order slices, rows, columns (default 64 64 64; "
                        "e.g. 16 64 64 for 13-16-slice DeepLesion slabs)")
    parser.add_argument("--pos-weight", type=float, default=10.0,
                        help="weight of lesion cells in the stage-1 cross-entropy (default 10)")
    parser.add_argument("--lesion-probability", type=float, default=LESION_PROBABILITY, metavar="P",
                        help="probability that a patch is centred on a lesion voxel (default 0.5)")
    parser.add_argument("--flip", action="store_true",
                        help="mirror each patch along rows and columns at random (augmentation, not in the paper)")
    parser.add_argument("--preprocessing", choices=("hu_window", "grey_0_255"), default="hu_window",
                        help="hu_window: clip to --window HU and scale to [0, 1]; grey_0_255: grey levels / 255 "
                        "(DeepLesion PNG slices)")
    parser.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="HU window of hu_window (default -1000 300, LUNA16)")
    parser.add_argument("--allow-non-ct", action="store_true", help="skip the check that a HU-window model gets Hounsfield units")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="fraction of patients held out for validation (default 0.3; 0 for a single "
                        "--image/--label pair; 0 validates on the training cases)")
    parser.add_argument("--leave-one-patient-out", action="store_true",
                        help="train one fold per patient in DIR/folds/PATIENT (that patient held out), then the "
                        "final weights on all patients in DIR; the pooled held-out FROC goes into DIR and its card")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, patch sampling and init")
    parser.add_argument("--label-values", type=int, nargs="+", default=[1], metavar="V",
                        help="label values merged into the lesion (default: 1)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt (same options)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda when available, else cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--notes", default="", help="free text stored in the model card")


def lowres_config(args: argparse.Namespace, val_fraction: float) -> LowResTrainConfig:
    """The training options of parsed `configure_lowres_parser` arguments."""
    if args.preprocessing == "hu_window":
        preprocessing = DetectionPreprocessing("hu_window", tuple(args.window) if args.window else (-1000.0, 300.0))
    else:
        if args.window is not None:
            raise LiteSegError("--window applies to --preprocessing hu_window only")
        preprocessing = DetectionPreprocessing("grey_0_255", None)
    return LowResTrainConfig(
        output=args.output, name=args.name, version=args.version, stage1_epochs=args.stage1_epochs,
        stage2_epochs=args.stage2_epochs, iterations_per_epoch=args.iterations, batch_size=args.batch_size,
        stage2_batch_size=args.stage2_batch_size, lr=args.lr, lr_final=args.lr_final, patch_size=tuple(args.patch_size),
        lesion_probability=args.lesion_probability, pos_weight=args.pos_weight, flip=args.flip, preprocessing=preprocessing,
        allow_non_ct=args.allow_non_ct, seed=args.seed, val_fraction=val_fraction,
        val_patients=tuple(args.val_patients or ()), label_values=tuple(args.label_values),
        device=args.device, num_threads=args.threads, notes=args.notes,
    )


def run_lowres(args: argparse.Namespace) -> int:
    """Train as the options say; print the model card's path and the validation figures."""
    cases = cases_from_args(args)
    if args.leave_one_patient_out and args.val_fraction is not None:
        raise LiteSegError("--leave-one-patient-out holds out each patient in turn: do not give --val-fraction")
    val_fraction = args.val_fraction if args.val_fraction is not None else (0.0 if args.dataset is None else 0.3)
    train = train_lowres_lopo if args.leave_one_patient_out else train_lowres
    card_path = train(lowres_config(args, val_fraction), cases, recorded_command(), bars=progress_bar, resume=args.resume)
    card = ModelCard.read(card_path)
    validation = card.data["validation"]
    where = "on the training cases" if validation["on_training_cases"] else f"on {len(validation['cases'])} held-out cases"
    print(f"model card: {card_path}")
    print(f"validation {where}: object Dice {format_score(validation['mean_object_dice'])}, "
          f"average recall {format_score(validation['mean_average_recall'])}, Dice {format_score(validation['mean_dice'])} "
          f"(last epoch weights: {card.weights_path})")
    lopo = card.data.get("leave_one_patient_out")
    if lopo:
        print(f"leave-one-patient-out ({lopo['patients']} folds, {lopo['objects']} objects in {lopo['scans']} scans): "
              f"average recall {format_score(lopo['pooled_average_recall'])}, object Dice {format_score(lopo['pooled_object_dice'])}, "
              f"objects hit {lopo['objects_hit']}, FROC in {lopo['froc_csv']} and {lopo['froc_png']}")
    return 0
