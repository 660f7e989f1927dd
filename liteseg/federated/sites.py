"""Which cases a site trains and validates on.

A site of a real consortium reads its own dataset file and splits its own patients (the
centralised trainer's split: by patient, seed, validation fraction). For experiments on one
dataset, a site is a partition of it: the centralised split first (so the held-out patients are
exactly those of a centralised model trained with the same seed and fraction), then the training
and the held-out patients each cut into consecutive shares, so every held-out patient is
validated at exactly one site and the sites' validation figures add up to the centralised ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from liteseg.errors import LiteSegError
from liteseg.training.datasets import Case, split_by_patient

NodeConfig = Mapping[str, Union[str, int, float, bool]]


@dataclass(frozen=True)
class Site:
    """One hospital's cases: trained on, and validated on (never both)."""

    name: str
    dataset: Path
    train_cases: tuple[Case, ...]
    val_cases: tuple[Case, ...]

    def describe(self) -> dict:
        """The site as recorded in a model card (patients, no local folders)."""
        return {
            "site": self.name,
            "dataset": self.dataset.name,
            "training_patients": sorted({c.patient for c in self.train_cases}),
            "validation_patients": sorted({c.patient for c in self.val_cases}),
        }


def share_counts(total: int, shares: Sequence[float]) -> list[int]:
    """`total` items cut in proportion to `shares` (largest remainders), summing to `total`."""
    exact = [total * s / sum(shares) for s in shares]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _cut(patients: Sequence[str], shares: Sequence[float]) -> list[set[str]]:
    parts, start = [], 0
    for count in share_counts(len(patients), shares):
        parts.append(set(patients[start : start + count]))
        start += count
    return parts


def partition_sites(cases: Sequence[Case], dataset: Path, shares: Sequence[float], seed: int,
                    val_fraction: float) -> list[Site]:
    """The sites of one dataset cut by patient in proportion to `shares` (see the module)."""
    train, val = split_by_patient(cases, val_fraction, seed)
    train_patients = sorted({c.patient for c in train})
    random.Random(seed).shuffle(train_patients)
    val_patients = sorted({c.patient for c in val})
    train_parts, val_parts = _cut(train_patients, shares), _cut(val_patients, shares)
    sites = []
    for index, (train_part, val_part) in enumerate(zip(train_parts, val_parts)):
        if not train_part:
            raise LiteSegError(
                f"site {index} of {len(shares)} gets no training patient: {len(train_patients)} training patients "
                f"cannot be cut into shares {' '.join(f'{s:g}' for s in shares)}; give fewer sites or more even shares"
            )
        sites.append(Site(f"site-{index}", dataset, tuple(c for c in train if c.patient in train_part),
                          tuple(c for c in val if c.patient in val_part)))
    return sites


def own_site(cases: Sequence[Case], dataset: Path, name: str, seed: int, val_fraction: float) -> Site:
    """A site holding all of `dataset`, split by patient like the centralised trainer."""
    train, val = split_by_patient(cases, val_fraction, seed)
    return Site(name, dataset, tuple(train), tuple(val))


def partition_of(node_config: NodeConfig) -> Optional[tuple[int, int]]:
    """(partition-id, num-partitions) of a node that holds one partition of a shared dataset."""
    if "partition-id" not in node_config:
        return None
    index, count = int(node_config["partition-id"]), int(node_config.get("num-partitions", 0))
    if not 0 <= index < count:
        raise LiteSegError(f"partition-id {index} is not one of the {count} partitions (num-partitions)")
    return index, count
