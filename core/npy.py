""".npy / .npz uploads read safely: what an array declares is checked before anything is unpacked.

A few hundred KB of deflated zeros can declare gigabytes (an .npz is a zip). Every array upload goes
through `read_arrays`, which reads each member's .npy header (shape, dtype) and the zip's declared sizes
first, and refuses:

- object dtypes (they need pickle, which would run code on load)              -> DataError
- more rows than `max_rows`, or more elements than max_rows images could hold -> TooLarge (413)

so the memory an upload can take is bounded by what the caller could use, whatever its body says.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

from .errors import DataError, TooLarge


def _header(f) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an .npy stream's header; the stream is left after it."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        raise DataError(f"not a valid .npy array: {e}") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _check(name: str, shape: tuple[int, ...], dtype: np.dtype, max_rows: int, max_items: int) -> None:
    if dtype.hasobject:
        raise DataError(f"{name}: object (pickled) arrays are not accepted; send a numeric array")
    if dtype.kind not in "biuf":
        raise DataError(f"{name}: array dtype {dtype} is not numeric")
    if shape and shape[0] > max_rows:
        raise TooLarge(f"{name}: {shape[0]} rows (shape {shape}) is over the cap of {max_rows}")
    if math.prod(shape) > max_items:
        raise TooLarge(f"{name}: shape {shape} holds more than the {max_items} values {max_rows} images can have")


def _read_npy(f, name: str, max_rows: int, max_items: int) -> np.ndarray:
    shape, dtype = _header(f)
    _check(name, shape, dtype, max_rows, max_items)
    count = math.prod(shape)
    buf = f.read(count * dtype.itemsize)
    if len(buf) != count * dtype.itemsize:
        raise DataError(f"{name}: truncated: {len(buf)} of {count * dtype.itemsize} bytes")
    return np.frombuffer(buf, dtype, count).reshape(shape)


def read_arrays(data, max_rows: int, row_items: int, keys: tuple[str, ...] | None = None
                ) -> dict[str, np.ndarray]:
    """An .npy (-> {"": array}) or .npz (-> {member name without .npy: array}) upload: bytes or a seekable file.

    `max_rows` caps the first axis, `row_items` is what one row (image) holds at most, so no array may declare
    more than max_rows * row_items values. `keys`: read only these members of an .npz (others are ignored,
    never unpacked); a missing key is left out of the result."""
    max_items = max_rows * row_items
    if isinstance(data, (bytes, bytearray, memoryview)):
        head, src = bytes(data[:6]), io.BytesIO(data)
    else:  # a seekable binary file (an upload spooled to disk): read from it, never copied whole into memory
        src = data
        src.seek(0)
        head = src.read(6)
        src.seek(0)
    if head == b"\x93NUMPY":
        return {"": _read_npy(src, "the array", max_rows, max_items)}
    if head[:4] != b"PK\x03\x04":
        raise DataError("not an .npy or .npz file")
    try:
        zf = zipfile.ZipFile(src)
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        if not members:
            raise DataError("the .npz holds no arrays")
        out = {}
        for info in members:
            key = info.filename[:-4]
            if keys is not None and key not in keys:
                continue
            with zf.open(info) as f:  # inflates as it is read: the header first, then only what it declares
                out[key] = _read_npy(f, key, max_rows, max_items)
        return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as e:
        raise DataError(f"not a valid .npz file: {e}") from None
