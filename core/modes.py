"""Mode labels: a model's modes by index or by human label, and logits -> mode probabilities."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np


def mode_labels(n_modes: int, labels: Sequence | None = None) -> list[str]:
    """The label of every mode: the given ones when there is one per mode, else "0".."K-1"."""
    if labels and len(labels) == n_modes:
        return [str(v) for v in labels]
    return [str(k) for k in range(n_modes)]


_INDEX = re.compile(r"0|-?[1-9][0-9]*")  # an integer's one canonical spelling (ASCII digits only)


def resolve_mode(mode: int | str | None, labels: Sequence[str]) -> int | None:
    """Mode given by index or by label -> index; None stays None (draw from the priors).

    A string is a label first (exactly as listed); one that is no label but an integer written the canonical
    way (ASCII digits, no sign but "-", no leading zero, no space: "3", "-1") is an index, so the CLI's
    --mode and the API's "mode" read the same way. Anything else ("07", "+7", " 7", "7.0") is refused:
    the same index has one spelling, so "07" never means mode 7 by accident."""
    if mode is None:
        return None
    if isinstance(mode, bool):
        raise ValueError(f"mode must be an index or a label, got {mode!r}")
    n = len(labels)
    if isinstance(mode, str) and mode not in labels and _INDEX.fullmatch(mode):
        mode = int(mode)
    if isinstance(mode, int):
        if 0 <= mode < n:
            return mode
        raise ValueError(f"mode {mode} out of range 0..{n - 1}")
    if mode in labels:
        return list(labels).index(mode)
    raise ValueError(f"unknown mode {mode!r}: a label as listed {list(labels)}, or an index 0..{n - 1} written "
                     "with digits only (no leading zero, sign or space)")


def softmax(logits: np.ndarray) -> np.ndarray:
    """h2's logits -> mode probabilities (rows sum to 1), stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
