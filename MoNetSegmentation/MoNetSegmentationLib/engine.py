"""Access to the `liteseg` engine package, and the list of bundled models without importing torch.

Where the engine is found:

- installed extension: the top-level CMakeLists.txt installs `liteseg` (and its weights in
  `Resources/Models`) into the scripted-modules folder, which is on `sys.path` in Slicer;
- checkout: when `<checkout>/MoNetSegmentation` is added to Slicer's module paths, `liteseg` is
  not importable; the checkout root (the parent of the module folder) is then put on `sys.path`.

`import liteseg` itself is cheap (the package's `__init__` imports nothing), but
`liteseg.modelcard` and `liteseg.inference` import torch. The model selector must be filled
before torch is known to be installed (it may be missing inside Slicer until the user agrees to
install it), so the bundled model cards are listed here by reading their JSON directly.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Must equal liteseg.modelcard.DEFAULT_MODEL (checked by Testing/slicer); repeated here because
# importing liteseg.modelcard imports torch.
DEFAULT_MODEL = "monet-pancreas-ct-demo"
MODELS_ENV = "LITESEG_MODELS"  # same override as liteseg.modelcard.models_dir()

CHECKOUT_ROOT = Path(__file__).resolve().parents[2]  # <root>/MoNetSegmentation/MoNetSegmentationLib/engine.py


def importEngine():
    """The `liteseg` package; adds the checkout root to `sys.path` when it is not importable."""
    try:
        import liteseg
    except ImportError:
        if not (CHECKOUT_ROOT / "liteseg" / "__init__.py").is_file():
            raise ImportError(
                "The LiteSeg engine (Python package 'liteseg') was not found: it is installed with the "
                f"LiteSeg extension, or lies in the checkout root ({CHECKOUT_ROOT})."
            ) from None
        sys.path.insert(0, str(CHECKOUT_ROOT))
        import liteseg
    return liteseg


def modelsDir() -> Path:
    """Folder of the bundled weights and cards, exactly as liteseg.modelcard.models_dir()."""
    override = os.environ.get(MODELS_ENV)
    if override:
        return Path(override)
    liteseg = importEngine()
    return Path(liteseg.__file__).resolve().parents[1] / "Resources" / "Models"


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


def availableModels(folder: Optional[Path] = None) -> list[ModelInfo]:
    """Bundled models (every readable `*.json` card with a name), sorted by name; no torch needed.

    Loading a model still goes through `liteseg.inference.load_model`, which checks the card and
    the weights' sha256; unreadable cards are skipped here and reported by the engine when chosen.
    """
    folder = Path(folder) if folder is not None else modelsDir()
    models = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or not data.get("name"):
                continue
            description = str(data.get("description") or data.get("notes") or "")
            models.append(ModelInfo(str(data["name"]), str(data.get("version", "")), path, description))
    return sorted(models, key=lambda m: m.name)


def bundledModelNames() -> list[str]:
    """Choices of the model selector: the bundled models, the default always among them (first)."""
    try:
        names = [m.name for m in availableModels()]
    except ImportError:
        names = []
    if DEFAULT_MODEL in names:
        names.remove(DEFAULT_MODEL)
    return [DEFAULT_MODEL] + names
