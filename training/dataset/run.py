"""The data of one training run: its data set (`load_training_data`) and how the run splits it (`run_split`).

Torch-free and free of the training loop: the Trainer calls these, and so do the benchmarks and evaluation
code that need the exact images a run trained on, held out or saw with labels, without building a Trainer
(which would make networks, optimisers and the run folder). `cfg` is a TrainConfig; only the fields named
here are read, so this package never imports training/config.py (which imports torch).

The split, in order (changing it changes every run, so tests/training/test_run_split.py pins it):
  1. a permutation of the data set by `seed`; the first min(val_samples, N // 5) images are the validation
     slice (labels used only for model selection and logging), the rest train;
  2. with semi-supervision, the labeled subset of the training images: exactly `labeled_per_class` of every
     class, else `labeled_count` images, else a `labeled_fraction` of them (subsets.labeled_indices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .fake import fake_dataset
from .load import load_dataset
from .spec import DataSpec, ImageDataset
from .subsets import labeled_indices


def load_training_data(cfg: Any, split: str = "train") -> ImageDataset:
    """The configured data set (preset or path, with subset/ratio/group overrides)."""
    if cfg.dry_run:
        side = cfg.image_size or 28
        return fake_dataset(n=256 if split == "train" else 128, n_classes=cfg.n_modes or 10,
                            shape=(cfg.image_channels or 1, side, side), seed=cfg.seed)
    shape = dict(size=cfg.image_size or None, channels=cfg.image_channels or None)  # the model's input (0: the data's)
    overrides = {k: getattr(cfg, k) for k in ("classes", "ratios", "groups", "max_samples") if getattr(cfg, k)}
    if not overrides:
        return load_dataset(cfg.dataset, split=split, data_root=cfg.data_root, **shape)
    from .load import spec_kwargs  # a preset, FORMAT:PATH (folder:PATH, celeba:ATTR, ...) or a path

    base = spec_kwargs(cfg.dataset)
    base.update(overrides)
    base["split"] = split
    base["seed"] = cfg.seed
    return load_dataset(DataSpec(**base), data_root=cfg.data_root, **shape)


def per_class_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Exactly n random indices of every class in y (the "10 labels per class" setting)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < n:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than labeled_per_class={n}")
        out.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


@dataclass(frozen=True)
class RunSplit:
    val_idx: np.ndarray  # into the data set: the validation slice
    train_idx: np.ndarray  # into the data set: the training images
    lab_idx: np.ndarray  # into train_idx: the labeled training images (empty without semi-supervision)

    def labeled(self, ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, labels) of the labeled training images."""
        if ds.y is None:
            raise ValueError("the data set has no labels")
        rows = self.train_idx[self.lab_idx]
        return ds.x[rows], ds.y[rows]


def run_split(cfg: Any, ds: ImageDataset) -> RunSplit:
    """How the run configured by `cfg` splits `ds` (see the module docstring); the Trainer uses exactly this."""
    n = len(ds.x)
    perm = np.random.default_rng(cfg.seed).permutation(n)
    n_val = min(cfg.val_samples, n // 5)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    lab_idx = np.zeros(0, np.int64)
    if cfg.semi_supervised:
        if ds.y is None:
            raise ValueError(f"data set {cfg.dataset} has no labels: semi-supervision needs them")
        y_train = ds.y[train_idx]
        if cfg.labeled_per_class:
            lab_idx = per_class_indices(y_train, cfg.labeled_per_class, cfg.seed)
        else:
            lab_idx = labeled_indices(y_train, fraction=None if cfg.labeled_count else cfg.labeled_fraction,
                                      count=cfg.labeled_count, seed=cfg.seed)
    return RunSplit(val_idx, train_idx, lab_idx)
