"""How long computations report progress and are cancelled, and the bars headless training counts
on (torch-free: Slicer imports it early). Drawing bars is the command line's job (`cli.console`)."""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Optional, Protocol, TypeVar, Union

ProgressCallback = Callable[[float, str], None]  # (fraction done in [0, 1], message)
CancelFlag = Union[threading.Event, Callable[[], bool], None]
T = TypeVar("T")


def is_cancelled(cancel: CancelFlag) -> bool:
    """Whether the caller's cancel flag (an Event, a callable or None) is set."""
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


class Bar(Protocol):
    """What the trainers use of a progress bar (a tqdm bar has it all)."""

    def update(self, count: int = 1) -> None: ...

    def set_postfix(self, **values: object) -> None: ...

    def close(self) -> None: ...


BarFactory = Callable[[int, str, str], Bar]  # (total, description, unit) -> a new bar; the CLI's draws one


def iterate(items: Iterable[T], bars: Optional[BarFactory], desc: str, unit: str) -> Iterator[T]:
    """`items` one by one, counted on a bar from `bars` (none when `bars` is None)."""
    items = list(items)
    bar = bars(len(items), desc, unit) if bars is not None else None
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
