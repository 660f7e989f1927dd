"""Where the shared Slicer library (`LiteSegSlicerLib`) and the engine (`liteseg`) are found: the
only code of the extension that edits `sys.path`.

- installed extension and build tree: the top-level CMakeLists.txt puts `liteseg` and
  `LiteSegSlicerLib` into the scripted-modules lib folder beside the module files, which is on
  `sys.path` in Slicer: both just import.
- checkout (`<checkout>/MoNetSegmentation` or `<checkout>/LowResDetect` added to Slicer's module
  paths): Slicer puts only the module folder on `sys.path`. The module file then runs this file by
  its path (`runpy.run_path(...)["addCheckoutPaths"]()`, it cannot import it yet), which adds
  `<checkout>/LiteSegSlicer` and, when `liteseg` is not importable, the checkout root.

This file imports nothing of the library (it runs before the library is importable) and no torch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LIBRARY_DIR = Path(__file__).resolve().parents[1]  # <checkout>/LiteSegSlicer (holds LiteSegSlicerLib/)
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]  # <checkout> (holds liteseg/), in a checkout


def _addPath(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


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
        _addPath(CHECKOUT_ROOT)
        import liteseg
    return liteseg


def addCheckoutPaths() -> None:
    """Make `LiteSegSlicerLib` and `liteseg` importable from a checkout (no-op where they are)."""
    if importlib.util.find_spec("LiteSegSlicerLib") is None:
        _addPath(LIBRARY_DIR)
    importEngine()
