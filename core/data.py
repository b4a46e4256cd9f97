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

# Data-set presets: name -> DataSpec keyword arguments; ``path`` is relative to the data root. (The training
# recipes are another table: training/config.py PRESETS.)
# The two-class imbalanced MNIST sets (3 vs 5, 0 vs 4) and the 5-group merges follow the
# NEMGAN paper's experiments on imbalanced modes.
DATASETS: dict[str, dict] = {
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
DATASETS["fmnist"] = DATASETS["fashion-mnist"]

# ---- colour and other sizes (issue 16). Formats: training/dataset/formats.py and colored.py. CIFAR-10, STL-10 and
# CelebA are not on this machine: put their distribution folders under the data root (cifar-10-batches-bin/,
# stl10_binary/, celeba/ with img_align_celeba/ + list_attr_celeba.txt [+ list_eval_partition.txt]).
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
DATASETS.update({
    # MNIST padded to 32x32, digit and background in random HSV colours independent of the digit (RGB).
    "colored-mnist": dict(path="mnist", format="colored-mnist", class_names=MNIST_CLASSES),
    "cifar10": dict(path="cifar-10-batches-bin", format="cifar10", class_names=CIFAR10_CLASSES),
    # 000: CIFAR-10 airplane vs frog at 30:70.
    "cifar10-airplane-frog-30-70": dict(path="cifar-10-batches-bin", format="cifar10", classes=[0, 6],
                                        ratios=[0.3, 0.7], class_names=CIFAR10_CLASSES),
    "stl10": dict(path="stl10_binary", format="stl10", class_names=STL10_CLASSES),
    # 000/001: CelebA attribute discovery. Labels: 0 = without the attribute, 1 = with it. Glasses 7:93 is
    # CelebA's own frequency (6.5%); smile is subsampled to 70:30 smiling:not (CelebA is ~48% smiling).
    "celeba-eyeglasses": dict(path="celeba", format="celeba", attribute="Eyeglasses", ratios=[0.93, 0.07]),
    "celeba-smiling": dict(path="celeba", format="celeba", attribute="Smiling", ratios=[0.3, 0.7]),
})

PRESETS = DATASETS  # the old name, still importable

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
    preset = DATASETS.get(str(name_or_path).lower())
    return resolve_path(preset["path"] if preset else name_or_path, data_root)
