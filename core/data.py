"""Where data sets live: the data root, the presets' folders and class names (no loading here).

The service needs this much without the loaders (does a model's training set exist on this machine?);
the loaders themselves (IDX, .npz/.npy, image folders, subsetting) are training's (training/dataset/).
"""

from __future__ import annotations

import os
from pathlib import Path

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# name -> DataSpec keyword arguments; ``path`` is relative to the data root.
# The two-class imbalanced MNIST sets (3 vs 5, 0 vs 4) and the 5-group merges follow the
# NEMGAN paper's experiments on imbalanced modes.
PRESETS: dict[str, dict] = {
    "mnist": dict(path="mnist", class_names=MNIST_CLASSES),
    "fashion-mnist": dict(path="fashion-mnist", class_names=FASHION_MNIST_CLASSES),
    "mnist-2-50-50": dict(path="mnist", classes=[3, 5], ratios=[0.5, 0.5], class_names=MNIST_CLASSES),
    "mnist-2-70-30": dict(path="mnist", classes=[3, 5], ratios=[0.7, 0.3], class_names=MNIST_CLASSES),
    "mnist-2-90-10": dict(path="mnist", classes=[3, 5], ratios=[0.9, 0.1], class_names=MNIST_CLASSES),
    "mnist-2-04-70-30": dict(path="mnist", classes=[0, 4], ratios=[0.7, 0.3], class_names=MNIST_CLASSES),
    "mnist-2-04-90-10": dict(path="mnist", classes=[0, 4], ratios=[0.9, 0.1], class_names=MNIST_CLASSES),
    "mnist-5": dict(path="mnist", groups=[[3, 5, 8], [2], [1, 4, 7, 9], [6], [0]], class_names=MNIST_CLASSES),
    # Sandal+Sneaker+Ankle boot / Bag / T-shirt+Dress / Pullover+Coat+Shirt / Trouser
    "fmnist-5": dict(
        path="fashion-mnist", groups=[[5, 7, 9], [8], [0, 3], [2, 4, 6], [1]],
        class_names=FASHION_MNIST_CLASSES,
    ),
}
PRESETS["fmnist"] = PRESETS["fashion-mnist"]

DATA_HINT = ("the standard IDX files of MNIST / Fashion-MNIST in <data root>/mnist and <data root>/fashion-mnist "
             "(set NEMGAN_DATA_DIR; e.g. `apt-get install dataset-fashion-mnist` puts Fashion-MNIST in "
             "/usr/share/datasets/fashion-mnist)")


def default_data_root() -> Path:
    """$NEMGAN_DATA_DIR, else the workplace's shared data folder beside the repository."""
    env = os.environ.get("NEMGAN_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def resolve_path(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path:
    """Absolute or cwd-relative paths that exist win; otherwise the path is relative to the data root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return Path(data_root if data_root is not None else default_data_root()) / p


def dataset_path(name_or_path: str, data_root: str | os.PathLike | None = None) -> Path:
    """Where a preset name (its folder) or a path lives under the data root."""
    preset = PRESETS.get(str(name_or_path).lower())
    return resolve_path(preset["path"] if preset else name_or_path, data_root)
