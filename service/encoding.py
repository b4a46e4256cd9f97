"""Encoding of responses (PNG, zip, npz), reading of array uploads and multipart bodies on the request path.

numpy + Pillow only. Images are decoded by core.images (the one preprocessing path)."""

from __future__ import annotations

import base64
import io
import math
import re
import zipfile
from dataclasses import dataclass

import numpy as np

from core.images import U8_TO_MODEL, ImageSpec, prepare_array_batch
from core.errors import TooLarge
from core.npy import read_arrays

_EPOCH = (1980, 1, 1, 0, 0, 0)


def png_bytes(img_chw_uint8: np.ndarray, compress_level: int = 1) -> bytes:
    from PIL import Image

    a = img_chw_uint8[0] if img_chw_uint8.shape[0] == 1 else img_chw_uint8.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def b64png(img_chw_uint8: np.ndarray) -> str:
    return base64.b64encode(png_bytes(img_chw_uint8)).decode("ascii")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """np.savez, but deterministic (fixed zip timestamps) so the same seed gives identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def zip_of_pngs(images: np.ndarray, modes: np.ndarray, labels: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, (img, m) in enumerate(zip(images, modes)):
            info = zipfile.ZipInfo(f"{i:05d}_mode{int(m)}.png", date_time=_EPOCH)
            zf.writestr(info, png_bytes(img))
    return buf.getvalue()


# .npy v1-3 headers as np.save writes them; anything else goes through np.load.
_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=]?[uif][1248])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), *\} *\n?")


def _fast_npy(data: bytes) -> np.ndarray | None:
    """A plain numeric C-order .npy as a zero-copy view of the body (None: let np.load handle it)."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        return None
    if data[6] == 1:
        off = 10 + int.from_bytes(data[8:10], "little")
        header = data[10:off]
    elif data[6] in (2, 3):
        off = 12 + int.from_bytes(data[8:12], "little")
        header = data[12:off]
    else:
        return None
    m = _NPY_HEADER.fullmatch(header)
    if m is None:
        return None
    dtype = np.dtype(m.group(1).decode())
    try:
        shape = tuple(int(v) for v in m.group(2).split(b",") if v.strip())
    except ValueError:
        return None
    count = math.prod(shape)
    if len(data) - off < count * dtype.itemsize:
        return None  # truncated: np.load raises the readable error
    return np.frombuffer(data, dtype, count, offset=off).reshape(shape)


def load_array(data: bytes, spec: ImageSpec, key: str = "x", input_range: tuple[float, float] | None = None,
               max_rows: int = 1 << 16) -> np.ndarray:
    """A .npy or .npz upload -> float32 [N,C,H,W] in model range; ValueError when unusable, TooLarge (413)
    when it declares more than `max_rows` images' worth of values (checked before unpacking anything).

    `input_range`: the (low, high) the request states for its values (required for float arrays)."""
    if not data:
        raise ValueError("empty array upload")
    c, h, w = spec.channels, spec.height, spec.width
    arr = _fast_npy(data)
    if arr is not None:  # a view of the body: nothing unpacked yet
        if arr.ndim and len(arr) > max_rows:
            raise TooLarge(f"too many images: {len(arr)} > cap {max_rows}")
        if arr.dtype == np.uint8 and input_range is None and (arr.shape[1:] == (c, h, w) or (c == 1 and arr.shape[1:] == (h, w))):
            return U8_TO_MODEL[arr].reshape(len(arr), c, h, w)  # the common upload: uint8 images
        return np.ascontiguousarray(prepare_array_batch(arr, spec, input_range), dtype=np.float32)
    arrays = read_arrays(data, max_rows, c * h * w)  # shapes and sizes checked from the headers first
    arr = arrays[key] if key in arrays else next(iter(arrays.values()))  # .npy: its one array
    return np.ascontiguousarray(prepare_array_batch(arr, spec, input_range), dtype=np.float32)


# --------------------------------------------------------------------------- multipart/form-data


_PARAM = re.compile(rb';\s*([A-Za-z0-9_.-]+\*?)\s*=\s*(?:"([^"\\]*)"|([^";\s]*))\s*')
_EXT_VALUE = re.compile(rb"([A-Za-z0-9_.-]*)'[A-Za-z0-9-]*'(.*)", re.DOTALL)  # RFC 5987: charset'lang'%XX..


def _ext_value(raw: bytes) -> bytes | None:
    """An RFC 2231/5987 extended value (`UTF-8''%E2%82%AC%20rates.png`) -> its text as UTF-8 bytes; None when
    it is not one (unknown charset, bad escapes)."""
    m = _EXT_VALUE.fullmatch(raw)
    if m is None:
        return None
    from urllib.parse import unquote_to_bytes

    charset = (m.group(1) or b"utf-8").decode("ascii").lower()
    if charset not in ("utf-8", "iso-8859-1", "us-ascii"):
        return None
    try:
        return unquote_to_bytes(m.group(2)).decode(charset).encode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return None


def _options_header(value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """`form-data; name="files"; filename="a.png"` -> (b"form-data", {b"name": ..., b"filename": ...}).

    The plain forms browsers and HTTP clients send, by one regex, including RFC 2231/5987 extended parameters
    (`filename*=UTF-8''%E2%82%AC.png`, which win over the plain `filename`, RFC 6266 sec. 4.3); anything
    else (escapes, odd spacing) goes to python-multipart's parser, which Starlette uses."""
    head, sep, rest = value.partition(b";")
    params, pos = {}, len(head)
    if sep:
        for m in _PARAM.finditer(value, pos):
            if m.start() != pos:
                break
            params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
            pos = m.end()
    if pos != len(value):
        from python_multipart.multipart import parse_options_header

        return parse_options_header(value)
    for key in [k for k in params if k.endswith(b"*")]:
        raw = params.pop(key)
        decoded = _ext_value(raw)
        if decoded is not None:
            params[key[:-1]] = decoded
        else:  # not decodable: still there (a part with a filename* is a file), under its raw spelling
            params.setdefault(key[:-1], raw)
    return head.strip().lower(), params


# The part headers HTTP clients and browsers send (curl, requests, httpx, fetch): one match instead of the
# per-line loop below, which handles everything else (other order, escapes, extra headers).
_CANONICAL_PART = re.compile(rb'content-disposition: ?form-data; name="([^"\\\r\n]*)"(?:; filename="([^"\\\r\n]*)")?'
                             rb'(?:\r\ncontent-type: ?([^\r\n;]*))?', re.I)


@dataclass
class Part:
    name: str
    filename: str | None  # None for a plain form field
    content_type: str
    data: bytes

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def parse_multipart(body: bytes, content_type: str, max_parts: int = 1000) -> list[Part]:
    """A whole multipart/form-data body (already read, size-capped) -> its parts, in order.

    RFC 7578 / 2046: parts are separated by CRLF "--boundary"; a part is a file when its
    Content-Disposition has a filename. ValueError for anything malformed."""
    _, params = _options_header(content_type.encode("latin-1") if isinstance(content_type, str) else content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("multipart body without a boundary in its content type")
    delim = b"--" + boundary
    sep = b"\r\n" + delim
    start = body.find(delim)
    if start < 0 or (start > 0 and body[start - 2:start] != b"\r\n"):
        raise ValueError("malformed multipart body: no opening boundary")
    pos = start + len(delim)
    parts: list[Part] = []
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise ValueError("malformed multipart body: bad boundary line")
        if len(parts) >= max_parts:
            raise TooLarge(f"too many parts in the multipart body (max {max_parts})")
        hstart = eol + 2
        if body[hstart:hstart + 2] == b"\r\n":
            headers, cstart = b"", hstart + 2
        else:
            hend = body.find(b"\r\n\r\n", hstart)
            if hend < 0:
                raise ValueError("malformed multipart body: unterminated part headers")
            headers, cstart = body[hstart:hend], hend + 4
        end = body.find(sep, cstart)
        if end < 0:
            raise ValueError("malformed multipart body: missing closing boundary")
        m = _CANONICAL_PART.fullmatch(headers)
        if m is not None:
            name, filename, ctype = m.groups()
            parts.append(Part(name.decode("utf-8", "replace"),
                              None if filename is None else filename.decode("utf-8", "replace"),
                              "text/plain" if ctype is None else ctype.strip().decode("latin-1"), body[cstart:end]))
            pos = end + len(sep)
            continue
        disp, ctype = None, "text/plain"
        for line in headers.split(b"\r\n"):
            k, colon, v = line.partition(b":")
            if not colon:
                raise ValueError("malformed multipart body: bad part header")
            k = k.strip().lower()
            if k == b"content-disposition":
                disp = _options_header(v.strip())
            elif k == b"content-type":
                ctype = v.strip().decode("latin-1")
        if disp is None or disp[0] != b"form-data" or b"name" not in disp[1]:
            raise ValueError("malformed multipart body: part without Content-Disposition: form-data; name=...")
        opts = disp[1]
        filename = opts.get(b"filename")
        parts.append(Part(opts[b"name"].decode("utf-8", "replace"),
                          None if filename is None else filename.decode("utf-8", "replace"), ctype,
                          body[cstart:end]))
        pos = end + len(sep)
