"""Data sources: an IDX directory, .npz, .npy, an image folder, CIFAR-10 / STL-10 / CelebA (formats.py)
-> (x uint8 NCHW, y or None, class names).

Images are brought to the model's size and channels (``size``/``channels``, or what the data suggests) through
core/images.py, the preprocessing the service applies to an upload: convert to grey ('L') or RGB, then a
bilinear resize to size x size (no crop: a non-square image is squashed, as the service does)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from core.errors import DataError

from .arrays import as_labels, as_nchw_uint8, numeric_names
from . import formats
from .idx import GZIP_MAGIC, read_idx

# Formats a DataSpec may name (DataSpec.format); the others are told apart by their content.
FORMATS = ("folder", "idx", "npz", "npy", "cifar10", "stl10", "celeba", "colored-mnist")
# The sizes the networks are laid out for (training/networks.py); an image folder of mixed sizes picks one.
STANDARD_SIZES = (28, 32, 64, 96)


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
    x = as_nchw_uint8(read_idx(images), images)
    y = None
    # Labels are optional: an images file alone is an unlabeled data set.
    if labels is not None:
        y = as_labels(read_idx(labels), len(x), labels)
    return x, y, numeric_names(y)


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
    x = as_nchw_uint8(x_raw, f"{path}[{x_key}]")
    y = None if y_raw is None else as_labels(y_raw, len(x), f"{path}[{y_key}]")
    names = numeric_names(y)
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
    return as_nchw_uint8(x, path), None, []


def _image_files(directory: Path) -> list[Path]:
    # Sorted so that the sample order (and thus every seeded subsample) is reproducible.
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_EXTENSIONS
    )


def folder_size(sizes: dict[tuple[int, int], list[Path]]) -> tuple[int, int]:
    """The model size (H, W) for an image folder when none is asked for: its images' common size when they
    share one divisible by 4 (the networks halve it at least twice); otherwise the largest standard size
    (28, 32, 64, 96) not above the median shorter side, at least 28."""
    if len(sizes) == 1:
        (w, h), = sizes
        if w % 4 == 0 and h % 4 == 0:
            return h, w
    short = np.median(np.concatenate([np.full(len(fs), min(wh)) for wh, fs in sizes.items()]))
    side = max([s for s in STANDARD_SIZES if s <= short] or [STANDARD_SIZES[0]])
    return side, side


def _load_image_folder(root: Path, split: str, size: int | None = None, channels: int | None = None):
    """Flat folder = unlabeled; one sub-folder per class = labeled (optionally under root/{split}). Images of
    any size and colour are converted and resized to one (channels, size, size) through core/images.py."""
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
            f"{root}: no images found (expected image files, or one sub-folder per class holding "
            f"{'/'.join(sorted(_IMAGE_EXTENSIONS))} files)"
        )

    from PIL import Image, UnidentifiedImageError  # pillow only needed for this source

    from core.images import ImageSpec, image_to_spec

    # Pass 1 reads headers only (cheap): the sizes and whether any image has colour.
    sizes: dict[tuple[int, int], list[Path]] = {}
    all_grey = True
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.setdefault(im.size, []).append(f)
                all_grey &= im.mode in _GREY_MODES
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{f}: cannot read image ({e})") from None
    h, w = (size, size) if size else folder_size(sizes)
    spec = ImageSpec(channels or (1 if all_grey else 3), h, w)
    x = np.empty((len(files), spec.channels, h, w), np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                x[i] = image_to_spec(im, spec)
        except (OSError, ValueError) as e:  # e.g. truncated image data
            raise DataError(f"{f}: cannot decode image ({e})") from None
    y = np.asarray(labels, dtype=np.int64) if class_dirs else None
    return x, y, names


def resize_images(x: np.ndarray, size: int | None, channels: int | None, where) -> np.ndarray:
    """Arrays to the asked size/channels through core/images.py (unchanged when they already fit)."""
    if not size and not channels:
        return x
    from core.images import ImageSpec, arrays_to_spec

    c = channels or x.shape[1]
    if x.shape[1] not in (1, 3) or c not in (1, 3):
        raise DataError(f"{where}: can convert grey or RGB images only, have {x.shape[1]} channels, asked {c}")
    return arrays_to_spec(x, ImageSpec(c, size or x.shape[2], size or x.shape[3]))


def detect_format(path: Path) -> str:
    """What a path holds, from its content: idx, cifar10, stl10, celeba or folder (directories); npz, npy, idx."""
    if path.is_dir():
        if _has_idx_files(path):
            return "idx"
        if formats.is_cifar10_dir(path):
            return "cifar10"
        if formats.is_stl10_dir(path):
            return "stl10"
        if formats.is_celeba_dir(path):
            return "celeba"
        return "folder"
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    if suffix == ".npz" or head[:4] == b"PK\x03\x04":
        return "npz"
    if suffix == ".npy" or head[:6] == b"\x93NUMPY":
        return "npy"
    if "-ubyte" in path.name or head[:2] in (GZIP_MAGIC, b"\x00\x00"):
        return "idx"
    raise DataError(
        f"{path}: unsupported data file (expected a directory, .npz, .npy or IDX file)"
    )


def load_images(path: str | os.PathLike, split: str = "train", size: int | None = None,
                channels: int | None = None, format: str | None = None, attribute: str | None = None):
    """Load images (and labels, if the source has them) from ``path``.

    Returns ``(x, y, class_names)``: ``x`` uint8 [N, C, H, W], ``y`` int64 [N] or None, and one
    name per label value. ``path`` may be a directory of IDX files (``split`` picks
    ``{split}-images-idx3-ubyte[.gz]``, "test" meaning "t10k"), a single IDX images file, an
    ``.npz`` (arrays x/y or images/labels), an ``.npy`` of images, a CIFAR-10 / STL-10 / CelebA folder in its
    distribution format (formats.py; ``attribute`` picks CelebA's label), or an image folder: flat (unlabeled)
    or one sub-folder per class (optionally under ``path/{split}``). ``format`` forces one of FORMATS instead
    of detecting it. ``size``/``channels`` convert every image to that model input (core/images.py).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if format is not None and format not in FORMATS:
        raise DataError(f"{path}: unknown data format {format!r} (formats: {', '.join(FORMATS)})")
    kind = format if format not in (None, "colored-mnist") else detect_format(path)
    if kind == "folder":
        if not path.is_dir():
            raise DataError(f"{path}: format 'folder' needs a directory of images")
        return _load_image_folder(path, split, size, channels)
    if kind == "celeba":
        return formats.load_celeba(path, split, attribute, size, channels)
    if kind == "cifar10":
        x, y, names = formats.load_cifar10(path, split)
    elif kind == "stl10":
        x, y, names = formats.load_stl10(path, split)
    elif kind == "npz":
        x, y, names = _load_npz(path)
    elif kind == "npy":
        x, y, names = _load_npy(path)
    elif path.is_dir():
        x, y, names = _load_idx_dir(path, split)
    else:
        # A lone IDX images file; pick up its labels file if it sits beside it.
        labels = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        if labels == path or not labels.is_file():
            labels = None
        x, y, names = _load_idx_images(path, labels)
    return resize_images(x, size, channels, path), y, names
