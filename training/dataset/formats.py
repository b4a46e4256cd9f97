"""The distribution formats of CIFAR-10 (binary version), STL-10 (binary) and CelebA (aligned images + attributes).

Each reader returns ``(x uint8 [N,C,H,W], y int64 [N] or None, class names)`` like every source in
sources.py, reads only the documented byte layout (never a pickle), and names the file and the problem in a
:class:`DataError` when the layout is wrong.

    CIFAR-10  cifar-10-batches-bin/: data_batch_{1..5}.bin (train), test_batch.bin (test), batches.meta.txt.
              A record is 3073 bytes: 1 label byte (0..9), then 1024 red, 1024 green, 1024 blue bytes of a
              32x32 image in row-major order.
    STL-10    stl10_binary/: {train,test,unlabeled}_X.bin, {train,test}_y.bin, class_names.txt. X holds
              uint8 images of 3x96x96 stored column-major (each channel's 96x96 plane is transposed);
              y holds one byte per image, 1..10.
    CelebA    celeba/: img_align_celeba/*.jpg (178x218), list_attr_celeba.txt (a count line, a line of the 40
              attribute names, then "000001.jpg  -1  1 ..." per image), optionally list_eval_partition.txt
              ("000001.jpg 0": 0 train, 1 valid, 2 test). The label is the chosen attribute(s).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.data import CIFAR10_CLASSES, STL10_CLASSES
from core.errors import DataError

_CIFAR_RECORD = 1 + 3 * 32 * 32
_STL_IMAGE = 3 * 96 * 96
CELEBA_DEFAULT_SIZE = 64  # the papers' and DCGAN's CelebA size; images are 178x218


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def _names_file(path: Path, default: list[str]) -> list[str]:
    if not path.is_file():
        return list(default)
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return names or list(default)


# ------------------------------------------------------------------ CIFAR-10

def is_cifar10_dir(d: Path) -> bool:
    return (d / "test_batch.bin").is_file() or any(d.glob("data_batch_*.bin"))


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read(path)
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DataError(f"{path}: not a CIFAR-10 binary batch ({len(data)} bytes is not a multiple of the "
                        f"{_CIFAR_RECORD}-byte record: 1 label byte + 3x32x32 pixels)")
    rec = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        raise DataError(f"{path}: label byte {int(y.max())} out of range 0..9 (a CIFAR-100 file has 2 label bytes)")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), y


def load_cifar10(d: Path, split: str):
    if split == "train":
        files = sorted(d.glob("data_batch_*.bin"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    elif split == "test":
        files = [d / "test_batch.bin"] if (d / "test_batch.bin").is_file() else []
    else:
        raise DataError(f"{d}: CIFAR-10 has splits 'train' and 'test', not {split!r}")
    if not files:
        raise DataError(f"{d}: no CIFAR-10 {split} batches (expected "
                        f"{'data_batch_1.bin ... data_batch_5.bin' if split == 'train' else 'test_batch.bin'})")
    parts = [read_cifar10_batch(f) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, _names_file(d / "batches.meta.txt", CIFAR10_CLASSES)


# ------------------------------------------------------------------ STL-10

def is_stl10_dir(d: Path) -> bool:
    return any((d / f"{s}_X.bin").is_file() for s in ("train", "test", "unlabeled"))


def read_stl10_images(path: Path) -> np.ndarray:
    data = _read(path)
    if len(data) == 0 or len(data) % _STL_IMAGE:
        raise DataError(f"{path}: not an STL-10 image file ({len(data)} bytes is not a multiple of "
                        f"3x96x96 = {_STL_IMAGE})")
    # Column-major per channel: the bytes of one plane run down the columns, so swap H and W back.
    return np.frombuffer(data, np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy()


def load_stl10(d: Path, split: str):
    if split not in ("train", "test", "unlabeled"):
        raise DataError(f"{d}: STL-10 has splits 'train', 'test' and 'unlabeled', not {split!r}")
    xf = d / f"{split}_X.bin"
    if not xf.is_file():
        raise DataError(f"{d}: no STL-10 {split} images ({xf.name})")
    x = read_stl10_images(xf)
    y = None
    yf = d / f"{split}_y.bin"
    if split != "unlabeled":
        if not yf.is_file():
            raise DataError(f"{d}: {xf.name} has no labels file {yf.name}")
        raw = np.frombuffer(_read(yf), np.uint8)
        if len(raw) != len(x):
            raise DataError(f"{yf}: {len(raw)} labels for {len(x)} images in {xf.name}")
        if raw.min() < 1 or raw.max() > 10:
            raise DataError(f"{yf}: labels must be 1..10, found {int(raw.min())}..{int(raw.max())}")
        y = raw.astype(np.int64) - 1
    return x, y, _names_file(d / "class_names.txt", STL10_CLASSES) if y is not None else []


# ------------------------------------------------------------------ CelebA

_CELEBA_SPLITS = {"train": 0, "valid": 1, "val": 1, "test": 2}


def _find(d: Path, *candidates: str) -> Path | None:
    return next((d / c for c in candidates if (d / c).exists()), None)


def is_celeba_dir(d: Path) -> bool:
    return _find(d, "img_align_celeba", "Img/img_align_celeba") is not None and \
        _find(d, "list_attr_celeba.txt", "Anno/list_attr_celeba.txt") is not None


def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(file names, attribute names, values int8 [N, A] in {-1, 1})."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        raise DataError(f"{path}: not a CelebA attribute list (a count line, the attribute names, then one line per image)")
    names = lines[1].split()
    files, rows = [], []
    for i, ln in enumerate(lines[2:], start=3):
        parts = ln.split()
        if len(parts) != len(names) + 1:
            raise DataError(f"{path}:{i}: {len(parts) - 1} values for {len(names)} attributes")
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{i}: attribute values must be -1 or 1") from None
        if any(v not in (-1, 1) for v in vals):
            raise DataError(f"{path}:{i}: attribute values must be -1 or 1")
        files.append(parts[0])
        rows.append(vals)
    try:
        declared = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise DataError(f"{path}: first line must be the number of images") from None
    if declared != len(files):
        raise DataError(f"{path}: says {declared} images but lists {len(files)}")
    return files, names, np.asarray(rows, np.int8).reshape(len(files), len(names))


def celeba_labels(values: np.ndarray, names: list[str], attribute: str, where) -> tuple[np.ndarray, list[str]]:
    """One attribute: 0 = without, 1 = with. Several ("Smiling,Male"): the bits, attribute i adding 2**i."""
    attrs = [a.strip() for a in attribute.split(",") if a.strip()]
    lower = {n.lower(): i for i, n in enumerate(names)}
    missing = [a for a in attrs if a.lower() not in lower]
    if not attrs or missing:
        raise DataError(f"{where}: unknown CelebA attribute(s) {missing or attribute!r}; attributes: {', '.join(names)}")
    cols = [lower[a.lower()] for a in attrs]
    y = np.zeros(len(values), np.int64)
    for bit, c in enumerate(cols):
        y += (values[:, c] == 1).astype(np.int64) << bit
    canon = [names[c] for c in cols]
    class_names = ["+".join(f"{'' if k >> b & 1 else 'no '}{a}" for b, a in enumerate(canon))
                   for k in range(2 ** len(cols))]
    return y, class_names


def load_celeba(d: Path, split: str, attribute: str | None, size: int | None, channels: int | None):
    from PIL import Image, UnidentifiedImageError

    from core.images import ImageSpec, image_to_spec

    img_dir = _find(d, "img_align_celeba", "Img/img_align_celeba")
    attr_file = _find(d, "list_attr_celeba.txt", "Anno/list_attr_celeba.txt")
    if img_dir is None or attr_file is None:
        raise DataError(f"{d}: not a CelebA folder (needs img_align_celeba/ and list_attr_celeba.txt)")
    files, names, values = read_celeba_attributes(attr_file)
    part_file = _find(d, "list_eval_partition.txt", "Eval/list_eval_partition.txt")
    keep = np.ones(len(files), bool)
    if split != "all":
        if split not in _CELEBA_SPLITS:
            raise DataError(f"{d}: CelebA splits are train, valid, test and all, not {split!r}")
        if part_file is not None:
            part = {}
            for ln in part_file.read_text(errors="replace").splitlines():
                p = ln.split()
                if len(p) == 2 and p[1].isdigit():
                    part[p[0]] = int(p[1])
            keep = np.array([part.get(f, -1) == _CELEBA_SPLITS[split] for f in files])
        elif split != "train":
            raise DataError(f"{d}: no list_eval_partition.txt, so only the 'train' (all images) split exists")
    files = [f for f, k in zip(files, keep) if k]
    values = values[keep]
    if not files:
        raise DataError(f"{d}: no CelebA images in split {split!r}")
    y, class_names = (None, []) if attribute is None else celeba_labels(values, names, attribute, attr_file)

    size = size or CELEBA_DEFAULT_SIZE
    spec = ImageSpec(channels or 3, size, size)
    x = np.empty((len(files), spec.channels, size, size), np.uint8)
    for i, f in enumerate(files):
        p = img_dir / f
        try:
            with Image.open(p) as im:
                x[i] = image_to_spec(im, spec)
        except FileNotFoundError:
            raise DataError(f"{p}: listed in {attr_file.name} but missing") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{p}: cannot read image ({e})") from None
    return x, y, class_names
