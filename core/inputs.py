"""What a model expects as input, said once: the manifest's `input` section and the accepted value ranges.

Images (PNG/JPEG) and integer arrays are unambiguous: pixels 0..255. A float array is not: 0..1 (torch,
keras), 0..255 and the model's own -1..1 all occur, and a wrong guess gives confident nonsense (a 0..1
digit read as -1..1 is a dark grey smudge). So a float upload must state its range (`input_range`), and
the manifest and the API say what the model was trained on, including the polarity (light strokes on a
dark background for MNIST-like data), measured from the training images at export.
"""

from __future__ import annotations

import numpy as np

# input_range values a request may state -> (low, high) of its pixel values.
RANGES: dict[str, tuple[float, float]] = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}
RANGE_HINT = ("float arrays are ambiguous: state their pixel range with input_range=0-1, 0-255 or -1-1 "
              "(query or form field), or send uint8 pixels 0..255 (or PNG/JPEG images)")
_TOL = 1e-3


def parse_range(value: str | None) -> tuple[float, float] | None:
    """`input_range` as a request gives it -> (low, high); None when absent; ValueError when unknown."""
    if value is None or str(value).strip() == "":
        return None
    v = str(value).strip().replace(" ", "").replace("..", "-").replace(",", "-")
    if v in RANGES:
        return RANGES[v]
    raise ValueError(f"input_range must be one of {sorted(RANGES)}, got {value!r}")


def to_model_range(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Pixels in [low, high] -> float32 in the model's [-1, 1]; ValueError for values outside the range."""
    lo, hi = value_range
    x = np.asarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("array contains NaN or infinite values")
    span = hi - lo
    if x.size and (x.min() < lo - _TOL * span or x.max() > hi + _TOL * span):
        raise ValueError(f"pixel values span {float(x.min()):.4g}..{float(x.max()):.4g}, outside the stated "
                         f"input_range {lo:g}..{hi:g}")
    y = (x - np.float32(lo)) * np.float32(2.0 / span) - np.float32(1.0)
    return np.clip(y, -1.0, 1.0, out=y)


def polarity(x_uint8: np.ndarray) -> str:
    """'white-on-black' when the images' border (their background) is dark, 'black-on-white' when it is
    light, else 'mixed': measured, so a model trained on inverted data says so."""
    x = np.asarray(x_uint8)
    border = np.concatenate([x[..., 0, :].ravel(), x[..., -1, :].ravel(), x[..., :, 0].ravel(), x[..., :, -1].ravel()])
    bg = float(np.median(border)) if border.size else 0.0
    return "white-on-black" if bg < 64 else "black-on-white" if bg > 191 else "mixed"


def declare(x_uint8_train: np.ndarray, channels: int, height: int, width: int) -> dict:
    """The manifest's `input` section, from the training images (uint8 [N,C,H,W])."""
    return {
        "dtype": "uint8", "range": [0, 255], "channels": int(channels), "height": int(height), "width": int(width),
        "polarity": polarity(x_uint8_train),
        "float_ranges": sorted(RANGES),
        "note": ("PNG/JPEG images or uint8 arrays: pixels 0..255, resized and converted as `image.preprocessing` "
                 "says. " + RANGE_HINT + "."),
    }


def validate_section(section) -> None:
    from .errors import ManifestError

    if not isinstance(section, dict):
        raise ManifestError("manifest input must be an object")
    missing = [k for k in ("dtype", "range", "polarity", "channels", "height", "width") if k not in section]
    if missing:
        raise ManifestError(f"manifest input: missing keys {missing}")
    if section["polarity"] not in ("white-on-black", "black-on-white", "mixed"):
        raise ManifestError(f"manifest input.polarity must be white-on-black, black-on-white or mixed, "
                            f"got {section['polarity']!r}")
    r = section["range"]
    if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r) and r[0] < r[1]):
        raise ManifestError(f"manifest input.range must be [low, high], got {r!r}")
