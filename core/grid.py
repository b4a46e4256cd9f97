"""Image grids and image files (torch-free): one row per mode, as the papers show their samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import model_to_uint8


def make_grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """float32 [-1,1] NCHW (or uint8 NCHW) -> uint8 HxW (grey) or HxWx3 grid, `nrow` images per row."""
    x = images if images.dtype == np.uint8 else model_to_uint8(images)
    n, c, h, w = x.shape
    cols = max(1, nrow)
    rows = max(1, -(-n // cols))
    grid = np.zeros((c, rows * (h + pad) + pad, cols * (w + pad) + pad), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, y0:y0 + h, x0:x0 + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images: np.ndarray, path: str | Path, nrow: int) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, nrow)).save(path)
    return path

