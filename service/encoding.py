"""Encoding and decoding of images and arrays on the request path (numpy + Pillow only)."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np

from training.manifest import ImageSpec, prepare_array_batch, preprocess_image_bytes

_EPOCH = (1980, 1, 1, 0, 0, 0)


def png_bytes(img_chw_uint8: np.ndarray, compress_level: int = 1) -> bytes:
    from PIL import Image

    a = img_chw_uint8[0] if img_chw_uint8.shape[0] == 1 else img_chw_uint8.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def b64png(img_chw_uint8: np.ndarray) -> str:
    return base64.b64encode(png_bytes(img_chw_uint8)).decode("ascii")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """np.savez, but deterministic (fixed zip timestamps) so the same seed gives identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def zip_of_pngs(images: np.ndarray, modes: np.ndarray, labels: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, (img, m) in enumerate(zip(images, modes)):
            info = zipfile.ZipInfo(f"{i:05d}_mode{int(m)}.png", date_time=_EPOCH)
            zf.writestr(info, png_bytes(img))
    return buf.getvalue()


def decode_images(blobs: list[bytes], spec: ImageSpec) -> np.ndarray:
    """Encoded images -> float32 [N,C,H,W]; ValueError naming the bad one."""
    out = np.empty((len(blobs), spec.channels, spec.height, spec.width), np.float32)
    for i, b in enumerate(blobs):
        try:
            out[i] = preprocess_image_bytes(b, spec)
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
    return out


def load_array(data: bytes, spec: ImageSpec, key: str = "x") -> np.ndarray:
    """A .npy or .npz upload -> float32 [N,C,H,W] in model range; ValueError when unusable."""
    if not data:
        raise ValueError("empty array upload")
    try:
        bio = io.BytesIO(data)
        if data[:4] == b"PK\x03\x04":
            with np.load(bio, allow_pickle=False) as f:
                names = list(f.keys())
                if not names:
                    raise ValueError("npz holds no arrays")
                arr = f[key] if key in names else f[names[0]]
        else:
            arr = np.load(bio, allow_pickle=False)
    except ValueError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, pickle refusal ...
        raise ValueError(f"cannot read .npy/.npz data: {e}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError("upload is not an array")
    return np.ascontiguousarray(prepare_array_batch(arr, spec), dtype=np.float32)
