"""Exceptions the engine raises for problems a user can fix."""


class LiteSegError(ValueError):
    """A problem with the user's input, weights or options, with a one-line message."""


class InvalidImageError(LiteSegError):
    """The image cannot be segmented: wrong dimension, vector pixels, empty, NaN, not CT..."""


class WeightsError(LiteSegError):
    """Bundled or user weights are missing, corrupted or do not match their model card."""


class Cancelled(Exception):
    """Raised when the caller's cancel flag was set during a long computation."""
