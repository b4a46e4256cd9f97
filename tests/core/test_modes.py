"""core.modes: a mode by index or label, read the same way by the CLI and the API."""

from __future__ import annotations

import numpy as np
import pytest

from core.modes import mode_labels, resolve_mode, softmax


def test_labels_first_then_integer_strings():
    digits = mode_labels(3)
    assert digits == ["0", "1", "2"] and mode_labels(2, ["cat", "dog"]) == ["cat", "dog"]
    assert mode_labels(3, ["only", "two"]) == digits  # not one per mode: indices
    assert resolve_mode(None, digits) is None
    assert resolve_mode(2, digits) == resolve_mode("2", digits) == 2
    shifted = ["1", "2", "3"]  # labels that look like other indices: the label wins
    assert resolve_mode("1", shifted) == 0 and resolve_mode(1, shifted) == 1
    assert resolve_mode("0", shifted) == 0  # no such label: the index
    for bad, msg in ((3, "out of range"), ("-1", "out of range"), ("cat", "unknown mode"), (True, "index or a label")):
        with pytest.raises(ValueError, match=msg):
            resolve_mode(bad, digits)


def test_softmax_rows_sum_to_one_for_large_logits():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])
