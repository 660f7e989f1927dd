"""Progress display of the commands: a tqdm bar when tqdm is installed (the `cli` extra), else
plain lines on stderr, so a bare install (torch, numpy, SimpleITK only) runs every command.
`progress_bar` is the `progress.BarFactory` the commands hand to the trainers and folder runs."""

from __future__ import annotations

import sys
import time

PLAIN_INTERVAL_S = 5.0  # plain progress: at most one line per this many seconds (and the last)


class PlainBar:
    """What the commands use of a tqdm bar (update, n, set_postfix, set_postfix_str, close),
    written as occasional plain lines: "description: done/total unit (postfix)"."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.postfix = ""
        self._last = 0.0

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.monotonic()
        if now - self._last >= PLAIN_INTERVAL_S or self.n >= self.total:
            self._last = now
            self._write()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _write(self) -> None:
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{extra}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.postfix:
            self._write()


def progress_bar(total: int, desc: str, unit: str):
    """A tqdm bar, or a `PlainBar` when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainBar(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit)


class ProgressBar:
    """A progress callback drawing a percentage bar (tqdm, or plain lines without it), created
    at the first report so that an error found before any progress prints no bar."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None:
            self.bar = progress_bar(100, self.description, "%")
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.update(round(fraction * 100) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
