"""What a site does with the global model: check it, train it on its own slices, validate it on
its own held-out patients. Plain torch: Flower only carries the state dicts to and from here."""

from __future__ import annotations

import time
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from liteseg import __version__
from liteseg.errors import LiteSegError
from liteseg.federated.config import FederatedConfig
from liteseg.federated.sites import NodeConfig, Site, own_site, partition_of, partition_sites
from liteseg.models import build_model
from liteseg.training.datasets import Slices, select_slices
from liteseg.training.slice_dataset import cases_from_dataset
from liteseg.training.trainer import BINARY_OUTPUT, evaluate_cases, load_training_slices, train_epoch

StateDict = Mapping[str, torch.Tensor]

BATCHNORM_STATISTICS = ("running_mean", "running_var")


def site_of(config: FederatedConfig, node_config: NodeConfig) -> Site:
    """This node's site: its own `dataset` (node config, else the run's), whole or one partition."""
    dataset = Path(str(node_config.get("dataset", config.dataset)))
    name = str(node_config.get("site", ""))
    try:
        cases = cases_from_dataset(dataset)
    except LiteSegError as error:
        raise LiteSegError(f"site {name or dataset}: cannot read its data: {error.message}") from None
    partition = partition_of(node_config)
    if partition is None:
        return own_site(cases, dataset, name or dataset.stem, config.seed, config.val_fraction)
    index, count = partition
    if count != len(config.site_shares):
        raise LiteSegError(f"the run has {len(config.site_shares)} site shares but this node is one of {count} partitions")
    site = partition_sites(cases, dataset, config.site_shares, config.seed, config.val_fraction)[index]
    return Site(name or site.name, site.dataset, site.train_cases, site.val_cases)


@lru_cache(maxsize=8)  # every site of a simulation may run in one process
def _training_slices(site: Site, config: FederatedConfig) -> Slices:
    return load_training_slices(site.train_cases, config.recipe(), f"{site.name} training", None)


def _site_training_slices(site: Site, config: FederatedConfig) -> Slices:
    """The site's training slices (read once per process), with its thread count set."""
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _training_slices(site, config)
    except LiteSegError as error:
        raise LiteSegError(f"site {site.name}: cannot read its training slices: {error.message}") from None


def global_network(config: FederatedConfig, state: StateDict, site: str) -> nn.Module:
    """This site's build of the run's network loaded with the global `state`; a state that does not
    fit it (another network or version of liteseg at the server) is refused with a clear message."""
    network = build_model(config.network, **BINARY_OUTPUT)
    own = network.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or reshaped:
        details = "; ".join(part for part in (
            f"{len(missing)} arrays missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(reshaped)} of another shape (e.g. {sorted(reshaped)[0]})" if reshaped else "",
        ) if part)
        raise LiteSegError(
            f"site {site}: the global model does not fit this site's {config.network} (liteseg {__version__}): "
            f"{details}; the server and every site must run the same network and liteseg version"
        )
    network.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return network


def round_seed(config: FederatedConfig, site: str, server_round: int) -> int:
    """The seed of one site's local training in one round (the same on a resumed run)."""
    return config.seed * 1_000_003 + zlib.crc32(site.encode()) + server_round


def train_site(config: FederatedConfig, site: Site, network: nn.Module, seed: int) -> dict[str, float]:
    """`config.local_epochs` epochs of the recipe on the site's training slices, a fresh NAdam each
    round; `network` holds the result. Returns the slices seen, mean loss and seconds."""
    recipe = config.recipe()
    slices = _site_training_slices(site, config)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.NAdam(network.parameters(), lr=recipe.lr)
    started, seen, total = time.perf_counter(), 0, 0.0
    for _ in range(config.local_epochs):
        indices = torch.cat([select_slices(slices, recipe.empty_slice_ratio, generator) for _ in range(recipe.passes_per_epoch)])
        loss = train_epoch(network, optimizer, slices, indices, recipe.batch_size, generator, torch.device("cpu"),
                           recipe.precision == "bfloat16", None)
        seen, total = seen + len(indices), total + loss * len(indices)
    return {"num-examples": seen, "train-loss": total / seen, "seconds": time.perf_counter() - started}


def recompute_batchnorm(network: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every BatchNorm of `network` by the plain average of
    their batch statistics over `batches` (as PyTorch's `update_bn`, but with dropout off, as at
    inference); returns the number of batches. `network` is left in eval mode."""
    norms = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    network.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    count = 0
    with torch.no_grad():
        for batch in batches:
            network(batch)
            count += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    network.eval()
    return count


def batchnorm_statistics(config: FederatedConfig, site: Site, network: nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """The running mean and variance of every BatchNorm of `network` recomputed on this site's
    training slices (one draw of the recipe's slices, not augmented, in batches of the recipe's
    size; `recompute_batchnorm`), and the number of batches averaged. Only these leave the site."""
    recipe = config.recipe()
    slices = _site_training_slices(site, config)
    indices = select_slices(slices, recipe.empty_slice_ratio, torch.Generator().manual_seed(config.seed))
    starts = range(0, len(indices), recipe.batch_size)
    batches = recompute_batchnorm(network, (slices.images[indices[i : i + recipe.batch_size]].float() for i in starts))
    return {key: value for key, value in network.state_dict().items() if key.endswith(BATCHNORM_STATISTICS)}, batches


def validate_site(config: FederatedConfig, site: Site, network: nn.Module) -> list[dict]:
    """Dice of whole held-out volumes of this site segmented by `segment_image` (as the trainer)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return evaluate_cases(network, site.val_cases, config.recipe(), torch.device("cpu"), with_hd95=False)
    except LiteSegError as error:
        raise LiteSegError(f"site {site.name}: cannot validate on its held-out cases: {error.message}") from None
