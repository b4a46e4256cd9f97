"""What to load and how to carve it up (DataSpec), and the loaded data set (ImageDataset)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import DataError


@dataclass
class DataSpec:
    """What to load and how to carve it up (all of it is reproducible from these fields + seed)."""

    path: str
    split: str = "train"
    # Keep only these original labels, in this order: mode k is classes[k].
    classes: list[int] | None = None
    # Relative proportion per kept class/group, e.g. [0.7, 0.3]; the data is subsampled to
    # exactly these proportions with the largest possible N.
    ratios: list[float] | None = None
    # Merge original labels into groups; the group index becomes the label.
    groups: list[list[int]] | None = None
    # Stratified cap applied after the above (keeps tests and smoke runs small).
    max_samples: int | None = None
    seed: int = 0
    name: str | None = None
    # Names of the *original* label values, overriding the source's ("0".."9" for IDX files);
    # presets use it to give Fashion-MNIST its real class names.
    class_names: list[str] | None = None
    # How to read ``path`` when it is not detected from its content (sources.FORMATS): "folder" (an image
    # folder, even one that also holds other files), "cifar10", "stl10", "celeba", "colored-mnist".
    format: str | None = None
    # CelebA: the attribute(s) that become the label, e.g. "Eyeglasses" (2 classes) or "Smiling,Male" (4).
    attribute: str | None = None
    # The model's image size and channels: every image is converted and resized to it through core/images.py
    # (the service's preprocessing). None: the data's own (an image folder of mixed sizes picks one: sources.py).
    size: int | None = None
    channels: int | None = None


@dataclass
class ImageDataset:
    x: np.ndarray  # uint8 [N, C, H, W]
    y: np.ndarray | None  # int64 [N] in 0..n_classes-1, or None when unlabeled
    class_names: list[str]
    name: str
    spec: DataSpec | None = None
    # Per-image arrays beside the labels, kept through subset(): e.g. Colored-MNIST's "bg_hue" and "fg_hue"
    # (the nuisance factor, to score how much a clustering follows it).
    extras: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        # Validate once here so every consumer can rely on the documented layout.
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise DataError(
                f"data set {self.name!r}: x must be a uint8 array [N, C, H, W], got "
                f"{getattr(self.x, 'dtype', type(self.x))} {getattr(self.x, 'shape', '')}"
            )
        self.class_names = [str(c) for c in self.class_names]
        for k, v in (self.extras or {}).items():
            if len(v) != len(self.x):
                raise DataError(f"data set {self.name!r}: extras[{k!r}] has {len(v)} rows for {len(self.x)} images")
        if self.y is not None:
            self.y = np.asarray(self.y).astype(np.int64, copy=False)
            if self.y.shape != (len(self.x),):
                raise DataError(
                    f"data set {self.name!r}: y has shape {self.y.shape}, expected ({len(self.x)},)"
                )
            if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
                raise DataError(
                    f"data set {self.name!r}: labels span {int(self.y.min())}..{int(self.y.max())} "
                    f"but there are {len(self.class_names)} class names"
                )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x.shape[1:])  # (C, H, W)

    @property
    def priors(self) -> np.ndarray:
        """Class frequencies (float64, sums to 1): the mode priors NEMGAN-P should match."""
        if self.y is None:
            raise DataError(f"data set {self.name!r} has no labels, so its class priors are unknown")
        if len(self.y) == 0:
            raise DataError(f"data set {self.name!r} is empty, so its class priors are undefined")
        counts = np.bincount(self.y, minlength=self.n_classes).astype(np.float64)
        return counts / counts.sum()

    def subset(self, idx) -> "ImageDataset":
        """Rows ``idx`` (int indices or a boolean mask); class names are kept so labels stay valid."""
        idx = np.asarray(idx)
        return ImageDataset(
            x=self.x[idx],
            y=None if self.y is None else self.y[idx],
            class_names=list(self.class_names),
            name=self.name,
            spec=self.spec,
            extras=None if self.extras is None else {k: v[idx] for k, v in self.extras.items()},
        )
