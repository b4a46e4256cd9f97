"""Image arrays: the layouts people actually store, normalised to uint8 [N, C, H, W]; labels to int64 [N]."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import DataError


def as_nchw_uint8(x: np.ndarray, source: Any) -> np.ndarray:
    """Accept [N,H,W], [N,H,W,C] or [N,C,H,W]; uint8, other integers in 0..255, or floats in [0,1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        # The channel axis is the small one (1 grey, 3 RGB, 4 RGBA); images are bigger than 4 px.
        first_small, last_small = x.shape[1] <= 4, x.shape[3] <= 4
        if first_small and not last_small:
            pass  # already channels-first
        elif last_small and not first_small:
            x = np.transpose(x, (0, 3, 1, 2))
        else:
            raise DataError(
                f"{source}: cannot tell the channel axis of image array with shape {x.shape} "
                "(expected [N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1..4)"
            )
    else:
        raise DataError(
            f"{source}: image array must have 3 or 4 dimensions "
            f"([N,H,W], [N,H,W,C] or [N,C,H,W]), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: contains no images")

    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        # Floats are taken to be the usual [0, 1] scaling; anything else (e.g. [-1, 1] or
        # 0..255 stored as float) would be silently mangled, so refuse it.
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{source}: float images must lie in [0, 1], found values in [{lo:g}, {hi:g}]"
            )
        x = np.rint(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        lo, hi = int(np.min(x)), int(np.max(x))
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: integer images must lie in 0..255, found {lo}..{hi}")
        x = x.astype(np.uint8)
    else:
        raise DataError(f"{source}: unsupported image dtype {x.dtype}")
    return np.ascontiguousarray(x)


def as_labels(y: Any, n: int, source: Any) -> np.ndarray:
    """Labels as int64 [N], non-negative, integer-valued."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{source}: labels must have shape [{n}] to match the images, got {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DataError(f"{source}: labels must be whole numbers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: unsupported label dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, found {int(y.min())}")
    return y


def numeric_names(y: np.ndarray | None) -> list[str]:
    """Class names for integer-labelled sources: "0".."max"."""
    if y is None or len(y) == 0:
        return []
    return [str(i) for i in range(int(y.max()) + 1)]
