"""Options and entry point of `liteseg federated simulate|deploy|app` (Flower, optional extra)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from liteseg.errors import LiteSegError
from liteseg.federated.config import FederatedConfig
from liteseg.io.modelcard import ModelCard


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add `simulate`, `deploy` and `app` with their options to `parser`."""
    modes = parser.add_subparsers(dest="mode", required=True)
    simulate = modes.add_parser("simulate", help="Flower's simulation: the sites are partitions of DATASET by patient, "
                                "trained one after the other on this machine")
    deploy = modes.add_parser("deploy", help="a real deployment on localhost: one SuperLink and one SuperNode process per "
                              "site, started and stopped by this command")
    app = modes.add_parser("app", help="write the Flower app folder of a run, for `flwr run` against a consortium's own "
                           "SuperLink (the sites run flower-supernode with their node config)")
    for mode in (simulate, deploy, app):
        _add_options(mode)
    app.add_argument("--app-dir", type=Path, required=True, metavar="DIR", help="folder to write pyproject.toml into")
    deploy.add_argument("--site-data", type=Path, nargs="+", metavar="DATASET",
                        help="each site's own dataset (one SuperNode per file, each split by patient) instead of "
                        "partitions of DATASET")
    deploy.add_argument("--work", type=Path, metavar="DIR",
                        help="folder for Flower's home, the app folder and the processes' logs (default: a temporary folder)")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, metavar="DATASET", nargs="?",
                        help="slice dataset .json, .csv of image,label,patient or Decathlon folder, cut into the sites")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                        help="the server's folder: <name>.pt, <name>.json and checkpoint.pt (one per round)")
    sites = parser.add_argument_group("sites and rounds")
    sites.add_argument("--sites", type=int, default=None, metavar="N", help="N sites with equal shares of the patients (default 3)")
    sites.add_argument("--site-shares", type=float, nargs="+", metavar="S",
                       help="relative numbers of patients per site, e.g. 5 5 1 (one small hospital); overrides --sites")
    sites.add_argument("--rounds", type=int, default=10, help="federated rounds (default 10)")
    sites.add_argument("--local-epochs", type=int, default=1, metavar="N", help="epochs each site trains per round (default 1)")
    sites.add_argument("--fraction-train", type=float, default=1.0, metavar="F",
                       help="fraction of the connected sites sampled to train in a round (default 1: all)")
    sites.add_argument("--server-lr", type=float, default=1.0, metavar="ETA",
                       help="server learning rate: the global model moves ETA times the sites' averaged update (default 1: "
                       "plain FedAvg; about the number of equal sites makes a round progress like one centralised epoch)")
    sites.add_argument("--min-sites", type=int, default=None, metavar="N",
                       help="sites that must be connected before a round starts (default: all of them)")
    sites.add_argument("--round-timeout", type=float, default=3600.0, metavar="S",
                       help="seconds the server waits for a round's replies; later sites are left out of it (default 3600)")
    sites.add_argument("--connect-timeout", type=float, default=120.0, metavar="S",
                       help="seconds the server waits for --min-sites sites to connect (default 120)")
    recipe = parser.add_argument_group("every site's local recipe (as liteseg train)")
    recipe.add_argument("--name", default="monet-pancreas-federated", help="model name (file names of weights and card)")
    recipe.add_argument("--version", default="1.0.0", help="model version recorded in the card")
    recipe.add_argument("--network", default="monet", help="2D network (monet, unet16, pocket_unet2d, ...)")
    recipe.add_argument("--batch-size", type=int, default=8, help="slices per batch (default 8)")
    recipe.add_argument("--lr", type=float, default=5e-4, help="NAdam learning rate (default 5e-4)")
    recipe.add_argument("--seed", type=int, default=0, help="seed of the split, sampling, augmentation and init")
    recipe.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of patients held out for validation, the same split as liteseg train (default 0.2)")
    recipe.add_argument("--label-values", type=int, nargs="+", default=[1], metavar="V", help="label values merged into the foreground (default 1)")
    recipe.add_argument("--window", type=float, nargs=2, default=[-150.0, 200.0], metavar=("LOW", "HIGH"),
                        help="CT intensity window in HU (default -150 200; the NIH slices need one inside [0, 255], e.g. 0 200)")
    recipe.add_argument("--empty-slice-ratio", type=float, default=0.5, metavar="R", help="empty slices per foreground slice (default 0.5)")
    recipe.add_argument("--passes-per-epoch", type=int, default=1, metavar="N", help="passes over the drawn slices per local epoch (default 1)")
    recipe.add_argument("--foreground-prior", type=float, default=None, metavar="P", help="start the output bias at logit(P)")
    recipe.add_argument("--precision", choices=("float32", "bfloat16"), default="float32", help="forward passes (default float32)")
    recipe.add_argument("--threads", type=int, default=0, help="torch threads per site (default: torch's choice)")
    recipe.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt (same options; more rounds allowed)")
    recipe.add_argument("--notes", default="", help="free text stored in the model card")


def config_from_args(args: argparse.Namespace) -> FederatedConfig:
    if args.dataset is None and not getattr(args, "site_data", None):
        raise LiteSegError("no training data: give a DATASET to cut into sites (or, with deploy, --site-data)")
    if args.site_shares:
        shares = tuple(args.site_shares)
    elif getattr(args, "site_data", None):
        shares = (1.0,) * len(args.site_data)
    else:
        shares = (1.0,) * (3 if args.sites is None else args.sites)
    dataset = args.dataset if args.dataset is not None else args.site_data[0]
    return FederatedConfig(
        dataset=str(dataset.resolve()), output=str(args.output.resolve()), name=args.name, version=args.version,
        network=args.network, rounds=args.rounds, local_epochs=args.local_epochs, fraction_train=args.fraction_train,
        server_lr=args.server_lr,
        min_sites=args.min_sites or len(shares), site_shares=shares, round_timeout=args.round_timeout,
        connect_timeout=args.connect_timeout, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_fraction=args.val_fraction, label_values=tuple(args.label_values), empty_slice_ratio=args.empty_slice_ratio,
        passes_per_epoch=args.passes_per_epoch, foreground_prior=args.foreground_prior, precision=args.precision,
        window=tuple(args.window), threads=args.threads, resume=args.resume, notes=args.notes,
        command="liteseg " + shlex.join(sys.argv[1:]),
    )


def run(args: argparse.Namespace) -> int:
    """Run the federated training the options say; print the card's path and the held-out Dice."""
    from liteseg.federated.launch import SiteSpec, deploy, require_flower, simulate, write_app

    require_flower()
    config = config_from_args(args)
    if args.mode == "app":
        folder = write_app(args.app_dir, config)
        print(f"wrote {folder / 'pyproject.toml'}: run it with  flwr run {folder} <federation>  (the SuperLink in "
              f"your Flower config.toml); the server writes into {config.output}")
        return 0
    if args.mode == "simulate":
        card_path = simulate(config)
    else:
        if args.site_data:
            sites = [SiteSpec(f"site-{i}", path.resolve()) for i, path in enumerate(args.site_data)]
        else:
            count = len(config.site_shares)
            sites = [SiteSpec(f"site-{i}", Path(config.dataset), i, count) for i in range(count)]
        card_path = deploy(config, sites, args.work)
    validation = ModelCard.read(card_path).data["validation"]
    print(f"model card: {card_path}")
    print(f"held-out Dice of the final global model over {len(validation['cases'])} case(s) at the sites: "
          f"{validation['mean_dice']:.3f}")
    return 0
