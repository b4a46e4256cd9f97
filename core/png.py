"""The fast path for the common PNG: the same pixels as Pillow's full decoder, less Python per image.

Most of the time of decoding a small PNG goes to PngImagePlugin's per-chunk Python, not to zlib. For
the PNGs clients usually send (8-bit grey/RGB(A), not interlaced, only chunks that do not change the
pixels, valid CRCs) we walk the chunks here and hand the zlib stream to Pillow's own "zip" decoder.
Anything else returns None and goes through `Image.open` (core.images.decode_image), which decodes
it or says why not.

`decode_png_batch` decodes N same-size PNGs straight into the rows of one image through
`PIL.Image._getdecoder`, a private Pillow API. It is isolated here behind a fallback: a Pillow without
it (or with a changed signature) makes it return None, and the per-image path decodes the batch;
tests/core/test_images.py checks both give the same pixels.
"""

from __future__ import annotations

import zlib

import numpy as np

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# 8-bit, non-palette PNG colour types -> (Pillow mode, raw mode), as PIL.PngImagePlugin maps them.
PNG_MODES = {0: ("L", "L"), 2: ("RGB", "RGB"), 4: ("LA", "LA"), 6: ("RGBA", "RGBA")}
# Chunks that do not change the pixels Pillow decodes; any other (tRNS, PLTE, APNG, ...) -> Pillow.
_PNG_INERT = {b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"tEXt", b"zTXt", b"iTXt",
              b"tIME", b"bKGD", b"sBIT"}
_PNG_MAX_PIXELS = 1 << 22


def png_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG's IHDR, read without decoding; None if not a PNG."""
    if data[:8] != _PNG_SIG or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def png_idat(data: bytes):
    """(width, height, colour type, zlib stream) of the common PNG (8-bit grey/RGB(A), not interlaced, only
    chunks that do not change the pixels, CRCs valid); None for anything else."""
    if data[:8] != _PNG_SIG or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, ctype, comp, filt, interlace = data[24:29]
    if depth != 8 or ctype not in PNG_MODES or comp or filt or interlace or not 0 < w * h <= _PNG_MAX_PIXELS:
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


def decode_png(data: bytes):
    """The common PNG as a PIL image, decoded by Pillow's zlib+unfilter decoder without PngImagePlugin;
    None for anything else."""
    from PIL import Image

    info = png_idat(data)
    if info is None:
        return None
    w, h, ctype, stream = info
    mode, rawmode = PNG_MODES[ctype]
    try:
        return Image.frombytes(mode, (w, h), stream, "zip", rawmode)
    except (ValueError, OSError):
        return None


def _pillow_getdecoder():
    """Pillow's private decoder factory, or None where this Pillow has none (the one private-API use)."""
    from PIL import Image

    return getattr(Image, "_getdecoder", None)


def decode_png_batch(blobs: list[bytes], mode: str, width: int, height: int, channels: int) -> np.ndarray | None:
    """N PNGs already in `mode` and (width, height) -> uint8 [N,C,H,W], each decoded by Pillow's PNG decoder
    straight into its rows of one image. None when any is not like that, or this Pillow lacks the internals."""
    from PIL import Image

    getdecoder = _pillow_getdecoder()
    if getdecoder is None:
        return None
    n = len(blobs)
    streams = []
    for data in blobs:
        info = png_idat(data)
        if info is None or info[:2] != (width, height) or PNG_MODES[info[2]][0] != mode:
            return None
        streams.append(info[3])
    try:
        big = Image.new(mode, (width, height * n))
        for i, stream in enumerate(streams):
            dec = getdecoder(mode, "zip", (mode,))
            dec.setimage(big.im, (0, i * height, width, (i + 1) * height))
            done, err = dec.decode(stream)
            if done >= 0 or err != 0:
                return None  # truncated / corrupt: the per-image path says which and why
        a = np.asarray(big, dtype=np.uint8)
    except (AttributeError, TypeError, ValueError, OSError):  # a Pillow whose internals changed
        return None
    return a.reshape(n, height, width, channels).transpose(0, 3, 1, 2)
