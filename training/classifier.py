"""A small CNN classifier trained in-project on the real training set.

The papers evaluate generators with a "pre-trained classifier": NEMGAN-P reports the Fréchet
Classification Distance (FCD) computed on classifier features, and the MM-GAN thesis (ch. 3) defines its
quality score on an intermediate layer of a classifier and its inter-class diversity on the classifier's
predictions. No such classifier ships with the papers, so we train our own on the real training images.
It is deliberately small (two conv blocks + one hidden fully connected layer) so that it reaches ~99% on
MNIST within a couple of minutes on 2 CPU cores.

Conventions (shared with the rest of the project):
- datasets are uint8 NCHW; networks take float32 in [-1, 1] (core.images.uint8_to_model);
- `features(x)` is the penultimate (hidden fully connected) layer, the representation used for FCD and
  for the quality score's nearest-neighbour distance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.images import uint8_to_model
from .augment import random_affine


class Classifier(nn.Module):
    """conv(32)-pool-conv(64)-pool-fc(feature_dim)-fc(n_classes).

    The constructor arguments are everything needed to rebuild the module, which is what
    `save_classifier` stores next to the weights.
    """

    def __init__(
        self,
        n_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        feature_dim: int = 128,
        dropout: float = 0.25,
    ):
        super().__init__()
        if image_size % 4 != 0:
            # two 2x2 poolings: the flattened size below assumes exact halving
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.n_classes = n_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.feature_dim = feature_dim
        self.dropout = dropout

        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        flat = 64 * (image_size // 4) ** 2
        self.fc1 = nn.Linear(flat, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(feature_dim, n_classes)

    @property
    def model_args(self) -> dict:
        return dict(
            n_classes=self.n_classes,
            in_channels=self.in_channels,
            image_size=self.image_size,
            feature_dim=self.feature_dim,
            dropout=self.dropout,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (after ReLU), shape [N, feature_dim]."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout sits between features and logits, so `features` is the same in train and eval mode.
        return self.fc2(self.drop(self.features(x)))


def train_classifier(
    x_uint8: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    augment: bool = False,
) -> Classifier:
    """Train a `Classifier` with Adam on uniformly sampled minibatches.

    2000 steps at batch 128 is ~4 MNIST epochs, which gives ~99% test accuracy; the step count rather
    than epochs is the knob so tests can run a few hundred steps on a tiny subset.
    """
    x_uint8 = np.asarray(x_uint8)
    y = np.asarray(y, dtype=np.int64)
    if x_uint8.ndim != 4:
        raise ValueError(f"expected uint8 NCHW images, got shape {x_uint8.shape}")
    if len(x_uint8) != len(y):
        raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be in [0, {n_classes}), got [{y.min()}, {y.max()}]")

    torch.manual_seed(seed)  # weight init
    rng = np.random.default_rng(seed)  # minibatch sampling
    _, c, h, w = x_uint8.shape
    if h != w:
        raise ValueError(f"expected square images, got {h}x{w}")
    clf = Classifier(n_classes=n_classes, in_channels=c, image_size=h).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    # Cosine decay to 0 lets the last few hundred steps settle, worth ~0.3% accuracy at no cost.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)

    # Convert once: 60k MNIST images are 188 MB as float32, fine, and it avoids per-step conversions.
    x_all = torch.from_numpy(uint8_to_model(x_uint8))
    y_all = torch.from_numpy(y)

    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="classifier", unit="step")

    warp_gen = torch.Generator().manual_seed(seed)
    clf.train()
    for step in iterator:
        idx = torch.from_numpy(rng.integers(0, len(x_all), size=batch_size))
        xb, yb = x_all[idx], y_all[idx].to(device)
        if augment:  # small affine warps (training/augment.py): for training sets that lack real variety
            xb = random_affine(xb, warp_gen, background=-1.0 if c == 1 else None)
        loss = F.cross_entropy(clf(xb.to(device)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and step % 50 == 0:
            iterator.set_postfix(loss=f"{loss.item():.3f}")
    clf.eval()
    return clf


def save_classifier(clf: Classifier, path: str | os.PathLike) -> None:
    """Save constructor args + weights in one file (nanoGPT-style checkpoint).

    Written to a temporary file and renamed, so a concurrent reader of a shared cache never sees a
    half-written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model_args": clf.model_args,
        "state_dict": {k: v.detach().cpu() for k, v in clf.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_classifier(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """Rebuild a `Classifier` from `save_classifier`'s file; returned in eval mode."""
    # weights_only=True: the checkpoint is tensors + plain dicts, so no pickle code execution is needed.
    ckpt = torch.load(path, map_location=device, weights_only=True)
    clf = Classifier(**ckpt["model_args"])
    clf.load_state_dict(ckpt["state_dict"])
    return clf.to(device).eval()


def get_or_train_classifier(
    dataset_name: str,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cache_dir: str | os.PathLike,
    **train_kwargs,
) -> Classifier:
    """Load `cache_dir/{dataset_name}-classifier.pt` if present, else train on (x, y) and cache it.

    A cached classifier with a different number of classes (e.g. a stale file for a dataset variant
    that reuses the name) is not trusted: it is retrained and overwritten.
    """
    path = Path(cache_dir) / f"{dataset_name}-classifier.pt"
    if path.exists():
        clf = load_classifier(path)
        if clf.n_classes == n_classes and clf.in_channels == x.shape[1] and clf.image_size == x.shape[2]:
            return clf
    clf = train_classifier(x, y, n_classes, **train_kwargs)
    save_classifier(clf, path)
    return clf


@torch.no_grad()
def predict(
    clf: Classifier, x_float: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Classify images; returns (labels int64 [N], penultimate features float32 [N, feature_dim]).

    Accepts float32 in [-1, 1] (the network convention); uint8 input is converted for convenience
    since datasets are stored that way.
    """
    x = np.asarray(x_float)
    if x.dtype == np.uint8:
        x = uint8_to_model(x)
    was_training = clf.training
    clf.eval()
    device = next(clf.parameters()).device
    labels, feats = [], []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
        f = clf.features(xb)
        labels.append(clf.fc2(f).argmax(1).cpu().numpy())
        feats.append(f.cpu().numpy())
    clf.train(was_training)
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, clf.feature_dim), np.float32)
    return np.concatenate(labels).astype(np.int64), np.concatenate(feats).astype(np.float32)
