"""Colored-MNIST: MNIST digits in random colours, a benchmark whose nuisance factor (colour) says nothing of the class.

Derived deterministically from the MNIST IDX files (issue 16, section 2): pad each 28x28 digit to 32x32; draw per
image, independently of the digit, a foreground colour HSV(h ~ U[0,1), s ~ U[0.6,1], v ~ U[0.7,1]) and a background
colour HSV(h ~ U[0,1), s ~ U[0.6,1], v ~ U[0,0.35]); pixel = x * fg + (1 - x) * bg with x = digit / 255; RGB uint8.

The colours come from a numpy generator seeded by the split alone (COLOR_SEEDS), drawn one row of six numbers per
image in file order, so image i's colour depends on nothing but (split, i): not on the digit, the subset or the
number of images read. :func:`colored_mnist_colors` and :func:`colored_mnist_background_hue` give the colours without
building the images; the data set carries them too (``ImageDataset.extras["bg_hue"]``, ``["fg_hue"]``), so a
clustering can be scored against the background hue (:func:`hue_bins`): NMI(modes, hue bins) near 0 means the
modes ignore colour.
"""

from __future__ import annotations

import numpy as np

from core.errors import DataError

PAD = 2  # 28 + 2 * 2 = 32
COLOR_SEEDS = {"train": 20160, "test": 20161}  # one fixed generator per split
SPLIT_SIZES = {"train": 60000, "test": 10000}  # MNIST's
# (low, high) of U[low, high) for h, s, v of the foreground then the background.
FG_HSV = ((0.0, 1.0), (0.6, 1.0), (0.7, 1.0))
BG_HSV = ((0.0, 1.0), (0.6, 1.0), (0.0, 0.35))


def colored_mnist_colors(n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(fg, bg) HSV float64 [n, 3] of the first n images of ``split``: the same rows whatever n is."""
    if split not in COLOR_SEEDS:
        raise DataError(f"colored-mnist has splits {sorted(COLOR_SEEDS)}, not {split!r}")
    u = np.random.default_rng(COLOR_SEEDS[split]).random((int(n), 6))  # row i: image i, filled row by row
    lo = np.array([r[0] for r in FG_HSV + BG_HSV])
    hi = np.array([r[1] for r in FG_HSV + BG_HSV])
    hsv = lo + u * (hi - lo)
    return hsv[:, :3], hsv[:, 3:]


def colored_mnist_background_hue(split: str, n: int | None = None) -> np.ndarray:
    """The background hue in [0, 1) of every image of ``split`` (n: MNIST's split size), in file order."""
    return colored_mnist_colors(SPLIT_SIZES.get(split, 0) if n is None else n, split)[1][:, 0]


def hue_bins(hue: np.ndarray, k: int = 10) -> np.ndarray:
    """Hue in [0, 1) -> k equal bins 0..k-1 (what the modes are scored against)."""
    return np.minimum((np.asarray(hue) * k).astype(np.int64), k - 1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """float [N, 3] HSV in [0, 1] -> RGB in [0, 1] (colorsys's formula, vectorised)."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], 1)


def colorize(x: np.ndarray, split: str, chunk: int = 5000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """MNIST uint8 [N,1,28,28] (file order) -> (uint8 [N,3,32,32], extras {fg_hue, bg_hue, fg_hsv, bg_hsv})."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1 or x.dtype != np.uint8:
        raise DataError(f"colored-mnist needs grey uint8 [N,1,H,W] digits, got {x.dtype} {x.shape}")
    n = len(x)
    fg_hsv, bg_hsv = colored_mnist_colors(n, split)
    fg, bg = hsv_to_rgb(fg_hsv).astype(np.float32), hsv_to_rgb(bg_hsv).astype(np.float32)
    h, w = x.shape[2] + 2 * PAD, x.shape[3] + 2 * PAD
    out = np.empty((n, 3, h, w), np.uint8)
    for i in range(0, n, chunk):  # float32 in chunks: the whole train split at once would take ~750 MB
        a = np.pad(x[i:i + chunk, 0], ((0, 0), (PAD, PAD), (PAD, PAD))).astype(np.float32) / np.float32(255)
        a = a[:, None]  # [n,1,H,W]
        f, b = fg[i:i + chunk, :, None, None], bg[i:i + chunk, :, None, None]
        out[i:i + chunk] = np.clip(np.rint((a * f + (1 - a) * b) * 255), 0, 255).astype(np.uint8)
    extras = {"fg_hue": fg_hsv[:, 0].astype(np.float32), "bg_hue": bg_hsv[:, 0].astype(np.float32),
              "fg_hsv": fg_hsv.astype(np.float32), "bg_hsv": bg_hsv.astype(np.float32)}
    return out, extras
