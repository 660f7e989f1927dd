"""Access to the sibling module's Qt-free library (`MoNetSegmentationLib`) and to the engine.

Where `MoNetSegmentationLib` is found:

- installed extension: both modules are installed side by side in the scripted-modules folder,
  which is on `sys.path` in Slicer, so `import MoNetSegmentationLib` just works;
- checkout: Slicer puts each module folder added to its module paths on `sys.path`; when only
  `<checkout>/LowResDetect` was added, the sibling `<checkout>/MoNetSegmentation` is put on
  `sys.path` here. `MoNetSegmentationLib.engine.importEngine` then finds `liteseg` in the same way.

Listing the LowRes model cards needs no torch (`liteseg.io.modelcard` is torch-free).
"""

from __future__ import annotations

import sys
from pathlib import Path

SIBLING_MODULE = Path(__file__).resolve().parents[2] / "MoNetSegmentation"  # <root>/LowResDetect/LowResDetectLib/shared.py


def importMoNetLib():
    """The `MoNetSegmentationLib` package; adds the sibling module folder to `sys.path` if needed."""
    try:
        import MoNetSegmentationLib
    except ImportError:
        if not (SIBLING_MODULE / "MoNetSegmentationLib" / "__init__.py").is_file():
            raise ImportError(
                "LowResDetect needs the MoNetSegmentation module of the LiteSeg extension (its library "
                f"'MoNetSegmentationLib'), installed with the extension or in the checkout ({SIBLING_MODULE})."
            ) from None
        sys.path.insert(0, str(SIBLING_MODULE))
        import MoNetSegmentationLib
    return MoNetSegmentationLib


importMoNetLib()
from MoNetSegmentationLib.engine import ModelInfo, importEngine  # noqa: E402
from MoNetSegmentationLib.parameter_gui import parameterWidgets  # noqa: E402,F401  (for the widget)

importEngine()
from liteseg.io.modelcard import bundled_cards  # noqa: E402  (torch-free)

LOWRES_NETWORK = "lowres"  # liteseg.detection.lowres.LOWRES_NETWORK, which imports torch


MODEL_CARD_FILE = "Model card file..."  # the model choice that reads the card path field


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


def availableDetectorModels() -> list[ModelInfo]:
    """Bundled LowRes models (model cards whose network is 'lowres'), sorted by name; no torch.

    Without bundled LowRes weights the list is empty and a model card path is needed.
    """
    return [
        ModelInfo(card.name, card.version, card.path, str(card.data.get("description") or card.data.get("notes") or ""))
        for card in bundled_cards()
        if card.network == LOWRES_NETWORK
    ]
