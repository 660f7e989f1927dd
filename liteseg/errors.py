"""Exceptions the engine raises for problems a user can fix.

An error that one parameter of the engine call fixes or overrides carries that parameter as a
`Remedy`: its text names the Python parameter (``allow_non_ct=True to override``), and each front
end words the remedy its own way (the command line as a flag, the Slicer modules as the panel's
control) from `error.message` and `error.remedy`, never by rewriting the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Remedy:
    """The engine parameter that fixes or overrides a problem: `parameter`=`value` `effect`."""

    parameter: str  # the Python parameter name, e.g. "allow_non_ct"
    value: str = "True"  # what to give it, as written in Python ("True") or a placeholder ("UID")
    effect: str = ""  # what giving it does, e.g. "to override"

    def python(self) -> str:
        return f"{self.parameter}={self.value} {self.effect}".rstrip()


class LiteSegError(ValueError):
    """A problem with the user's input, weights or options, with a one-line message and, where one
    parameter fixes it, that `remedy`."""

    def __init__(self, message: str, remedy: Optional[Remedy] = None) -> None:
        self.message, self.remedy = message, remedy
        super().__init__(f"{message} ({remedy.python()})" if remedy else message)


class InvalidImageError(LiteSegError):
    """The image cannot be segmented: wrong dimension, vector pixels, empty, NaN, not CT..."""


class WeightsError(LiteSegError):
    """Bundled or user weights are missing, corrupted or do not match their model card."""


class Cancelled(Exception):
    """Raised when the caller's cancel flag was set during a long computation."""


# The remedy of every intensity check (CT in HU, grey levels 0-255).
ALLOW_NON_CT = Remedy("allow_non_ct", effect="to override")
