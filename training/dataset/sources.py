"""Data sources: an IDX directory, .npz, .npy or an image folder -> (x uint8 NCHW, y or None, class names)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from core.errors import DataError

from .arrays import as_labels, as_nchw_uint8, numeric_names
from .idx import GZIP_MAGIC, read_idx


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
    if "-ubyte" in path.name or head[:2] in (GZIP_MAGIC, b"\x00\x00"):
        # A lone IDX images file; pick up its labels file if it sits beside it.
        labels = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        if labels == path or not labels.is_file():
            labels = None
        return _load_idx_images(path, labels)
    raise DataError(
        f"{path}: unsupported data file (expected a directory, .npz, .npy or IDX file)"
    )
