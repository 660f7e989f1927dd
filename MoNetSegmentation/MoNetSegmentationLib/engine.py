"""Access to the `liteseg` engine package, and the list of bundled models without importing torch.

Where the engine is found:

- installed extension: the top-level CMakeLists.txt installs `liteseg` (and its weights in
  `Resources/Models`) into the scripted-modules folder, which is on `sys.path` in Slicer;
- checkout: when `<checkout>/MoNetSegmentation` is added to Slicer's module paths, `liteseg` is
  not importable; the checkout root (the parent of the module folder) is then put on `sys.path`.

Listing the bundled models (`liteseg.io.modelcard`) needs no torch, so the model selector is filled
before torch is known to be installed (it may be missing inside Slicer until the user agrees to
install it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

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


importEngine()
from liteseg.io.modelcard import DEFAULT_MODEL, PANCREAS_LABEL, bundled_cards  # noqa: E402,F401  (torch-free)


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


def availableModels() -> list[ModelInfo]:
    """Bundled models this module can run (readable cards of slice segmentation models, not
    detectors), sorted by name; no torch needed.

    Loading a model goes through `liteseg.segmentation.inference.load_model`, which checks the weights' sha256.
    """
    return [
        ModelInfo(card.name, card.version, card.path, str(card.data.get("description") or card.data.get("notes") or ""))
        for card in bundled_cards()
        if card.segments_slices
    ]


def bundledModelNames() -> list[str]:
    """Choices of the model selector: the bundled models, the default always among them (first)."""
    try:
        names = [m.name for m in availableModels()]
    except ImportError:
        names = []
    if DEFAULT_MODEL in names:
        names.remove(DEFAULT_MODEL)
    return [DEFAULT_MODEL] + names
