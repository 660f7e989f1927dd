"""Headless training of the slice-by-slice networks (MoNet recipe): cases, augmentation, loss,
trainer and the `liteseg train` command. Uses tqdm and matplotlib when installed (progress bar,
training curve PNG); without them it prints plain progress lines and skips the PNG."""

from liteseg.training.datasets import Case, case_from_pair, cases_from_decathlon, cases_from_pairs_csv, split_by_patient
from liteseg.training.trainer import LABEL_PRESETS, TrainConfig, train

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
