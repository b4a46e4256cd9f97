"""Training-set uploads for prior learning, validated in the API (torch-free) and stored as .npz.

Labeled: a .zip with one folder per class (folder name = a mode label or a mode index; any nesting
above the class folders is fine) or an .npz with `x` (images) and `y` (mode indices).
Unlabeled: the same forms (labels ignored) or an .npy.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

import numpy as np

from core.errors import TooLarge
from core.images import decode_image, model_to_uint8, prepare_array_batch
from core.manifest import Manifest
from core.npy import read_arrays

MAX_IMAGE_FILE_BYTES = 32 << 20  # per image file in a zip; larger ones would be over the pixel cap anyway
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class UploadError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _mode_of(folder: str, m: Manifest) -> int:
    labels = m.mode_labels
    if folder in labels:
        return labels.index(folder)
    if folder.isdigit() and int(folder) < m.n_modes:
        return int(folder)
    raise UploadError(f"folder {folder!r} is not a mode label ({labels}) nor a mode index 0..{m.n_modes - 1}", 422)


def _src(data):
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _zip(data, m: Manifest, labeled: bool, max_images: int, max_bytes: int):
    try:
        zf = zipfile.ZipFile(_src(data))
    except zipfile.BadZipFile as e:
        raise UploadError(f"not a valid zip file: {e}") from None
    infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(IMAGE_EXT)
             and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(i.filename).parts)]
    if not infos:
        raise UploadError("the zip holds no images")
    if len(infos) > max_images:
        raise UploadError(f"too many images in the zip: {len(infos)} > {max_images}", 413)
    # Declared sizes, before anything is inflated (zipfile never inflates past a member's file_size).
    for info in infos:
        if info.file_size > MAX_IMAGE_FILE_BYTES:
            raise UploadError(f"{info.filename}: {info.file_size} bytes unpacked is over the cap of "
                              f"{MAX_IMAGE_FILE_BYTES} bytes per image", 413)
    if sum(i.file_size for i in infos) > max_bytes:
        raise UploadError(f"the zip's uncompressed size is over the upload cap of {max_bytes} bytes", 413)
    spec = m.image
    xs, ys = [], []
    for info in infos:
        if labeled:
            parts = PurePosixPath(info.filename).parts
            if len(parts) < 2:
                raise UploadError(f"{info.filename}: images must sit in one folder per class", 422)
            ys.append(_mode_of(parts[-2], m))
        try:
            xs.append(decode_image(zf.read(info), spec))  # its declared pixel count is checked first
        except TooLarge as e:
            raise UploadError(f"{info.filename}: {e}", 413) from None
        except ValueError as e:
            raise UploadError(f"{info.filename}: {e}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UploadError(f"{info.filename}: cannot read from the zip: {e}") from None
    x = np.stack(xs)
    return x, (np.asarray(ys, np.int64) if labeled else None)


CHUNK_ROWS = 1024  # rows converted at a time: the float copy of a large upload never exists whole


def _arrays(data, m: Manifest, labeled: bool, max_images: int):
    spec = m.image
    try:  # shapes, dtypes (no pickles) and declared sizes checked before anything is unpacked
        arrays = read_arrays(data, max_images, spec.channels * spec.height * spec.width, keys=("", "x", "y"))
    except TooLarge as e:
        raise UploadError(str(e), 413) from None
    except ValueError as e:
        raise UploadError(f"cannot read .npz/.npy data: {e}") from None
    if "" in arrays:  # an .npy
        if labeled:
            raise UploadError("a labeled set needs an .npz with x and y (or a zip of class folders)")
        x, y = arrays[""], None
    else:
        if "x" not in arrays:
            raise UploadError("the .npz needs an array 'x'")
        x, y = arrays["x"], arrays.get("y")
        if labeled and y is None:
            raise UploadError("the labeled .npz needs an array 'y' of mode indices")
    if len(x) > max_images:
        raise UploadError(f"too many images: {len(x)} > {max_images}", 413)
    try:
        x8 = None
        for i in range(0, len(x), CHUNK_ROWS):
            part = model_to_uint8(prepare_array_batch(x[i:i + CHUNK_ROWS], m.image))
            if x8 is None:
                x8 = np.empty((len(x), *part.shape[1:]), np.uint8)
            x8[i:i + len(part)] = part
        if x8 is None:
            x8 = np.zeros((0,), np.uint8)
    except ValueError as e:
        raise UploadError(str(e)) from None
    if len(x8) == 0:
        raise UploadError("the set is empty")
    if not labeled:
        return x8, None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x8):
        raise UploadError(f"y must be a 1-d array of {len(x8)} labels, got shape {tuple(y.shape)}", 422)
    if not np.issubdtype(y.dtype, np.integer):
        raise UploadError(f"y must hold integer mode indices, got {y.dtype}", 422)
    if y.min() < 0 or y.max() >= m.n_modes:
        raise UploadError(f"labels must be mode indices 0..{m.n_modes - 1}", 422)
    return x8, y.astype(np.int64)


def parse_set(data, filename: str | None, m: Manifest, labeled: bool, max_images: int = 100_000,
              max_bytes: int = 256 << 20, max_stored: int | None = None):
    """A training-set upload (bytes, or a seekable file such as an upload spooled to disk) -> (x uint8 NCHW,
    y int64 or None); UploadError (with its HTTP status) when unusable. Nothing is unpacked before its
    declared size was checked: max_images images, `max_stored` bytes of stored uint8 pixels (the per-job cap:
    a small deflated .npz declaring a huge array is refused from its header), max_bytes of unpacked zip,
    MAX_IMAGE_FILE_BYTES per zipped image, core.images.MAX_PIXELS per image."""
    spec = m.image
    if max_stored is not None:
        rows = max_stored // (spec.channels * spec.height * spec.width)
        if rows < 1:
            raise UploadError(f"no room left under the per-job cap of stored pixels ({max_stored} bytes)", 413)
        max_images = min(max_images, rows)
    if isinstance(data, (bytes, bytearray, memoryview)):
        head = bytes(data[:6])
    else:
        data.seek(0)
        head = data.read(6)
        data.seek(0)
    if not head:
        raise UploadError(f"the {'labeled' if labeled else 'unlabeled'} upload is empty")
    if head[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(_src(data)).namelist()
        except zipfile.BadZipFile as e:
            raise UploadError(f"not a valid zip file: {e}") from None
        if names and all(n.endswith(".npy") for n in names):  # an .npz
            return _arrays(data, m, labeled, max_images)
        return _zip(data, m, labeled, max_images, max_bytes)
    if head == b"\x93NUMPY":
        return _arrays(data, m, labeled, max_images)
    raise UploadError(f"{filename or 'upload'}: expected a .zip of class folders, an .npz or an .npy")
