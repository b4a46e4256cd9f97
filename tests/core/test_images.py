"""core.images: the one preprocessing path (scaling both ways, decoding, the PNG fast path's fallbacks)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.images import (ImageSpec, U8_TO_MODEL, decode_image, decode_images, model_to_uint8, prepare_array_batch,
                         uint8_to_model)


def png(a: np.ndarray, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode).save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_scaling_round_trip_and_lookup_table():
    x = np.arange(256, dtype=np.uint8)
    f = uint8_to_model(x)
    assert f.dtype == np.float32 and f.min() == -1.0 and f.max() == 1.0
    # the lookup table holds exactly the documented formula's values, for uint8 and for other integer input
    np.testing.assert_array_equal(f, x.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    np.testing.assert_array_equal(uint8_to_model(x.astype(np.int64)), f)
    np.testing.assert_array_equal(model_to_uint8(f), x)
    np.testing.assert_array_equal(model_to_uint8(np.array([-3.0, 2.0])), [0, 255])
    with pytest.raises(ValueError):
        U8_TO_MODEL[0] = 0  # shared by every request: read-only


def test_decode_image_grey_rgb_resize():
    g = (np.add.outer(np.arange(40), np.arange(30)) * 3).astype(np.uint8)  # 40 high, 30 wide
    rgb = np.stack([g, 255 - g, g // 2], -1)
    for blob in (png(g), png(rgb)):
        grey = decode_image(blob, ImageSpec(1, 28, 28))
        colour = decode_image(blob, ImageSpec(3, 20, 24))
        assert grey.shape == (1, 28, 28) and grey.dtype == np.uint8
        assert colour.shape == (3, 20, 24)
        ref = Image.open(io.BytesIO(blob)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(grey[0], np.asarray(ref))
        np.testing.assert_array_equal(decode_image(blob, ImageSpec(1, 28, 28), fast=False), grey)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    assert decode_image(jpeg.getvalue(), ImageSpec(1, 28, 28)).shape == (1, 28, 28)
    for bad, msg in ((b"", "empty image"), (b"not an image", "cannot decode"), (png(g)[:50], "cannot decode")):
        with pytest.raises(ValueError, match=msg):
            decode_image(bad, ImageSpec(1, 28, 28))


def test_batched_png_path_falls_back_without_private_pillow_api(monkeypatch):
    """decode_png_batch uses PIL.Image._getdecoder; a Pillow without it must give the same pixels."""
    rng = np.random.default_rng(0)
    blobs = [png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(5)]
    spec = ImageSpec(1, 28, 28)
    fast = decode_images(blobs, spec)
    ref = np.stack([uint8_to_model(decode_image(b, spec, fast=False)) for b in blobs])
    np.testing.assert_array_equal(fast, ref)
    import core.png

    calls = []
    real = Image._getdecoder
    monkeypatch.setattr(Image, "_getdecoder", lambda *a: calls.append(a) or real(*a))
    np.testing.assert_array_equal(decode_images(blobs, spec), ref)
    assert len(calls) == 5  # the batched path really ran
    monkeypatch.setattr(core.png, "_pillow_getdecoder", lambda: None)  # a Pillow without it
    assert core.png.decode_png_batch(blobs, "L", 28, 28, 1) is None
    np.testing.assert_array_equal(decode_images(blobs, spec), ref)

    def changed(*a):
        raise TypeError("signature changed")

    monkeypatch.setattr(core.png, "_pillow_getdecoder", lambda: changed)  # a Pillow whose internals changed
    assert core.png.decode_png_batch(blobs, "L", 28, 28, 1) is None
    np.testing.assert_array_equal(decode_images(blobs, spec), ref)


def test_prepare_array_batch_layouts_and_ranges():
    spec = ImageSpec(1, 4, 4)
    u8 = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    want = uint8_to_model(u8)[:, None]
    for arr in (u8, u8[:, None], u8[..., None], u8.astype(np.int32)):
        np.testing.assert_array_equal(prepare_array_batch(arr, spec), want)
    np.testing.assert_array_equal(prepare_array_batch(want, spec, (-1, 1)), want)  # floats: stated range
    for bad, msg in ((u8.astype(np.int32) + 250, "0..255"), (want, "without input_range"),
                     (np.zeros((2, 5, 5)), "does not match"), (np.array([[None]]), "not numeric")):
        with pytest.raises(ValueError, match=msg):
            prepare_array_batch(bad, spec)
