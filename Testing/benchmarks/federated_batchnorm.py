"""Held-out Dice of a federated run's global model with the averaged BatchNorm statistics and
with the statistics its sites recompute for it (what `liteseg federated` now does after the last
round), from the run's checkpoint: the same sites, functions and pooling, run here in one process.

    python Testing/benchmarks/federated_batchnorm.py RUN_FOLDER/checkpoint.pt

For runs made before the final step existed; reads the sites' data like the simulation does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from liteseg.federated.config import FederatedConfig
from liteseg.federated.local import batchnorm_statistics, global_network, validate_site
from liteseg.federated.rounds import pooled_statistics
from liteseg.federated.sites import partition_sites
from liteseg.training.slice_dataset import cases_from_dataset


def held_out_dice(config: FederatedConfig, sites: list, state: dict) -> float:
    """Mean Dice over every site's held-out patients of the model `state`."""
    results = [r for site in sites for r in validate_site(config, site, global_network(config, state, site.name))]
    return float(np.mean([r["dice"] for r in results]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = FederatedConfig.from_run_config(saved["config"])
    dataset = Path(config.dataset)
    sites = partition_sites(cases_from_dataset(dataset), dataset, config.site_shares, config.seed, config.val_fraction)
    averaged = saved["model"]
    recomputed = [batchnorm_statistics(config, site, global_network(config, averaged, site.name)) for site in sites]
    state = {**averaged, **pooled_statistics([s for s, _ in recomputed], [n for _, n in recomputed])}
    print(f"{args.checkpoint}: global model after round {len(saved['history'])}, {len(sites)} sites, "
          f"{sum(n for _, n in recomputed)} batches")
    print(f"  held-out Dice, averaged BatchNorm statistics:   {held_out_dice(config, sites, averaged):.4f}")
    print(f"  held-out Dice, statistics recomputed at sites: {held_out_dice(config, sites, state):.4f}")


if __name__ == "__main__":
    main()
