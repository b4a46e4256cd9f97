"""Encoding and decoding of images and arrays on the request path (numpy + Pillow only)."""

from __future__ import annotations

import base64
import io
import math
import re
import zlib
import zipfile
from dataclasses import dataclass

import numpy as np

from training.manifest import ImageSpec, prepare_array_batch, uint8_to_model

_EPOCH = (1980, 1, 1, 0, 0, 0)

# uint8 -> model range, the documented preprocessing (training.manifest.uint8_to_model) as a lookup table:
# the same float32 values, one gather instead of three temporaries.
U8_TO_MODEL = uint8_to_model(np.arange(256, dtype=np.uint8))


def model_to_uint8(x: np.ndarray) -> np.ndarray:
    """training.manifest.model_to_uint8 (same values), with one temporary instead of four."""
    y = np.add(x, np.float32(1.0), dtype=np.float32)
    y *= np.float32(127.5)
    np.rint(y, out=y)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)


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


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# 8-bit, non-palette PNG colour types -> (Pillow mode, raw mode), as PIL.PngImagePlugin maps them.
_PNG_MODES = {0: ("L", "L"), 2: ("RGB", "RGB"), 4: ("LA", "LA"), 6: ("RGBA", "RGBA")}
# Chunks that do not change the pixels Pillow decodes; any other (tRNS, PLTE, APNG, ...) -> Pillow.
_PNG_INERT = {b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"tEXt", b"zTXt", b"iTXt",
              b"tIME", b"bKGD", b"sBIT"}
_PNG_MAX_PIXELS = 1 << 22


def _png_idat(data: bytes):
    """(width, height, colour type, zlib stream) of the common PNG (8-bit grey/RGB(A), not interlaced, only
    chunks that do not change the pixels, CRCs valid); None for anything else."""
    if data[:8] != _PNG_SIG or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, ctype, comp, filt, interlace = data[24:29]
    if depth != 8 or ctype not in _PNG_MODES or comp or filt or interlace or not 0 < w * h <= _PNG_MAX_PIXELS:
        return None
    idat, pos, n = [], 8, len(data)
    while True:
        if pos + 12 > n:
            return None
        length = int.from_bytes(data[pos:pos + 4], "big")
        cid = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n or cid not in _PNG_INERT:
            return None
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return None
        if cid == b"IDAT":
            idat.append(data[pos + 8:end - 4])
        elif cid == b"IEND":
            break
        pos = end
    if not idat:
        return None
    return w, h, ctype, idat[0] if len(idat) == 1 else b"".join(idat)


def _fast_png(data: bytes):
    """The common PNG decoded by Pillow's own zlib+unfilter decoder, without PngImagePlugin's per-chunk Python
    (most of the time of a small image): the same pixels as Image.open(...).load(); None for anything else
    (Pillow's full path then decodes it, or says why not)."""
    from PIL import Image

    info = _png_idat(data)
    if info is None:
        return None
    w, h, ctype, stream = info
    mode, rawmode = _PNG_MODES[ctype]
    try:
        return Image.frombytes(mode, (w, h), stream, "zip", rawmode)
    except (ValueError, OSError):
        return None


def _fast_png_batch(blobs: list[bytes], spec: ImageSpec) -> np.ndarray | None:
    """N PNGs already in the model's mode and size (the usual client) -> uint8 [N,C,H,W], each decoded by
    Pillow's PNG decoder straight into its rows of one image. None when any is not like that."""
    from PIL import Image

    mode = "L" if spec.channels == 1 else "RGB"
    w, h, n = spec.width, spec.height, len(blobs)
    streams = []
    for data in blobs:
        info = _png_idat(data)
        if info is None or info[:2] != (w, h) or _PNG_MODES[info[2]][0] != mode:
            return None
        streams.append(info[3])
    try:
        big = Image.new(mode, (w, h * n))
        for i, stream in enumerate(streams):
            dec = Image._getdecoder(mode, "zip", (mode,))
            dec.setimage(big.im, (0, i * h, w, (i + 1) * h))
            done, err = dec.decode(stream)
            if done >= 0 or err != 0:
                return None  # truncated / corrupt: the per-image path says which and why
        a = np.asarray(big, dtype=np.uint8)
    except (AttributeError, TypeError, ValueError, OSError):  # a Pillow without these internals
        return None
    return a.reshape(n, h, w, spec.channels).transpose(0, 3, 1, 2)


def _to_spec(im, spec: ImageSpec) -> np.ndarray:
    from PIL import Image

    mode = "L" if spec.channels == 1 else "RGB"
    if im.mode != mode:
        im = im.convert(mode)
    if im.size != (spec.width, spec.height):
        im = im.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _decode_u8(data: bytes, spec: ImageSpec) -> np.ndarray:
    """One encoded image -> uint8 [H,W] or [H,W,C]: training.manifest.preprocess_image_bytes up to (not
    including) the float conversion, which decode_images does once for the whole batch."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("empty image")
    try:
        im = _fast_png(data)
        if im is not None:
            return _to_spec(im, spec)
        with Image.open(io.BytesIO(data)) as f:
            f.load()
            return _to_spec(f, spec)
    except UnidentifiedImageError:  # its message names a BytesIO object
        raise ValueError("cannot decode image: not an image, or a corrupt one") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image: {e}") from e


def decode_images(blobs: list[bytes], spec: ImageSpec) -> np.ndarray:
    """Encoded images -> float32 [N,C,H,W] (the documented preprocessing); ValueError naming the bad one."""
    u8 = _fast_png_batch(blobs, spec) if len(blobs) > 1 else None
    if u8 is not None:
        return U8_TO_MODEL[u8]
    u8 = np.empty((len(blobs), spec.channels, spec.height, spec.width), np.uint8)
    for i, b in enumerate(blobs):
        try:
            a = _decode_u8(b, spec)
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
        u8[i] = a if a.ndim == 2 else a.transpose(2, 0, 1)
    return U8_TO_MODEL[u8]


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


def load_array(data: bytes, spec: ImageSpec, key: str = "x") -> np.ndarray:
    """A .npy or .npz upload -> float32 [N,C,H,W] in model range; ValueError when unusable."""
    if not data:
        raise ValueError("empty array upload")
    arr = _fast_npy(data)
    if arr is not None:
        c, h, w = spec.channels, spec.height, spec.width
        if arr.dtype == np.uint8 and (arr.shape[1:] == (c, h, w) or (c == 1 and arr.shape[1:] == (h, w))):
            return U8_TO_MODEL[arr].reshape(len(arr), c, h, w)  # the common upload: uint8 images
        return np.ascontiguousarray(prepare_array_batch(arr, spec), dtype=np.float32)
    try:
        bio = io.BytesIO(data)
        if data[:4] == b"PK\x03\x04":
            with np.load(bio, allow_pickle=False) as f:
                names = list(f.keys())
                if not names:
                    raise ValueError("npz holds no arrays")
                arr = f[key] if key in names else f[names[0]]
        else:
            arr = np.load(bio, allow_pickle=False)
    except ValueError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, pickle refusal ...
        raise ValueError(f"cannot read .npy/.npz data: {e}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError("upload is not an array")
    return np.ascontiguousarray(prepare_array_batch(arr, spec), dtype=np.float32)


# --------------------------------------------------------------------------- multipart/form-data


_PARAM = re.compile(rb';\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"([^"\\]*)"|([^";\s]*))\s*')


def _options_header(value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """`form-data; name="files"; filename="a.png"` -> (b"form-data", {b"name": ..., b"filename": ...}).

    The plain forms browsers and HTTP clients send, by one regex; anything else (escapes, RFC 2231
    `filename*=`, odd spacing) goes to python-multipart's parser, which Starlette uses."""
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
    return head.strip().lower(), params


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
            raise ValueError(f"too many parts in the multipart body (max {max_parts})")
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
