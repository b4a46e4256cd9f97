"""Image data for training mode-matching GANs: loading, class subsetting, imbalance, batching.

This module is deliberately torch-free (numpy + pillow only) so the CLI, the service and the
tests can inspect data sets without importing torch. Everything returns plain numpy arrays:

* images are ``uint8 [N, C, H, W]`` on the way in (compact: 60k MNIST images are 47 MB) and
  are converted to the model's float range ``[-1, 1]`` only per batch (``core.images.uint8_to_model``);
* labels are ``int64 [N]`` in ``0..n_classes-1`` or ``None`` for unlabeled data.

Reading order: errors -> IDX files -> other sources (npz/npy/image folders) -> ``DataSpec`` and
``ImageDataset`` -> presets and :func:`load_dataset` -> helpers for semi-supervision, pixel
ranges, fake data and minibatch order.

Every problem with the input is reported as :class:`DataError` naming the file and what is
wrong, because a raw ``struct.error`` or ``zlib.error`` three frames deep in a training job tells
the user nothing about which of their files is broken.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.data import FASHION_MNIST_CLASSES, MNIST_CLASSES, PRESETS, default_data_root, resolve_path
from core.errors import DataError

__all__ = [
    "DataError",
    "read_idx",
    "load_images",
    "DataSpec",
    "ImageDataset",
    "PRESETS",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "default_data_root",
    "load_dataset",
    "labeled_indices",
    "fake_dataset",
    "BatchIterator",
]




# --------------------------------------------------------------------------------------------
# IDX files (the MNIST distribution format)
# --------------------------------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian
# uint32 per dimension. The data that follows is big-endian too.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into DataError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-byte-order numpy array.

    Compression is detected from the gzip magic bytes rather than the ``.gz`` extension, since
    files get renamed and decompressed by tools that do not update the name.
    """
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None

    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (bad magic bytes 0x{data[:4].hex()}; "
            "expected 0x0000 followed by a type code and a dimension count)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{path}: unsupported IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header_len})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]

    dtype = _IDX_DTYPES[type_code]
    # Python ints: no overflow however absurd the header is.
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file: header says {dims} ({expected} data bytes), "
            f"but only {found} bytes follow the header"
        )
    if found > expected:
        raise DataError(
            f"{path}: IDX file has {found - expected} unexpected trailing bytes after "
            f"the {expected} data bytes its header {dims} declares"
        )
    # frombuffer is a zero-copy view of the decompressed bytes (fast for 60k images); the
    # astype makes a writable native-byte-order copy so callers can modify the result.
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------------
# Image arrays: normalise the layouts people actually store into uint8 [N, C, H, W]
# --------------------------------------------------------------------------------------------


def _as_nchw_uint8(x: np.ndarray, source: Any) -> np.ndarray:
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


def _as_labels(y: Any, n: int, source: Any) -> np.ndarray:
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


def _numeric_names(y: np.ndarray | None) -> list[str]:
    """Class names for integer-labelled sources: "0".."max"."""
    if y is None or len(y) == 0:
        return []
    return [str(i) for i in range(int(y.max()) + 1)]


# --------------------------------------------------------------------------------------------
# Sources: IDX directory, npz, npy, image folder
# --------------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# PIL modes that carry no colour: such images load as one channel.
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _idx_split_name(split: str) -> str:
    # The MNIST distribution calls its test split "t10k".
    return "t10k" if split == "test" else split


def _find_idx(directory: Path, split: str, kind: str, ndim: int) -> Path | None:
    """Find ``{split}-{kind}-idx{ndim}-ubyte[.gz]`` (also the ``{kind}.idx`` spelling some mirrors use)."""
    prefix = _idx_split_name(split)
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for suffix in ("", ".gz"):
            candidate = directory / (stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    return any("-ubyte" in p.name for p in directory.iterdir() if p.is_file())


def _load_idx_dir(directory: Path, split: str):
    images = _find_idx(directory, split, "images", 3)
    if images is None:
        present = sorted(p.name for p in directory.iterdir() if "-ubyte" in p.name)
        raise DataError(
            f"{directory}: no IDX images for split {split!r} "
            f"(looked for {_idx_split_name(split)}-images-idx3-ubyte[.gz]; found {present})"
        )
    return _load_idx_images(images, _find_idx(directory, split, "labels", 1))


def _load_idx_images(images: Path, labels: Path | None):
    x = _as_nchw_uint8(read_idx(images), images)
    y = None
    # Labels are optional: an images file alone is an unlabeled data set.
    if labels is not None:
        y = _as_labels(read_idx(labels), len(x), labels)
    return x, y, _numeric_names(y)


def _load_npz(path: Path):
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read .npz archive ({e})") from None
    with archive:
        keys = list(archive.files)
        x_key = next((k for k in ("x", "images") if k in keys), None)
        if x_key is None:
            raise DataError(f"{path}: .npz has no 'x' or 'images' array (keys: {keys})")
        y_key = next((k for k in ("y", "labels") if k in keys), None)
        try:
            x_raw = archive[x_key]
            y_raw = archive[y_key] if y_key else None
            names_raw = archive["class_names"] if "class_names" in keys else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path}: corrupt array in .npz archive ({e})") from None
    x = _as_nchw_uint8(x_raw, f"{path}[{x_key}]")
    y = None if y_raw is None else _as_labels(y_raw, len(x), f"{path}[{y_key}]")
    names = _numeric_names(y)
    if names_raw is not None:
        # Optional: an archive may carry its own class names (one string per label value).
        names = [str(s) for s in np.asarray(names_raw).ravel()]
        if y is not None and len(y) and int(y.max()) >= len(names):
            raise DataError(
                f"{path}: label {int(y.max())} has no entry in class_names ({len(names)} names)"
            )
    return x, y, names


def _load_npy(path: Path):
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read .npy array ({e})") from None
    return _as_nchw_uint8(x, path), None, []


def _image_files(directory: Path) -> list[Path]:
    # Sorted so that the sample order (and thus every seeded subsample) is reproducible.
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_EXTENSIONS
    )


def _load_image_folder(root: Path, split: str):
    # Allow root/{split}/{class}/... layouts; otherwise the classes sit directly under root.
    if (root / split).is_dir():
        root = root / split
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    files: list[Path] = []
    labels: list[int] = []
    if class_dirs:
        for k, d in enumerate(class_dirs):
            found = _image_files(d)
            if not found:
                raise DataError(f"{d}: class folder contains no image files")
            files += found
            labels += [k] * len(found)
        names = [d.name for d in class_dirs]
    else:
        # No class sub-folders: a flat folder of images is an unlabeled data set.
        files = _image_files(root)
        names = []
    if not files:
        raise DataError(
            f"{root}: no images found (expected one sub-folder per class holding "
            f"{'/'.join(sorted(_IMAGE_EXTENSIONS))} files)"
        )

    from PIL import Image, UnidentifiedImageError  # pillow only needed for this source

    # Pass 1 reads headers only (cheap) to decide the common mode and check sizes before
    # decoding anything, so a mismatch is reported for all files at once.
    sizes: dict[tuple[int, int], list[Path]] = {}
    all_grey = True
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.setdefault(im.size, []).append(f)
                all_grey &= im.mode in _GREY_MODES
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{f}: cannot read image ({e})") from None
    if len(sizes) > 1:
        detail = "; ".join(
            f"{w}x{h}: {len(fs)} file(s), e.g. {fs[0]}" for (w, h), fs in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise DataError(f"{root}: images must all have the same size, found {detail}")

    mode = "L" if all_grey else "RGB"
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert(mode), dtype=np.uint8))
        except (OSError, ValueError) as e:  # e.g. truncated image data
            raise DataError(f"{f}: cannot decode image ({e})") from None
    x = np.stack(arrays)  # [N,H,W] or [N,H,W,3]
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    y = np.asarray(labels, dtype=np.int64) if class_dirs else None
    return np.ascontiguousarray(x), y, names


def load_images(path: str | os.PathLike, split: str = "train"):
    """Load images (and labels, if the source has them) from ``path``.

    Returns ``(x, y, class_names)``: ``x`` uint8 [N, C, H, W], ``y`` int64 [N] or None, and one
    name per label value. ``path`` may be a directory of IDX files (``split`` picks
    ``{split}-images-idx3-ubyte[.gz]``, "test" meaning "t10k"), a single IDX images file, an
    ``.npz`` (arrays x/y or images/labels), an ``.npy`` of images, or an image folder with one
    sub-folder per class (optionally under ``path/{split}``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if _has_idx_files(path):
            return _load_idx_dir(path, split)
        return _load_image_folder(path, split)

    # A single file: decide by content where possible, falling back to the extension.
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    if suffix == ".npz" or head[:4] == b"PK\x03\x04":
        return _load_npz(path)
    if suffix == ".npy" or head[:6] == b"\x93NUMPY":
        return _load_npy(path)
    if "-ubyte" in path.name or head[:2] in (_GZIP_MAGIC, b"\x00\x00"):
        # A lone IDX images file; pick up its labels file if it sits beside it.
        labels = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        if labels == path or not labels.is_file():
            labels = None
        return _load_idx_images(path, labels)
    raise DataError(
        f"{path}: unsupported data file (expected a directory, .npz, .npy or IDX file)"
    )


# --------------------------------------------------------------------------------------------
# Data set specification and container
# --------------------------------------------------------------------------------------------


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


@dataclass
class ImageDataset:
    x: np.ndarray  # uint8 [N, C, H, W]
    y: np.ndarray | None  # int64 [N] in 0..n_classes-1, or None when unlabeled
    class_names: list[str]
    name: str
    spec: DataSpec | None = None

    def __post_init__(self) -> None:
        # Validate once here so every consumer can rely on the documented layout.
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise DataError(
                f"data set {self.name!r}: x must be a uint8 array [N, C, H, W], got "
                f"{getattr(self.x, 'dtype', type(self.x))} {getattr(self.x, 'shape', '')}"
            )
        self.class_names = [str(c) for c in self.class_names]
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
        )


# --------------------------------------------------------------------------------------------
# Subsetting: classes, groups, ratios, caps
# --------------------------------------------------------------------------------------------


def _allocate(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder), each <= cap."""
    share = total * weights / weights.sum()
    n = np.minimum(np.floor(share).astype(np.int64), caps)
    # Hand out what rounding down left over, biggest fractional part first, where room remains.
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while n.sum() < total:
        progressed = False
        for k in order:
            if n.sum() >= total:
                break
            if n[k] < caps[k]:
                n[k] += 1
                progressed = True
        if not progressed:
            break
    return n


def _exact_ratio_counts(counts: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per-class sample counts matching ``ratios`` as closely as integers allow, with the largest total."""
    p = ratios / ratios.sum()
    # The class that runs out first bounds the total; rounding may push a class one over its
    # count, in which case shrink the total until everything fits.
    total = int(np.floor(np.min(counts[p > 0] / p[p > 0])))
    while total > 0:
        share = total * p
        n = np.floor(share).astype(np.int64)
        rest = total - int(n.sum())
        for k in np.argsort(-(share - n), kind="stable")[:rest]:
            n[k] += 1
        if np.all(n <= counts):
            return n
        total -= 1
    return np.zeros_like(counts)


def _pick(rng: np.random.Generator, y: np.ndarray, n_per_class: np.ndarray) -> np.ndarray:
    """Random ``n_per_class[k]`` indices of each class k, returned in original order."""
    chosen = [
        rng.choice(np.flatnonzero(y == k), size=int(m), replace=False)
        for k, m in enumerate(n_per_class)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _apply_spec(x, y, names, spec: DataSpec, where: str):
    """Apply classes/groups/ratios/max_samples to loaded arrays; returns (x, y, names)."""
    wants_labels = spec.classes is not None or spec.groups is not None or spec.ratios is not None
    if wants_labels and y is None:
        raise DataError(f"{where}: classes/groups/ratios need labels, but the data has none")

    if y is not None:
        present = sorted(set(np.unique(y).tolist()))

        def check_labels(labels: Sequence[Any], what: str) -> list[int]:
            if not all(_is_int(c) for c in labels):
                raise DataError(f"{where}: {what} must be integer labels, got {list(labels)}")
            labels = [int(c) for c in labels]
            missing = [c for c in labels if c not in present]
            if missing:
                raise DataError(
                    f"{where}: {what} {missing} not present in the data (labels present: {present})"
                )
            if len(set(labels)) != len(labels):
                raise DataError(f"{where}: {what} lists a label more than once: {labels}")
            return labels

        if spec.groups is not None:
            groups = [list(g) for g in spec.groups]
            if not groups or any(len(g) == 0 for g in groups):
                raise DataError(f"{where}: groups must be non-empty lists of labels, got {spec.groups}")
            flat = check_labels([c for g in groups for c in g], "groups label(s)")
            if spec.classes is not None and sorted(spec.classes) != sorted(flat):
                raise DataError(f"{where}: give either classes or groups (they disagree: {spec.classes} vs {groups})")
            mapping = {c: k for k, g in enumerate(groups) for c in g}
            names = ["+".join(names[c] for c in g) for g in groups]
        elif spec.classes is not None:
            if len(spec.classes) == 0:
                raise DataError(f"{where}: classes must not be empty")
            classes = check_labels(spec.classes, "class(es)")
            mapping = {c: k for k, c in enumerate(classes)}
            names = [names[c] for c in classes]
        else:
            mapping = None
        if mapping is not None:
            keep = np.isin(y, list(mapping))
            lut = np.full(int(y.max()) + 1, -1, dtype=np.int64)
            for c, k in mapping.items():
                lut[c] = k
            x, y = x[keep], lut[y[keep]]

    rng = np.random.default_rng(spec.seed)

    if spec.ratios is not None:
        n_classes = len(names)
        ratios = np.asarray(spec.ratios, dtype=np.float64)
        if ratios.ndim != 1 or len(ratios) != n_classes:
            raise DataError(
                f"{where}: ratios has {ratios.size} entries but there are {n_classes} "
                f"classes/groups ({names})"
            )
        if not np.all(np.isfinite(ratios)) or np.any(ratios <= 0):
            raise DataError(f"{where}: ratios must all be positive numbers, got {list(spec.ratios)}")
        counts = np.bincount(y, minlength=n_classes)
        idx = _pick(rng, y, _exact_ratio_counts(counts, ratios))
        x, y = x[idx], y[idx]

    if spec.max_samples is not None:
        if not _is_int(spec.max_samples) or spec.max_samples < 1:
            raise DataError(f"{where}: max_samples must be a positive integer, got {spec.max_samples!r}")
        if len(x) > spec.max_samples:
            if y is None:
                idx = np.sort(rng.choice(len(x), size=spec.max_samples, replace=False))
            else:
                counts = np.bincount(y, minlength=len(names))
                n = _allocate(spec.max_samples, counts.astype(np.float64), counts)
                # Stratified means every class survives the cap when the cap allows it.
                if spec.max_samples >= np.count_nonzero(counts):
                    n = _ensure_one_each(n, counts)
                idx = _pick(rng, y, n)
            x = x[idx]
            y = None if y is None else y[idx]
    return np.ascontiguousarray(x), y, names


def _ensure_one_each(n: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Give every non-empty class at least one sample, taking from the largest, keeping the sum."""
    n = n.copy()
    for k in np.flatnonzero((n == 0) & (counts > 0)):
        n[int(np.argmax(n))] -= 1
        n[k] = 1
    return n


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    spec: DataSpec | str, split: str | None = None, data_root: str | os.PathLike | None = None
) -> ImageDataset:
    """Load a preset name, a path, or a :class:`DataSpec`, applying its subsetting.

    ``split`` overrides the spec's split. The returned data set's ``spec`` is the spec as used
    (path kept as given, so it stays portable across machines with different data roots).
    """
    preset_name = None
    if isinstance(spec, str):
        key = spec.lower()
        if key in PRESETS:
            preset_name = key
            spec = DataSpec(**PRESETS[key], name=key)
        else:
            spec = DataSpec(path=spec)
    elif not isinstance(spec, DataSpec):
        raise DataError(f"expected a DataSpec, preset name or path, got {type(spec).__name__}")
    if split is not None:
        spec = dataclasses.replace(spec, split=split)

    root = Path(data_root) if data_root is not None else default_data_root()
    path = resolve_path(spec.path, root)
    if not path.exists():
        hint = "" if preset_name is None and Path(spec.path).is_absolute() else (
            f" (looked relative to the data root {root}; set NEMGAN_DATA_DIR or pass data_root; "
            f"presets: {sorted(PRESETS)})"
        )
        raise DataError(f"{path}: no such file or directory{hint}")

    x, y, names = load_images(path, spec.split)
    if spec.class_names is not None:
        names = [str(c) for c in spec.class_names]
        if y is not None and len(y) and int(y.max()) >= len(names):
            raise DataError(f"{path}: label {int(y.max())} has no entry in class_names ({len(names)} names)")
    x, y, names = _apply_spec(x, y, names, spec, where=str(path))
    if len(x) == 0:
        raise DataError(f"{path}: no samples left after subsetting with {spec}")

    name = spec.name or (path.stem if path.is_file() else path.name)
    return ImageDataset(x=x, y=y, class_names=names, name=name, spec=spec)


# --------------------------------------------------------------------------------------------
# Semi-supervision
# --------------------------------------------------------------------------------------------


def labeled_indices(
    y: np.ndarray,
    fraction: float | None = None,
    count: int | None = None,
    per_class: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the samples whose labels the semi-supervised objective may see.

    Give exactly one of ``fraction`` (of all samples, in (0, 1]) or ``count`` (total number of
    labeled samples). With ``per_class`` the subset is stratified and holds at least one sample
    of every class present: a class with no labeled example cannot be tied to a mode.
    Returns sorted int64 indices, deterministic for a given seed.
    """
    if y is None:
        raise DataError("labeled_indices needs labels, but y is None")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"labeled_indices needs a non-empty 1-D label array, got shape {y.shape}")
    y = _as_labels(y, len(y), "labeled_indices")
    if (fraction is None) == (count is None):
        raise DataError("labeled_indices: give exactly one of fraction or count")
    n = len(y)
    counts = np.bincount(y)
    n_present = int(np.count_nonzero(counts))

    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
                or not (0.0 < float(fraction) <= 1.0):
            raise DataError(f"labeled_indices: fraction must be in (0, 1], got {fraction!r}")
        total = max(1, int(round(float(fraction) * n)))
        if per_class:
            total = max(total, n_present)  # "at least one per class" wins over a tiny fraction
    else:
        if not _is_int(count) or not (1 <= count <= n):
            raise DataError(f"labeled_indices: count must be an integer in 1..{n}, got {count!r}")
        total = int(count)
        if per_class and total < n_present:
            raise DataError(
                f"labeled_indices: count={total} cannot cover all {n_present} classes with one label each"
            )

    rng = np.random.default_rng(seed)
    if not per_class:
        return np.sort(rng.choice(n, size=total, replace=False)).astype(np.int64)
    alloc = _ensure_one_each(_allocate(total, counts.astype(np.float64), counts), counts)
    return _pick(rng, y, alloc).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Fake data for --dry-run and tests
# --------------------------------------------------------------------------------------------


def fake_dataset(n: int = 256, n_classes: int = 10, shape=(1, 28, 28), seed: int = 0) -> ImageDataset:
    """Random Gaussian blobs whose position (and, with colour, hue) depends on the class.

    The structure is simple but real: each class is a distinct mode, so a smoke-test GAN and the
    mode metrics have something to find without any files on disk.
    """
    if not _is_int(n) or n < 1 or not _is_int(n_classes) or n_classes < 1:
        raise DataError(f"fake_dataset: n and n_classes must be positive integers, got {n}, {n_classes}")
    if len(shape) != 3 or any(not _is_int(s) or s < 1 for s in shape):
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


# --------------------------------------------------------------------------------------------
# Minibatch order
# --------------------------------------------------------------------------------------------


class BatchIterator:
    """Infinite stream of shuffled index batches over ``range(n)``, resumable exactly.

    The stream is the concatenation of one fresh permutation per epoch, cut into batches of
    ``batch_size``: batches are always full (a batch may straddle two epochs) and every sample
    is visited once per epoch. ``epoch`` counts completed passes.

    Resuming: the state holds the generator state from *before* the current epoch's
    permutation was drawn plus the position in it, so :meth:`load_state_dict` can regenerate
    that permutation instead of storing n indices in every checkpoint.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        if not _is_int(n) or n < 1:
            raise DataError(f"BatchIterator: n must be a positive integer, got {n!r}")
        if not _is_int(batch_size) or batch_size < 1:
            raise DataError(f"BatchIterator: batch_size must be a positive integer, got {batch_size!r}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._rng_state = self._rng.bit_generator.state  # a fresh dict copy
        self._perm = self._rng.permutation(self.n)
        self._pos = 0

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> np.ndarray:
        parts, need = [], self.batch_size
        while need:
            if self._pos == self.n:
                self.epoch += 1
                self._start_epoch()
            take = min(need, self.n - self._pos)
            parts.append(self._perm[self._pos : self._pos + take])
            self._pos += take
            need -= take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def state_dict(self) -> dict:
        """Plain-Python state (JSON/pickle friendly)."""
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "pos": self._pos,
            "rng_state": self._rng_state,
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            n, batch_size = int(state["n"]), int(state["batch_size"])
            epoch, pos, rng_state = int(state["epoch"]), int(state["pos"]), state["rng_state"]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"BatchIterator: malformed state dict ({e!r})") from None
        # Resuming over a different data set or batch size would silently change the stream.
        if (n, batch_size) != (self.n, self.batch_size):
            raise DataError(
                f"BatchIterator: state is for n={n}, batch_size={batch_size}, "
                f"but this iterator has n={self.n}, batch_size={self.batch_size}"
            )
        if not 0 <= pos <= n:
            raise DataError(f"BatchIterator: position {pos} out of range 0..{n}")
        try:
            self._rng.bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(f"BatchIterator: malformed generator state ({e})") from None
        self.seed = int(state.get("seed", self.seed))
        self._start_epoch()  # redraws the same permutation from the restored generator state
        self.epoch, self._pos = epoch, pos
