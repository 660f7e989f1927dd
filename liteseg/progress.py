"""How long computations report progress and are cancelled (torch-free: Slicer imports it early)."""

from __future__ import annotations

import threading
from typing import Callable, Union

ProgressCallback = Callable[[float, str], None]  # (fraction done in [0, 1], message)
CancelFlag = Union[threading.Event, Callable[[], bool], None]


def is_cancelled(cancel: CancelFlag) -> bool:
    """Whether the caller's cancel flag (an Event, a callable or None) is set."""
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())
