"""Model cards (JSON beside the weights) and checksum-verified loading of bundled weights.

Reading and listing cards needs no torch (Slicer lists the models before torch is installed);
torch is imported when weights are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from liteseg.errors import LiteSegError, WeightsError
from liteseg.segmentation.localisation import Localisation
from liteseg.segmentation.preprocessing import Preprocessing

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL = "monet-pancreas-nih"
BUNDLED_MODELS_PACKAGE = "liteseg.bundled_models"
CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "Resources" / "Models"  # what pip maps to it
CARD_SUFFIX = ".json"
REQUIRED_KEYS = ("name", "version", "network", "weights", "sha256", "input", "output", "labels")


def models_dir() -> Path:
    """Folder of the bundled weights: $LITESEG_MODELS, else the package data `liteseg.bundled_models`
    (the extension's `Resources/Models`, installed there by pip and by Slicer's CMake), else, for a
    checkout put on `sys.path` without installing it (Slicer's module paths), that folder itself."""
    override = os.environ.get("LITESEG_MODELS")
    if override:
        return Path(override)
    try:
        return Path(str(resources.files(BUNDLED_MODELS_PACKAGE)))  # installed packages are always on disk
    except ModuleNotFoundError:
        return CHECKOUT_MODELS


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    """A model card read from its JSON file; weights are resolved beside it."""

    path: Path
    data: dict

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def network(self) -> str:
        return self.data["network"]

    @property
    def weights_path(self) -> Path:
        return self.path.parent / self.data["weights"]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.data["input"]["preprocessing"])

    @property
    def threshold(self) -> float:
        return float(self.data["output"]["threshold"])

    @property
    def labels(self) -> list[dict]:
        return self.data["labels"]

    @property
    def localisation(self) -> Optional[Localisation]:
        """The localisation pass this model runs by default (None: whole volume), as checked
        against full-volume inference and recorded in the card's "inference" section (with the
        model that runs its first look, when that is not this model)."""
        options = self.data.get("inference", {}).get("localisation")
        if not options:
            return None
        return Localisation(float(options["step_mm"]), int(options["margin_px"]), options.get("model"))

    @property
    def segments_slices(self) -> bool:
        """True for a 2D slice-by-slice segmentation model, what `segment_image` and the
        MoNetSegmentation module run (its card gives a modality, window and slice size); False
        for e.g. a LowRes detection card."""
        preprocessing = self.data.get("input", {}).get("preprocessing")
        return isinstance(preprocessing, dict) and {"modality", "slice_size"} <= set(preprocessing)

    @property
    def sample_ct_dice(self) -> Optional[float]:
        """The sample CT's Dice recorded by `liteseg evaluate --record` for the card's default
        setting (localised or whole volume); None when not recorded."""
        runs = self.data.get("evaluation", {}).get("sample_ct", {}).get("runs", [])
        wanted = self.localisation is not None
        return next((float(run["dice"]) for run in runs if run["localised"] == wanted), None)

    @classmethod
    def read(cls, path: Path) -> "ModelCard":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise WeightsError(f"cannot read model card {path}: {error}") from None
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise WeightsError(f"model card {path} lacks {', '.join(missing)}")
        return cls(Path(path), data)


def bundled_cards() -> list[ModelCard]:
    """Every readable model card in the bundled models folder, sorted by name; an unreadable
    card is left out with a warning, so that it does not hide the others."""
    folder = models_dir()
    cards = []
    for path in sorted(folder.glob(f"*{CARD_SUFFIX}")) if folder.is_dir() else []:
        try:
            cards.append(ModelCard.read(path))
        except WeightsError as error:
            warnings.warn(str(error), stacklevel=2)
    return sorted(cards, key=lambda c: c.name)


def find_card(model: str | Path) -> ModelCard:
    """A bundled model by name, or a model card given by its path."""
    path = Path(model)
    if path.suffix.lower() == CARD_SUFFIX:
        if not path.is_file():
            raise WeightsError(f"model card not found: {path} (no such file); give an existing model card .json "
                               f"or a bundled model name ({', '.join(c.name for c in bundled_cards())})")
        return ModelCard.read(path)
    cards = bundled_cards()
    for card in cards:
        if card.name == str(model):
            return card
    names = ", ".join(c.name for c in cards) or f"none found in {models_dir()}"
    raise WeightsError(f"unknown model {model!r}; bundled models: {names}; or give a model card .json path")


def load_network(card: ModelCard) -> "nn.Module":
    """Build the card's network (with its "network_options", e.g. out_channels) and load its
    weights after checking their sha256; eval mode."""
    import torch

    from liteseg.models import build_model

    weights = card.weights_path
    if not weights.is_file():
        raise WeightsError(f"weights file missing: {weights} (named by model card {card.path})")
    actual = sha256_file(weights)
    if actual != card.data["sha256"]:
        raise WeightsError(
            f"weights file {weights} does not match its model card (sha256 {actual[:12]}..., "
            f"card says {card.data['sha256'][:12]}...): corrupted or replaced; reinstall or retrain"
        )
    network = build_model(card.network, **card.data.get("network_options", {}))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise WeightsError(f"weights file {weights} cannot be read: damaged or not a PyTorch state_dict "
                           f"({str(error).splitlines()[0][:80]}); reinstall or retrain") from None
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise WeightsError(f"weights {weights} do not fit network {card.network!r}: {str(error).splitlines()[0]}") from None
    return network.eval()


def write_card(path: Path, data: dict) -> Path:
    """Write a model card as indented JSON (the trainer fills `data`, including the sha256)."""
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise LiteSegError(f"model card lacks {', '.join(missing)}")
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
