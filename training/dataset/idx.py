"""IDX files, the MNIST distribution format: header, dtype, gzip, every malformation named."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from core.errors import DataError


# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian
# uint32 per dimension. The data that follows is big-endian too.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into DataError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-byte-order numpy array.

    Compression is detected from the gzip magic bytes rather than the ``.gz`` extension, since
    files get renamed and decompressed by tools that do not update the name.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None

    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (bad magic bytes 0x{data[:4].hex()}; "
            "expected 0x0000 followed by a type code and a dimension count)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{path}: unsupported IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header_len})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]

    dtype = _IDX_DTYPES[type_code]
    # Python ints: no overflow however absurd the header is.
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file: header says {dims} ({expected} data bytes), "
            f"but only {found} bytes follow the header"
        )
    if found > expected:
        raise DataError(
            f"{path}: IDX file has {found - expected} unexpected trailing bytes after "
            f"the {expected} data bytes its header {dims} declares"
        )
    # frombuffer is a zero-copy view of the decompressed bytes (fast for 60k images); the
    # astype makes a writable native-byte-order copy so callers can modify the result.
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)
