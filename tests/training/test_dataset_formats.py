"""Your own images and the colour data sets: image folders of any size/colour, CIFAR-10 / STL-10 binary, CelebA,
Colored-MNIST. Each distribution format is tested on a small file written here in its exact byte layout."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from PIL import Image

from core.data import PRESETS, default_data_root
from core.images import ImageSpec, arrays_to_spec, decode_image
from training.dataset import DataError, DataSpec, load_dataset, load_images
from training.dataset.colored import (colored_mnist_background_hue, colored_mnist_colors, colorize, hsv_to_rgb,
                                      hue_bins)
from training.dataset.formats import read_celeba_attributes
from training.dataset.load import spec_kwargs
from training.dataset.sources import folder_size

MNIST = default_data_root() / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="MNIST not present")


def save(path, a, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)


def gradient(h, w, rgb=True):
    g = (np.add.outer(np.arange(h) * 5, np.arange(w) * 3) % 256).astype(np.uint8)
    return np.stack([g, 255 - g, g // 2], -1) if rgb else g


# ------------------------------------------------------------------ image folders


def test_flat_folder_any_size_and_colour_is_unlabeled_and_resized(tmp_path):
    d = tmp_path / "mine"
    save(d / "a.png", gradient(40, 50))
    save(d / "b.jpg", gradient(70, 33))
    save(d / "c.png", gradient(64, 64, rgb=False))  # a grey one among colour ones: all become RGB
    save(d / "d.png", np.zeros((45, 45, 4), np.uint8))  # RGBA
    (d / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{d}")
    # mixed sizes: the largest standard size not above the median shorter side (40, 33, 64, 45 -> 42.5 -> 32)
    assert ds.y is None and ds.class_names == [] and ds.name == "mine"
    assert ds.x.shape == (4, 3, 32, 32) and ds.x.dtype == np.uint8
    # every image went through core/images.py's preprocessing, byte for byte what the service does to it
    for i, f in enumerate(sorted(p for p in d.iterdir() if p.suffix != ".txt")):
        np.testing.assert_array_equal(ds.x[i], decode_image(f.read_bytes(), ImageSpec(3, 32, 32), fast=False))


def test_folder_size_and_channels_asked(tmp_path):
    d = tmp_path / "f"
    for cls in ("cats", "dogs"):
        for i in range(3):
            save(d / cls / f"{i}.png", gradient(50 + i, 60))
    ds = load_dataset(f"folder:{d}", size=28, channels=1)
    assert ds.x.shape == (6, 1, 28, 28) and ds.class_names == ["cats", "dogs"] and list(ds.y) == [0] * 3 + [1] * 3
    np.testing.assert_array_equal(ds.x[4], decode_image((d / "dogs" / "1.png").read_bytes(), ImageSpec(1, 28, 28)))


def test_folder_default_size_rule():
    sizes = lambda *wh: {s: [f"{i}"] for i, s in enumerate(wh)}  # noqa: E731
    assert folder_size(sizes((36, 20))) == (20, 36)  # one common size divisible by 4: kept
    assert folder_size(sizes((30, 30))) == (28, 28)  # not divisible by 4
    assert folder_size(sizes((100, 120), (500, 400))) == (96, 96)
    assert folder_size(sizes((70, 90), (64, 80), (200, 300))) == (64, 64)
    assert folder_size(sizes((10, 12), (16, 16))) == (28, 28)  # small images are upsampled to the smallest


def test_folder_format_forces_a_folder_and_errors(tmp_path):
    d = tmp_path / "odd"
    save(d / "x.png", gradient(8, 8))
    (d / "train-notes-ubyte").write_bytes(b"")  # would look like an IDX directory
    assert load_images(d, format="folder")[0].shape == (1, 3, 8, 8)
    with pytest.raises(DataError, match="unknown data format"):
        load_images(d, format="tiff-stack")
    with pytest.raises(DataError, match="needs a directory"):
        load_images(d / "x.png", format="folder")
    assert spec_kwargs("folder:some/where") == {"path": "some/where", "format": "folder"}


def test_arrays_resize_through_the_same_path(tmp_path):
    x = np.stack([gradient(20, 20).transpose(2, 0, 1)] * 2)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1]))
    ds = load_dataset(str(tmp_path / "a.npz"), size=32, channels=1)
    assert ds.x.shape == (2, 1, 32, 32)
    buf = io.BytesIO()
    Image.fromarray(gradient(20, 20)).save(buf, format="PNG")
    np.testing.assert_array_equal(ds.x[0], decode_image(buf.getvalue(), ImageSpec(1, 32, 32)))
    assert arrays_to_spec(x, ImageSpec(3, 20, 20)) is x  # already fits: untouched


# ------------------------------------------------------------------ CIFAR-10 (binary version)


def cifar_record(label, r, g, b):
    return bytes([label]) + bytes([r]) * 1024 + bytes([g]) * 1024 + bytes([b]) * 1024


def write_cifar(d, batches=2, per=4):
    d.mkdir(parents=True)
    for k in range(1, batches + 1):
        recs = [cifar_record((k * per + i) % 10, 10 * i, 100 + k, 200) for i in range(per)]
        (d / f"data_batch_{k}.bin").write_bytes(b"".join(recs))
    img = np.arange(3 * 32 * 32, dtype=np.int64).reshape(3, 32, 32) % 251  # one asymmetric image
    test = bytes([6]) + img.astype(np.uint8).tobytes() + cifar_record(0, 1, 2, 3)
    (d / "test_batch.bin").write_bytes(test)
    (d / "batches.meta.txt").write_text("\n".join(PRESETS["cifar10"]["class_names"]) + "\n\n")
    return img.astype(np.uint8)


def test_cifar10_binary(tmp_path):
    img = write_cifar(tmp_path / "cifar-10-batches-bin")
    x, y, names = load_images(tmp_path / "cifar-10-batches-bin", "train")
    assert x.shape == (8, 3, 32, 32) and list(y) == [4, 5, 6, 7, 8, 9, 0, 1] and names[6] == "frog"
    assert x[1, 0, 5, 7] == 10 and x[1, 1].max() == 101 and x[5, 2].min() == 200  # R, G, B planes in order
    ds = load_dataset("cifar10", split="test", data_root=tmp_path)
    np.testing.assert_array_equal(ds.x[0], img)  # row-major 32x32 planes, red first
    assert list(ds.y) == [6, 0] and ds.class_names[0] == "airplane"
    assert load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-bin'}", split="test", size=64).x.shape == (2, 3, 64, 64)


def test_cifar10_airplane_frog_preset(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    labels = [0] * 6 + [6] * 14 + [3] * 5
    (d / "data_batch_1.bin").write_bytes(b"".join(cifar_record(c, c, c, c) for c in labels))
    ds = load_dataset("cifar10-airplane-frog-30-70", data_root=tmp_path)
    assert ds.class_names == ["airplane", "frog"] and np.bincount(ds.y).tolist() == [6, 14]  # 30:70 exactly


def test_cifar10_errors(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "data_batch_1.bin").write_bytes(cifar_record(1, 0, 0, 0)[:-1])
    with pytest.raises(DataError, match="not a multiple of the 3073-byte record"):
        load_images(d)
    (d / "data_batch_1.bin").write_bytes(cifar_record(12, 0, 0, 0))
    with pytest.raises(DataError, match="CIFAR-100"):
        load_images(d)
    with pytest.raises(DataError, match="no CIFAR-10 test batches"):
        load_images(d, "test")


# ------------------------------------------------------------------ STL-10 (binary)


def test_stl10_binary_column_major(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)  # [N, C, H, W]
    # the distribution's layout: each channel plane column-major (Fortran order)
    (d / "train_X.bin").write_bytes(b"".join(np.asfortranarray(p).tobytes(order="F") for im in imgs for p in im))
    (d / "train_y.bin").write_bytes(bytes([1, 10, 7]))
    (d / "unlabeled_X.bin").write_bytes(imgs[:2].transpose(0, 1, 3, 2).tobytes())
    ds = load_dataset("stl10", data_root=tmp_path)
    np.testing.assert_array_equal(ds.x, imgs)
    assert list(ds.y) == [0, 9, 6] and ds.class_names[9] == "truck"
    x, y, names = load_images(d, "unlabeled")
    assert y is None and names == [] and np.array_equal(x, imgs[:2])
    assert load_dataset(f"stl10:{d}", size=64).x.shape == (3, 3, 64, 64)
    (d / "train_y.bin").write_bytes(bytes([0, 1, 2]))
    with pytest.raises(DataError, match="labels must be 1..10"):
        load_images(d)
    (d / "train_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="not an STL-10 image file"):
        load_images(d)


# ------------------------------------------------------------------ CelebA


def write_celeba(d, n=6):
    names = ["5_o_Clock_Shadow", "Eyeglasses", "Smiling"]
    vals = [[1 if (i + j) % 3 == 0 else -1 for j in range(3)] for i in range(n)]
    lines = [str(n), " ".join(names)] + [f"{i + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in row)
                                         for i, row in enumerate(vals)]
    (d / "img_align_celeba").mkdir(parents=True)
    (d / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (d / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {0 if i < 4 else 2}\n" for i in range(n)))
    for i in range(n):
        a = np.full((218, 178, 3), (40 * i, 255 - 40 * i, 128), np.uint8)
        Image.fromarray(a).save(d / "img_align_celeba" / f"{i + 1:06d}.jpg", quality=95)
    return np.array(vals)


def test_celeba_attribute_as_label(tmp_path):
    vals = write_celeba(tmp_path / "celeba")
    ds = load_dataset("celeba:Eyeglasses", data_root=tmp_path)
    assert ds.x.shape == (4, 3, 64, 64)  # train partition, 178x218 squashed to the default 64x64
    assert list(ds.y) == list((vals[:4, 1] == 1).astype(int)) and ds.class_names == ["no Eyeglasses", "Eyeglasses"]
    assert abs(int(ds.x[2, 0].mean()) - 80) <= 3  # the JPEG's colour survives the resize
    test = load_dataset(f"celeba:smiling,Eyeglasses@{tmp_path / 'celeba'}", split="test", size=32)
    assert test.x.shape == (2, 3, 32, 32)
    assert list(test.y) == list((vals[4:, 2] == 1) + 2 * (vals[4:, 1] == 1))
    assert test.class_names == ["no Smiling+no Eyeglasses", "Smiling+no Eyeglasses",
                                "no Smiling+Eyeglasses", "Smiling+Eyeglasses"]
    x, y, _ = load_images(tmp_path / "celeba", "all")  # detected from its content; no attribute: unlabeled
    assert x.shape == (6, 3, 64, 64) and y is None
    with pytest.raises(DataError, match="unknown CelebA attribute.*Eyeglasses"):
        load_dataset("celeba:Glasses", data_root=tmp_path)


def test_celeba_presets_and_attribute_file_errors(tmp_path):
    write_celeba(tmp_path / "celeba", n=6)
    for name, attr, ratios in (("celeba-eyeglasses", "Eyeglasses", [0.93, 0.07]), ("celeba-smiling", "Smiling", [0.3, 0.7])):
        spec = DataSpec(**PRESETS[name])
        assert (spec.format, spec.attribute, spec.ratios) == ("celeba", attr, ratios)
    # 2 smiling of 6: the largest set near 30:70 is 2 images (the subsetting rounds 0.6 : 1.4 to 1 : 1)
    ds = load_dataset("celeba-smiling", split="all", data_root=tmp_path)
    assert ds.class_names == ["no Smiling", "Smiling"] and np.bincount(ds.y).tolist() == [1, 1]
    bad = tmp_path / "bad.txt"
    bad.write_text("3\nA B\n1.jpg 1 -1\n2.jpg 1\n")
    with pytest.raises(DataError, match=r"bad.txt:4: 1 values for 2 attributes"):
        read_celeba_attributes(bad)
    bad.write_text("3\nA B\n1.jpg 1 -1\n")
    with pytest.raises(DataError, match="says 3 images but lists 1"):
        read_celeba_attributes(bad)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg: listed in list_attr_celeba.txt but missing"):
        load_dataset("celeba:Smiling", data_root=tmp_path)


# ------------------------------------------------------------------ Colored-MNIST


def test_hsv_to_rgb_matches_colorsys():
    hsv = np.random.default_rng(0).random((200, 3))
    want = np.array([colorsys.hsv_to_rgb(*row) for row in hsv])
    np.testing.assert_allclose(hsv_to_rgb(hsv), want, atol=1e-12)


def test_colour_draws_are_per_image_and_in_range():
    fg, bg = colored_mnist_colors(1000, "train")
    fg5, bg5 = colored_mnist_colors(5, "train")
    np.testing.assert_array_equal(fg[:5], fg5)  # image i's colour does not depend on how many are read
    assert fg[:, 1].min() >= 0.6 and fg[:, 2].min() >= 0.7 and bg[:, 1].min() >= 0.6 and bg[:, 2].max() <= 0.35
    assert 0 <= bg[:, 0].min() and bg[:, 0].max() < 1 and abs(bg[:, 0].mean() - 0.5) < 0.05
    assert not np.allclose(colored_mnist_colors(5, "test")[1], bg5)  # the splits draw separately
    assert list(hue_bins(np.array([0.0, 0.099, 0.1, 0.95, 0.9999]))) == [0, 0, 1, 9, 9]


def test_colorize_formula():
    x = np.zeros((2, 1, 28, 28), np.uint8)
    x[:, 0, 10:20, 10:20] = 255
    x[1, 0, 5, 5] = 128
    rgb, extras = colorize(x, "test")
    fg, bg = colored_mnist_colors(2, "test")
    fg_rgb, bg_rgb = np.rint(hsv_to_rgb(fg) * 255), np.rint(hsv_to_rgb(bg) * 255)
    assert rgb.shape == (2, 3, 32, 32) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :, 0, 0], bg_rgb)  # padding and empty pixels: the background
    np.testing.assert_array_equal(rgb[:, :, 15, 15], fg_rgb)  # 10:20 shifted by the 2-pixel pad
    mix = 128 / 255 * hsv_to_rgb(fg[1:]) + (1 - 128 / 255) * hsv_to_rgb(bg[1:])
    np.testing.assert_allclose(rgb[1, :, 7, 7], np.rint(mix[0] * 255), atol=1)
    np.testing.assert_allclose(extras["bg_hue"], bg[:, 0], rtol=1e-6)


@needs_mnist
def test_colored_mnist_preset_deterministic_and_colour_independent_of_digit():
    from sklearn.metrics import normalized_mutual_info_score

    a = load_dataset("colored-mnist", split="test")
    b = load_dataset("colored-mnist", split="test")
    assert a.x.shape == (10000, 3, 32, 32) and a.x.dtype == np.uint8 and a.class_names[3] == "3"
    assert a.x.tobytes() == b.x.tobytes()  # same bytes twice
    grey = load_dataset("mnist", split="test")
    np.testing.assert_array_equal(a.y, grey.y)  # test split -> test split, file order
    hue = colored_mnist_background_hue("test")
    np.testing.assert_allclose(a.extras["bg_hue"], hue, rtol=1e-6)
    # colour carries no information about the digit: NMI(digit, hue bin) ~ 0, per-digit mean hue ~ 0.5
    assert normalized_mutual_info_score(a.y, hue_bins(hue)) < 0.005
    assert all(abs(hue[a.y == k].mean() - 0.5) < 0.05 for k in range(10))
    # subsetting keeps each image's own colour beside it
    sub = load_dataset(DataSpec(**PRESETS["colored-mnist"], split="test", max_samples=300, seed=3))
    rows = [int(np.flatnonzero((a.x == im).all(axis=(1, 2, 3)))[0]) for im in sub.x[:5]]
    np.testing.assert_allclose(sub.extras["bg_hue"][:5], hue[rows], rtol=1e-6)
    assert len(sub.subset(np.arange(7)).extras["fg_hue"]) == 7


@needs_mnist
def test_colored_mnist_train_split_is_mnist_train():
    ds = load_dataset(DataSpec(**PRESETS["colored-mnist"], max_samples=50, seed=0))
    assert ds.x.shape == (50, 3, 32, 32) and set(np.unique(ds.y)) == set(range(10))
    assert ds.extras["bg_hue"].shape == (50,)
