"""core.npy: array uploads are checked from their headers before anything is unpacked."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core.errors import DataError, TooLarge
from core.npy import read_arrays


def npz(**arrays) -> bytes:
    b = io.BytesIO()
    np.savez_compressed(b, **arrays)
    return b.getvalue()


def npy(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_reads_npy_and_npz_members():
    x = np.arange(2 * 4, dtype=np.uint8).reshape(2, 4)
    assert np.array_equal(read_arrays(npy(x), 2, 4)[""], x)
    got = read_arrays(npz(x=x, y=np.array([1, 2]), other=np.zeros(3)), 2, 4, keys=("x", "y"))
    assert set(got) == {"x", "y"} and np.array_equal(got["x"], x)


@pytest.mark.parametrize("data,err,words", [
    (npz(x=np.zeros((5, 4), np.uint8)), TooLarge, "5 rows"),
    (npz(x=np.zeros((2, 5), np.float64)), TooLarge, "more than the 8 values"),
    (npy(np.zeros((3, 4), np.uint8)), TooLarge, "3 rows"),
    (npz(x=np.array([{}, None], dtype=object)), DataError, "object (pickled)"),
    (npz(x=np.array(["ab", "c"])), DataError, "not numeric"),
    (npy(np.zeros((2, 4)))[:-8], DataError, "truncated"),
    (b"PK\x03\x04junk", DataError, "not a valid .npz"),
    (b"\x93NUMPY\x09", DataError, "not a valid .npy"),
])
def test_refusals(data, err, words):
    with pytest.raises(err, match=None) as e:
        read_arrays(data, 2, 4)
    assert words in str(e.value)
