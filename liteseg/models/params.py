"""Parameter counts (PyTorch and Keras conventions), serialized sizes and the model table."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """Trainable parameters, BatchNorm running statistics, and their sum (what Keras reports)."""

    trainable: int
    bn_running: int
    keras_total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keras_total", self.trainable + self.bn_running)


def count_parameters(model: nn.Module) -> ParamCount:
    """Count trainable parameters and BatchNorm running mean/variance elements."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bn_running = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            bn_running += m.running_mean.numel() + m.running_var.numel()
    return ParamCount(trainable, bn_running)


def state_dict_megabytes(model: nn.Module) -> float:
    """Size in MB (1e6 bytes) of ``torch.save(model.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def state_dict_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes of the raw tensors of a state dict (what travels when the arrays are sent, less keys and headers)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def model_table_rows() -> list[dict]:
    """One row per registered model: name, trainable, keras_total, paper, state_dict_mb, note."""
    from liteseg.models import MODELS  # local import: liteseg.models does not depend on this module

    rows = []
    for spec in MODELS.values():
        model = spec.build()
        count = count_parameters(model)
        rows.append(
            {
                "name": spec.name,
                "trainable": count.trainable,
                "keras_total": count.keras_total,
                "paper": spec.paper,
                "state_dict_mb": state_dict_megabytes(model),
                "note": spec.note,
            }
        )
        del model
    return rows


def format_model_table(rows: list[dict]) -> str:
    """A fixed-width text table of ``model_table_rows()`` with thousands separators."""
    header = ("model", "trainable", "Keras total", "paper", "MB", "note")
    cells = [
        (
            r["name"],
            f"{r['trainable']:,}",
            f"{r['keras_total']:,}",
            r["paper"],
            f"{r['state_dict_mb']:.1f}",
            r["note"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    right = {1, 2, 4}  # numeric columns

    def line(row: tuple[str, ...]) -> str:
        cols = enumerate(zip(row, widths))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in cols).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(c) for c in cells)])
