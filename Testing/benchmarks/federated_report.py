"""The figures of federated runs beside centralised training, from their model cards.

    python Testing/benchmarks/federated_report.py CARD [CARD ...] [--centralised CARD]

For each federated card (written by `liteseg federated ...`): sites with their training patients,
rounds, wall time, the bytes sent to and received from each site per round (measured on the
messages' records), the held-out Dice of the global model after every round (with the averaged
BatchNorm statistics) and of the final one (with the statistics the sites recomputed for it).
Beside them: the centralised card's validation Dice after the same number of epochs (default: the
bundled `monet-pancreas-nih`, trained on the same patients and validated on the same held-out
patients), and the bytes a round would carry with U-Net-16 and U-Net-64 instead of MoNet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from liteseg.io.modelcard import DEFAULT_MODEL, find_card
from liteseg.models import build_model
from liteseg.models.params import state_dict_bytes

MB = 1e6


def centralised_dice(card: dict, epochs: int) -> float:
    """Validation Dice of the centralised run after `epochs` epochs (its history)."""
    return next(h["val_dice"] for h in card["training"]["history"] if h["epoch"] == epochs)


def report(path: Path, centralised: dict) -> str:
    card = json.loads(path.read_text())
    training, federated = card["training"], card["training"]["federated"]
    history = training["history"]
    epochs = federated["rounds"] * federated["local_epochs"]
    sites = ", ".join(f"{s['site']} {s['training_patients']} patients / {len(s['validation_patients'])} held out"
                      for s in training["sites"])
    sent = [s["sent_bytes"] for h in history for s in h["sites"]]
    received = [s["received_bytes"] for h in history for s in h["sites"]]
    lines = [
        f"{path.name}: {len(training['sites'])} sites ({sites}); {federated['rounds']} rounds x "
        f"{federated['local_epochs']} local epoch(s); {training['seconds'] / 60:.1f} min",
        f"  per site and round: sent {np.mean(sent) / MB:.3f} MB (min {min(sent) / MB:.3f}, max {max(sent) / MB:.3f}), "
        f"received {np.mean(received) / MB:.3f} MB; model state_dict {federated['model_bytes'] / MB:.3f} MB",
        "  held-out Dice of the global model after each round: "
        + " ".join(f"{h['incoming_dice']:.3f}" for h in history[1:]) + f" {card['validation']['mean_dice']:.3f}",
        f"  final held-out Dice {card['validation']['mean_dice']:.3f} over {len(card['validation']['cases'])} patients; "
        f"centralised after {epochs} epochs {centralised_dice(centralised, epochs):.3f} "
        f"(difference {card['validation']['mean_dice'] - centralised_dice(centralised, epochs):+.3f})",
    ]
    calibration = federated.get("batchnorm_statistics")
    if calibration:
        lines.append(f"  final model's BatchNorm statistics: {calibration['how']}; {calibration['batches']} batches at "
                     f"{len(calibration['sites'])} site(s); sent {calibration['sent_bytes'] / MB:.3f} MB in all, "
                     f"received {calibration['received_bytes'] / MB:.3f} MB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", type=Path, nargs="+")
    parser.add_argument("--centralised", type=Path, default=None)
    args = parser.parse_args()
    centralised = json.loads((args.centralised or find_card(DEFAULT_MODEL).path).read_text())
    for path in args.cards:
        print(report(path, centralised))
    print("bytes one round carries per site (the model down, the model up), by network:")
    for network in ("monet", "unet16", "unet64"):
        size = state_dict_bytes(build_model(network, out_channels=1).state_dict())
        print(f"  {network:8s} state_dict {size / MB:7.3f} MB   per round {2 * size / MB:7.3f} MB")


if __name__ == "__main__":
    main()
