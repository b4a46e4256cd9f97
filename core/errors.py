"""The errors of the shared contract (ValueErrors, so callers may catch either)."""

from __future__ import annotations


class ManifestError(ValueError):
    """A model directory or manifest that does not follow the contract."""


class DataError(ValueError):
    """Missing, malformed or unsupported input data (the message names the file and the problem)."""


class TooLarge(DataError):
    """Input whose declared size (array shape, zip entry, image dimensions) is over a cap: HTTP 413."""
