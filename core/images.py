"""Images in and out of a model: the one preprocessing path.

A model takes float32 NCHW in [-1, 1]: decode; convert to grey ('L') if it has one channel, else RGB;
resize to its (width, height) with bilinear resampling if the size differs; x = pixel / 127.5 - 1.
`ImageSpec.to_dict()` writes exactly this into the manifest, and every consumer in the project (the
service, the upload parser, the CLI, training's data pipeline and classifier) goes through the
functions below, so there is one copy of each step:

    decode_image(bytes, spec)      -> uint8 [C,H,W]       the single decode (bounds checks belong here)
    decode_images([bytes], spec)   -> float32 [N,C,H,W]   a request's images, batched PNG fast path
    prepare_array_batch(array, spec) -> float32 [N,C,H,W] a numeric upload (.npy/.npz)
    image_to_spec(PIL image, spec) -> uint8 [C,H,W]       convert + resize, for data sets' image files
    arrays_to_spec(uint8 [N,C,H,W], spec) -> uint8 [N,C,H,W] the same on a data set's arrays
    uint8_to_model / model_to_uint8                       the pixel scaling, both ways
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .errors import TooLarge
from .png import decode_png, decode_png_batch, png_header


@dataclass
class ImageSpec:
    channels: int
    height: int
    width: int
    pixel_range: tuple[float, float] = (-1.0, 1.0)

    @property
    def mode(self) -> str:
        """The Pillow mode the model's images are converted to."""
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict:
        return {
            "channels": self.channels, "height": self.height, "width": self.width,
            "layout": "NCHW", "dtype": "float32", "pixel_range": list(self.pixel_range),
            "preprocessing": {
                "description": ("decode; convert to grey ('L') if channels == 1 else RGB; resize to "
                                "(width, height) with bilinear resampling if the size differs; "
                                "x = pixel / 127.5 - 1 (uint8 0..255 -> float32 -1..1); layout NCHW"),
                "color": self.mode,
                "resize": [self.width, self.height],
                "resample": "bilinear",
                "scale": 1 / 127.5,
                "offset": -1.0,
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSpec":
        return cls(int(d["channels"]), int(d["height"]), int(d["width"]), tuple(d.get("pixel_range", (-1, 1))))


# --------------------------------------------------------------------------- pixel scaling

def _scale(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


# The scaling as a lookup table: the same float32 values as _scale, one gather instead of three temporaries.
U8_TO_MODEL = _scale(np.arange(256, dtype=np.uint8))
U8_TO_MODEL.setflags(write=False)


def uint8_to_model(x: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 -> float32 in the model range [-1, 1] (x / 127.5 - 1)."""
    x = np.asarray(x)
    return U8_TO_MODEL[x] if x.dtype == np.uint8 else _scale(x)


def model_to_uint8(x: np.ndarray) -> np.ndarray:
    """Model-range floats -> uint8 0..255 (rounded, clipping what a generator overshoots)."""
    y = np.add(x, np.float32(1.0), dtype=np.float32)
    y *= np.float32(127.5)
    np.rint(y, out=y)
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)


# --------------------------------------------------------------------------- decoding

def _to_spec(im, spec: ImageSpec) -> np.ndarray:
    """A PIL image -> uint8 [C,H,W] in the model's colour mode and size."""
    from PIL import Image

    if im.mode != spec.mode:
        im = im.convert(spec.mode)
    if im.size != (spec.width, spec.height):
        im = im.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def image_to_spec(im, spec: ImageSpec) -> np.ndarray:
    """A PIL image -> uint8 [C,H,W]: the documented conversion and resize (training's image folders use it)."""
    return _to_spec(im, spec)


def arrays_to_spec(x: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 [N,C,H,W] (C 1 or 3) -> uint8 [N, spec.channels, spec.height, spec.width] through the same
    conversion and resize as an uploaded image (Pillow, one image at a time); unchanged if it already fits."""
    from PIL import Image

    x = np.asarray(x)
    if x.ndim != 4 or x.dtype != np.uint8 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 [N,C,H,W] with C 1 or 3, got {x.dtype} {tuple(x.shape)}")
    if x.shape[1:] == (spec.channels, spec.height, spec.width):
        return x
    out = np.empty((len(x), spec.channels, spec.height, spec.width), np.uint8)
    for i, a in enumerate(x):
        im = Image.fromarray(a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0)),
                             "L" if a.shape[0] == 1 else "RGB")
        out[i] = _to_spec(im, spec)
    return out


# The most pixels an uploaded image may declare (4096 x 4096). Checked from the header, before decoding:
# a 69-byte PNG can declare 20000 x 20000, and a 140 KB one 12000 x 12000 that takes a second to decode.
MAX_PIXELS = 1 << 24


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise TooLarge(f"image of {w}x{h} pixels is over the cap of {max_pixels} pixels (4096x4096)")


def decode_image(data: bytes, spec: ImageSpec, fast: bool = True, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One encoded image (PNG/JPEG/...) -> uint8 [C,H,W] in the model's mode and size.

    The single place an uploaded image is decoded (the API, the upload parser, the CLI). ValueError
    with a readable message for empty, corrupt or unsupported data; TooLarge (a ValueError) when its
    header declares more than `max_pixels`, before any pixel is decoded. `fast=False` skips the PNG
    fast path (the reference it is tested against)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("empty image")
    try:
        size = png_header(data)
        if size is not None:
            _check_pixels(*size, max_pixels)
        im = decode_png(data) if fast else None
        if im is not None:
            return _to_spec(im, spec)
        with Image.open(io.BytesIO(data)) as f:  # reads the header only
            _check_pixels(f.size[0], f.size[1], max_pixels)  # (Pillow types size as a tuple of any length)
            f.load()
            return _to_spec(f, spec)
    except UnidentifiedImageError:  # its message names a BytesIO object
        raise ValueError("cannot decode image: not an image, or a corrupt one") from None
    except Image.DecompressionBombError as e:  # Pillow's own cap, should a format report its size late
        raise TooLarge(f"image too large: {e}") from None
    except TooLarge:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image: {e}") from e


def decode_images_u8(blobs: list[bytes], spec: ImageSpec) -> np.ndarray:
    """Encoded images -> uint8 [N,C,H,W]; ValueError naming the bad one ("image i: ...")."""
    u8 = decode_png_batch(blobs, spec.mode, spec.width, spec.height, spec.channels) if len(blobs) > 1 else None
    if u8 is not None:
        return u8
    u8 = np.empty((len(blobs), spec.channels, spec.height, spec.width), np.uint8)
    for i, b in enumerate(blobs):
        try:
            u8[i] = decode_image(b, spec)
        except ValueError as e:
            raise (TooLarge if isinstance(e, TooLarge) else ValueError)(f"image {i}: {e}") from None
    return u8


def decode_images(blobs: list[bytes], spec: ImageSpec) -> np.ndarray:
    """Encoded images -> float32 [N,C,H,W] in the model range (the documented preprocessing)."""
    return U8_TO_MODEL[decode_images_u8(blobs, spec)]


# --------------------------------------------------------------------------- numeric arrays

def prepare_array_batch(x: np.ndarray, image: ImageSpec,
                        input_range: tuple[float, float] | None = None) -> np.ndarray:
    """A numeric batch (.npy/.npz upload) -> float32 NCHW in the model's range.

    Accepts [N,H,W], [N,C,H,W] or [N,H,W,C]. `input_range` (low, high), stated by the request, maps the
    values to the model's [-1, 1] whatever their dtype; without it integers are pixels 0..255 scaled by the
    documented preprocessing, and floats are refused: 0..1, 0..255 and -1..1 all occur (core/inputs.py).
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"array dtype {x.dtype} is not numeric")
    c, h, w = image.channels, image.height, image.width
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ValueError(f"array shape {tuple(x.shape)} does not match the model input "
                         f"[N,{c},{h},{w}] (or [N,{h},{w},{c}]{', [N,%d,%d]' % (h, w) if c == 1 else ''})")
    if input_range is not None:
        from .inputs import to_model_range

        return to_model_range(x, input_range)
    if np.issubdtype(x.dtype, np.integer):
        if x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise ValueError("integer pixels must be in 0..255")
        return uint8_to_model(x.astype(np.uint8))
    from .inputs import RANGE_HINT

    raise ValueError(f"{x.dtype} array without input_range: {RANGE_HINT}")
