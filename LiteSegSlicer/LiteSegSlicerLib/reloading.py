"""Reloading a module's Python libraries on "Reload" (Slicer reloads only the module file itself,
so edits to its `...Lib` package would otherwise need a restart; as SlicerNNUnet does)."""

from __future__ import annotations

import importlib
import sys


def reloadLibraries(*packages: str) -> list[str]:
    """Reload every imported submodule of `packages`, then the packages; returns their names."""
    names = sorted(
        (name for name in sys.modules if any(name.startswith(package + ".") for package in packages)),
        key=lambda name: name.count("."), reverse=True,
    ) + [package for package in packages if package in sys.modules]
    for name in names:
        importlib.reload(sys.modules[name])
    return names
