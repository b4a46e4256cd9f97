"""A small example image folder to try `nemgan train --dataset folder:PATH` on, made here (nothing downloaded).

    python -m training.dataset.example /tmp/shapes            # 600 images: flat folder, unlabeled
    python -m training.dataset.example /tmp/shapes --labeled  # one sub-folder per shape instead

Each image is a filled disc, square or triangle (the modes to find) in a random colour on a random background,
at a random position and scale, saved as PNG or JPEG at a random size between 40 and 120 pixels: the kinds of
variation (colour, size, format) a folder of your own images has and the model has to see past.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHAPES = ("disc", "square", "triangle")


def _colour(rng, dark: bool) -> tuple[int, int, int]:
    import colorsys

    v = rng.uniform(0.05, 0.35) if dark else rng.uniform(0.7, 1.0)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), v))


def draw(shape: str, size: int, rng: np.random.Generator):
    """One PIL image of `shape`, size x size, bright shape on a dark background or the other way round."""
    from PIL import Image, ImageDraw

    light_on_dark = rng.random() < 0.5
    im = Image.new("RGB", (size, size), _colour(rng, dark=light_on_dark))
    d = ImageDraw.Draw(im)
    r = size * rng.uniform(0.22, 0.38)
    cx, cy = (size / 2 + rng.uniform(-0.1, 0.1) * size for _ in range(2))
    fill = _colour(rng, dark=not light_on_dark)
    if shape == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return im


def write_example_folder(path: str | Path, n: int = 600, labeled: bool = False, seed: int = 0) -> Path:
    """Write n images (an equal share of each shape) to `path`; returns it."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        folder = path / shape if labeled else path
        folder.mkdir(parents=True, exist_ok=True)
        im = draw(shape, int(rng.integers(40, 121)), rng)
        if rng.random() < 0.5:
            im.save(folder / f"{i:05d}.png")
        else:
            im.save(folder / f"{i:05d}.jpg", quality=90)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--labeled", action="store_true", help="one sub-folder per shape (labels) instead of a flat folder")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = write_example_folder(a.path, a.n, a.labeled, a.seed)
    print(f"wrote {a.n} images to {out}")


if __name__ == "__main__":
    main()
