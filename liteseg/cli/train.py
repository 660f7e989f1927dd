"""Options and entry point of `liteseg train` (hooked into the main CLI as a subcommand)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from liteseg.cli.console import progress_bar
from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.training.datasets import Case, case_from_pair
from liteseg.training.slice_dataset import cases_from_dataset, is_slice_dataset
from liteseg.training.trainer import LABEL_PRESETS, TrainConfig, train


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The training data and output folder options shared by every training method."""
    data = parser.add_argument_group("training data (a DATASET or --image with --label)")
    data.add_argument("dataset", nargs="?", type=Path, metavar="DATASET",
                      help="a Medical Segmentation Decathlon folder (dataset.json), a .csv with columns "
                      "image,label[,patient] (paths relative to the CSV) or a slice dataset description .json "
                      "(labelled 2D slices with a patient column, e.g. Resources/Training/nih_pancreas_slices.json)")
    data.add_argument("--image", type=Path, help="a single training image (with --label)")
    data.add_argument("--label", type=Path, help="the label volume of --image, on the same grid")
    data.add_argument("--max-cases", type=int, metavar="N", help="use only the first N cases")
    data.add_argument("--val-patients", nargs="+", metavar="ID",
                      help="hold out these patients (the CSV's patient column) for validation, e.g. one "
                      "fold of a leave-one-patient-out evaluation; overrides --val-fraction")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                        help="folder for <name>.pt, <name>.json, checkpoint.pt and training_curve.png")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of `liteseg train` to `parser`."""
    parser.description = (
        "Train a slice-by-slice network (MoNet, the paper's recipe) on labelled CT volumes and write "
        "its weights, model card, training curve and a resumable checkpoint into --output."
    )
    add_data_options(parser)
    parser.add_argument("--name", default="monet-pancreas-ct", help="model name (file names of weights and card)")
    parser.add_argument("--version", default="1.0.0", help="model version recorded in the card")
    parser.add_argument("--epochs", type=int, default=50, help="number of epochs (default 50)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch (default 8)")
    parser.add_argument("--lr", type=float, default=5e-4, help="NAdam learning rate (default 5e-4)")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="fraction of patients held out for validation (default 0.3; 0 for a single "
                        "--image/--label pair; 0 validates on the training cases)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, sampling, augmentation and init")
    parser.add_argument("--label-values", type=int, nargs="+", default=[1, 2], metavar="V",
                        help="label values merged into the foreground (default: 1 2, pancreas + tumour)")
    parser.add_argument("--window", type=float, nargs=2, default=[-150.0, 200.0], metavar=("LOW", "HIGH"),
                        help="CT intensity window in HU, clipped and scaled to [0, 1] (default -150 200, the "
                        "paper's; slices stored as clip(HU, 0, 255) need a window inside [0, 255], e.g. 0 200)")
    parser.add_argument("--slice-size", type=int, nargs=2, default=[256, 256], metavar=("ROWS", "COLS"),
                        help="model grid the slices are resized to (default 256 256, the paper's; multiples of 16, "
                        "e.g. 128 128 for a network 4x cheaper per slice)")
    parser.add_argument("--network", default="monet",
                        help="2D network to train (monet, unet16, pocket_unet2d, ...; `liteseg models` lists them)")
    parser.add_argument("--label-preset", choices=sorted(LABEL_PRESETS), default="pancreas",
                        help="name, colour and SNOMED CT codes of the foreground in the card (default pancreas)")
    parser.add_argument("--empty-slice-ratio", type=float, default=0.5, metavar="R",
                        help="empty slices drawn per foreground slice each epoch (default 0.5)")
    parser.add_argument("--lr-patience", type=int, default=2, metavar="N",
                        help="epochs without validation-loss improvement before the lr is cut x0.1 (default 2)")
    parser.add_argument("--foreground-prior", type=float, default=None, metavar="P",
                        help="start the output bias at logit(P) so early predictions are mostly background "
                        "(small data sets; default: zero bias as in the paper)")
    parser.add_argument("--passes-per-epoch", type=int, default=1, metavar="N",
                        help="passes over the drawn training slices per epoch, for small data sets (default 1)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: mixed-precision forward passes (about 2x faster on CPUs with AVX512-BF16 "
                        "or AMX, emulated and several times slower on other CPUs; weights stay float32); default float32")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt (same options)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = cuda when available, else cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--notes", default="", help="free text stored in the model card")


def cases_from_args(args: argparse.Namespace) -> list[Case]:
    if args.dataset is not None and (args.image or args.label):
        raise LiteSegError("give either a DATASET or --image with --label, not both")
    if args.dataset is not None:
        cases = cases_from_dataset(args.dataset)
    elif args.image and args.label:
        cases = [case_from_pair(args.image, args.label)]
    else:
        raise LiteSegError("no training data: give a DATASET (Decathlon folder or .csv) or --image with --label")
    if args.max_cases is not None:
        if args.max_cases < 1:
            raise LiteSegError(f"--max-cases must be at least 1, got {args.max_cases}")
        cases = cases[: args.max_cases]
    if not cases:
        raise LiteSegError("the dataset lists no training cases")
    return cases


def dataset_source(path: Path | None) -> dict | None:
    """The description and licence of a slice dataset, for the model card (None for other data)."""
    if path is None or not is_slice_dataset(path):
        return None
    description = json.loads(path.read_text())
    return {"file": path.name, "description": description.get("description", ""), "licence": description.get("licence", "")}


def recorded_command() -> str:
    """The command line as typed, from the `train` subcommand on."""
    argv = sys.argv[1:]
    return "liteseg train " + shlex.join(argv[argv.index("train") + 1 :] if "train" in argv else argv)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The trainer's options from the command line's."""
    val_fraction = args.val_fraction if args.val_fraction is not None else (0.0 if args.dataset is None else 0.3)
    return TrainConfig(
        output=args.output,
        name=args.name,
        version=args.version,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_fraction=val_fraction,
        val_patients=tuple(args.val_patients or ()),
        label_values=tuple(args.label_values),
        empty_slice_ratio=args.empty_slice_ratio,
        passes_per_epoch=args.passes_per_epoch,
        foreground_prior=args.foreground_prior,
        lr_patience=args.lr_patience,
        label_preset=args.label_preset,
        network=args.network,
        precision=args.precision,
        preprocessing=Preprocessing(window=tuple(args.window), slice_size=tuple(args.slice_size)),
        device=args.device,
        num_threads=args.threads,
        notes=args.notes,
    )


def run(args: argparse.Namespace) -> int:
    """Train as the options say; print the model card's path and the validation Dice."""
    cases = cases_from_args(args)
    card_path = train(train_config(args), cases, recorded_command(), bars=progress_bar, resume=args.resume,
                      dataset=dataset_source(args.dataset))
    card = ModelCard.read(card_path)
    validation = card.data["validation"]
    where = "on the training cases" if validation["on_training_cases"] else f"on {len(validation['cases'])} held-out cases"
    print(f"model card: {card_path}")
    print(f"validation Dice {where}: {validation['mean_dice']:.3f} (best epoch weights: {card.weights_path})")
    return 0
