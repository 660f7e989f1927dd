"""The bundled models the two modules offer, listed without importing torch.

Listing the model cards (`liteseg.io.modelcard`) needs no torch, so the model selectors are filled
before torch is known to be installed (it may be missing inside Slicer until the user agrees to
install it). Where the cards and weights lie is the engine's business (`liteseg.io.modelcard`).

- segmentation (MoNetSegmentation): the slice-by-slice segmentation models, `DEFAULT_MODEL` first;
- detection (LowResDetect): the LowRes models, then `MODEL_CARD_FILE` (a card path typed in the panel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .paths import importEngine

importEngine()
from liteseg.io.labels import PANCREAS_LABEL  # noqa: E402,F401  (torch-free)
from liteseg.io.modelcard import DEFAULT_MODEL, bundled_cards  # noqa: E402,F401  (torch-free)

LOWRES_NETWORK = "lowres"  # liteseg.detection.lowres.LOWRES_NETWORK, which imports torch
MODEL_CARD_FILE = "Model card file..."  # the detection panel's choice that reads the card path field


@dataclass(frozen=True)
class ModelInfo:
    """What the model selector shows: a bundled model card's name, version and file."""

    name: str
    version: str
    card: Path
    description: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} (v{self.version})" if self.version else self.name


def _infos(keep) -> list[ModelInfo]:
    return [
        ModelInfo(card.name, card.version, card.path, str(card.data.get("description") or card.data.get("notes") or ""))
        for card in bundled_cards()
        if keep(card)
    ]


# ---------------------------------------------------------------------- segmentation
def availableModels() -> list[ModelInfo]:
    """Bundled models this module can run (readable cards of slice segmentation models, not
    detectors), sorted by name; no torch needed.

    Loading a model goes through `liteseg.segmentation.inference.load_model`, which checks the weights' sha256.
    """
    return _infos(lambda card: card.segments_slices)


def bundledModelNames() -> list[str]:
    """Choices of the model selector: the bundled models, the default always among them (first)."""
    try:
        names = [m.name for m in availableModels()]
    except ImportError:
        names = []
    if DEFAULT_MODEL in names:
        names.remove(DEFAULT_MODEL)
    return [DEFAULT_MODEL] + names


# ---------------------------------------------------------------------- detection
def availableDetectorModels() -> list[ModelInfo]:
    """Bundled LowRes models (model cards whose network is 'lowres'), sorted by name; no torch.

    Without bundled LowRes weights the list is empty and a model card path is needed.
    """
    return _infos(lambda card: card.network == LOWRES_NETWORK)


def detectorChoices() -> list[str]:
    """The panel's model choices: the bundled LowRes models by name, then `MODEL_CARD_FILE`."""
    return [m.name for m in availableDetectorModels()] + [MODEL_CARD_FILE]


def detectorModel(choice: str, cardPath: str) -> str:
    """The `model` argument of `DetectionLogic.process` for a panel choice: a bundled model's
    name, or the card path typed or browsed when the choice is `MODEL_CARD_FILE` (read on
    Detect, so an emptied field is never mistaken for a model)."""
    if choice != MODEL_CARD_FILE:
        return choice
    path = (cardPath or "").strip()
    if not path:
        raise ValueError("choose a LowRes model card file (.json), or pick a bundled model")
    return path
