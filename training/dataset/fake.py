"""Fake data for --dry-run and tests: a real mode structure without any files."""

from __future__ import annotations

import numpy as np

from core.errors import DataError

from .spec import ImageDataset
from .subsets import is_int


def fake_dataset(n: int = 256, n_classes: int = 10, shape=(1, 28, 28), seed: int = 0) -> ImageDataset:
    """Random Gaussian blobs whose position (and, with colour, hue) depends on the class.

    The structure is simple but real: each class is a distinct mode, so a smoke-test GAN and the
    mode metrics have something to find without any files on disk.
    """
    if not is_int(n) or n < 1 or not is_int(n_classes) or n_classes < 1:
        raise DataError(f"fake_dataset: n and n_classes must be positive integers, got {n}, {n_classes}")
    if len(shape) != 3 or any(not is_int(s) or s < 1 for s in shape):
        raise DataError(f"fake_dataset: shape must be (C, H, W) positive integers, got {shape}")
    c, h, w = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)  # balanced classes

    # Class k's blob centre sits at angle 2*pi*k/K on a ring around the image centre.
    angle = 2 * np.pi * y / n_classes
    cy = h / 2 + 0.25 * h * np.sin(angle) + rng.normal(0, 0.03 * h, n)
    cx = w / 2 + 0.25 * w * np.cos(angle) + rng.normal(0, 0.03 * w, n)
    sigma = 0.12 * min(h, w) * rng.uniform(0.8, 1.2, n)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.exp(
        -((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
        / (2 * sigma[:, None, None] ** 2)
    )  # [n, H, W]
    # Per-channel weights vary with the class, so colour also separates classes when C > 1.
    chan = np.arange(c)
    weight = 0.5 + 0.5 * np.cos(angle[:, None] + 2 * np.pi * chan[None, :] / max(c, 1)) if c > 1 \
        else np.ones((n, 1))
    img = blob[:, None] * weight[:, :, None, None] + rng.normal(0, 0.03, (n, c, h, w))
    x = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return ImageDataset(x=x, y=y, class_names=[str(k) for k in range(n_classes)], name="fake")
