"""Options of a federated run, carried to every site as a Flower run config (flat scalars)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping, Optional, Union

from liteseg.errors import LiteSegError
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.training.runs import raise_first_problem
from liteseg.training.trainer import TrainConfig

ConfigValue = Union[str, int, float, bool]


ERROR_NAME = "federated_error.txt"  # the server's failure, for the command that started the run


# Options that may change when resuming without changing the rounds already run.
RESUMABLE_CHANGES = ("rounds", "notes", "threads", "round_timeout", "connect_timeout", "resume", "command")


@dataclass(frozen=True)
class FederatedConfig:
    """One federated run: the server's rounds and every site's local recipe (the MoNet paper's)."""

    dataset: str  # the slice dataset or CSV sites read, unless a site's node config names its own
    output: str  # the server's folder: checkpoint, weights and model card
    name: str = "monet-pancreas-federated"
    version: str = "1.0.0"
    network: str = "monet"
    rounds: int = 10
    local_epochs: int = 1
    fraction_train: float = 1.0  # fraction of the connected sites that train in a round
    server_lr: float = 1.0  # server learning rate on the averaged update (1: plain FedAvg)
    min_sites: int = 2  # sites that must be connected before a round starts
    site_shares: tuple[float, ...] = (1.0, 1.0)  # relative numbers of patients per site (partitioned data)
    round_timeout: float = 3600.0  # seconds the server waits for replies in a round
    connect_timeout: float = 120.0  # seconds the server waits for `min_sites` sites to connect
    batch_size: int = 8
    lr: float = 5e-4
    seed: int = 0
    val_fraction: float = 0.2
    label_values: tuple[int, ...] = (1,)
    empty_slice_ratio: float = 0.5
    passes_per_epoch: int = 1
    foreground_prior: Optional[float] = None
    precision: str = "float32"
    window: tuple[float, float] = (-150.0, 200.0)
    threads: int = 0  # torch threads per site (0: torch's choice)
    resume: bool = False
    notes: str = ""
    command: str = ""

    def recipe(self) -> TrainConfig:
        """The local training recipe of every site, as the centralised trainer's options."""
        return TrainConfig(
            output=Path(self.output), name=self.name, version=self.version, network=self.network,
            epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
            val_fraction=self.val_fraction, label_values=self.label_values, empty_slice_ratio=self.empty_slice_ratio,
            passes_per_epoch=self.passes_per_epoch, foreground_prior=self.foreground_prior, precision=self.precision,
            preprocessing=Preprocessing(window=self.window), device="cpu", num_threads=self.threads or None,
            notes=self.notes,
        )

    def check(self) -> None:
        """Raise LiteSegError on an option no federated run can use."""
        raise_first_problem([
            (self.rounds < 1, f"rounds must be at least 1, got {self.rounds}"),
            (self.local_epochs < 1, f"local epochs must be at least 1, got {self.local_epochs}"),
            (not 0 < self.fraction_train <= 1, f"fraction of sites must be in (0, 1], got {self.fraction_train}"),
            (not self.server_lr > 0, f"server learning rate must be positive, got {self.server_lr}"),
            (self.min_sites < 1, f"minimum number of sites must be at least 1, got {self.min_sites}"),
            (not self.site_shares or min(self.site_shares) <= 0,
             f"site shares must be positive numbers, got {' '.join(f'{s:g}' for s in self.site_shares)}"),
            (self.round_timeout <= 0 or self.connect_timeout <= 0, "timeouts must be positive"),
            (self.threads < 0, f"threads must be at least 0, got {self.threads}"),
        ])
        self.recipe().check()

    def to_run_config(self) -> dict[str, ConfigValue]:
        """Flower run config: hyphenated keys, tuples as space-separated text, no value as ""."""
        config: dict[str, ConfigValue] = {}
        for key, value in asdict(self).items():
            if isinstance(value, (tuple, list)):
                value = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            config[key.replace("_", "-")] = "" if value is None else value
        return config

    @classmethod
    def from_run_config(cls, config: Mapping[str, ConfigValue]) -> "FederatedConfig":
        """The inverse of `to_run_config` (missing keys keep their defaults)."""
        values: dict = {}
        for item in fields(cls):
            key = item.name.replace("_", "-")
            if key not in config:
                continue
            value = config[key]
            default = getattr(cls, item.name, None) if item.name not in ("dataset", "output") else ""
            if isinstance(default, tuple):
                cast = float if item.name in ("site_shares", "window") else int
                value = tuple(cast(v) for v in str(value).split())
            elif item.name == "foreground_prior":
                value = None if value == "" else float(value)
            elif isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() == "true"
            elif isinstance(default, (int, float)):
                value = type(default)(value)
            values[item.name] = value
        missing = [name for name in ("dataset", "output") if name not in values]
        if missing:
            raise LiteSegError(f"the federated run config lacks {', '.join(missing)}")
        return cls(**values)

    def changes_from(self, saved: Mapping[str, ConfigValue]) -> list[str]:
        """The options that differ from a checkpoint's run config, except the resumable ones."""
        current = self.to_run_config()
        resumable = {key.replace("_", "-") for key in RESUMABLE_CHANGES}
        return [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in current.items() if k not in resumable and saved.get(k) != v]
