"""Optional extras checked where they are used: matplotlib draws the PNGs (`liteseg[cli]`)."""

from __future__ import annotations

import warnings


def matplotlib_available(what: str) -> bool:
    """Whether matplotlib can be imported; warns that `what` is skipped otherwise."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(f"{what} not drawn: matplotlib is not installed (pip install 'liteseg[cli]')", stacklevel=2)
        return False
    return True
