"""Headless training of the slice-by-slice networks (MoNet recipe): cases, augmentation, loss,
trainer and the `liteseg train` command. Needs tqdm and matplotlib for the progress bar and the
training curve."""

from .datasets import Case, case_from_pair, cases_from_decathlon, cases_from_pairs_csv, split_by_patient
from .trainer import LABEL_PRESETS, TrainConfig, train

__all__ = [
    "Case",
    "LABEL_PRESETS",
    "TrainConfig",
    "case_from_pair",
    "cases_from_decathlon",
    "cases_from_pairs_csv",
    "split_by_patient",
    "train",
]
