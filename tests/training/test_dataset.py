"""Tests for training.dataset: real MNIST loading, presets, other sources, every error path."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.dataset import (
    PRESETS,
    BatchIterator,
    DataError,
    DataSpec,
    ImageDataset,
    fake_dataset,
    labeled_indices,
    load_dataset,
    load_images,
    read_idx,
)

from core.data import DATA_HINT, default_data_root

REPO = Path(__file__).resolve().parents[2]
DATA = default_data_root()  # $NEMGAN_DATA_DIR, else ../shared/data: the project's own resolution
MNIST = DATA / "mnist"
FMNIST = DATA / "fashion-mnist"

needs_mnist = pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte.gz").is_file(), reason=f"MNIST not found under {DATA}: {DATA_HINT}"
)


# ------------------------------------------------------------------ helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array as IDX (big-endian) so tests can write their own files."""
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    arr = np.asarray(arr)
    be = arr.astype(arr.dtype.newbyteorder(">"))
    header = bytes([0, 0, codes[be.dtype], arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape
    )
    return header + be.tobytes()


def write_idx_dir(root: Path, x: np.ndarray, y: np.ndarray | None, split="train", gz=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    prefix = "t10k" if split == "test" else split
    ext = ".gz" if gz else ""
    opener = gzip.compress if gz else (lambda b: b)
    (root / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(opener(idx_bytes(x)))
    if y is not None:
        (root / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(opener(idx_bytes(y.astype(np.uint8))))
    return root


def small_npz(tmp_path: Path, n_per_class=(5, 5, 5), name="small.npz") -> Path:
    y = np.concatenate([np.full(m, k) for k, m in enumerate(n_per_class)]).astype(np.int64)
    x = np.random.default_rng(0).integers(0, 256, (len(y), 8, 8), dtype=np.uint8)
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


def write_png(path: Path, size=(8, 8), mode="L", value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


@pytest.fixture(scope="module")
def mnist_train():
    return load_images(MNIST, "train")


# ------------------------------------------------------------------ real data


@needs_mnist
def test_mnist_train_shapes_labels_and_pixel_mean(mnist_train):
    x, y, names = mnist_train
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert names == [str(d) for d in range(10)]
    assert x.mean() == pytest.approx(33.318, abs=1e-3)
    assert x.flags.writeable  # callers may modify in place


@needs_mnist
def test_mnist_test_split_maps_to_t10k():
    ds = load_dataset("mnist", split="test")
    assert len(ds) == 10000 and ds.image_shape == (1, 28, 28)
    assert set(np.unique(ds.y)) == set(range(10))
    assert ds.spec.split == "test"


@needs_mnist
def test_fashion_mnist_alias_and_names():
    ds = load_dataset("fmnist", split="test")
    assert len(ds) == 10000 and ds.n_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    np.testing.assert_allclose(ds.priors, 0.1)


@needs_mnist
def test_presets_exist():
    for name in ["mnist", "fashion-mnist", "fmnist", "mnist-2-50-50", "mnist-2-70-30",
                 "mnist-2-90-10", "mnist-2-04-70-30", "mnist-2-04-90-10", "mnist-5", "fmnist-5"]:
        assert name in PRESETS
        DataSpec(**PRESETS[name])  # presets are plain DataSpec kwargs


@needs_mnist
@pytest.mark.parametrize(
    "preset,classes,ratios",
    [("mnist-2-50-50", ["3", "5"], (0.5, 0.5)),
     ("mnist-2-70-30", ["3", "5"], (0.7, 0.3)),
     ("mnist-2-90-10", ["3", "5"], (0.9, 0.1)),
     ("mnist-2-04-70-30", ["0", "4"], (0.7, 0.3)),
     ("mnist-2-04-90-10", ["0", "4"], (0.9, 0.1))],
)
def test_imbalance_presets_exact(preset, classes, ratios, mnist_train):
    ds = load_dataset(preset)
    assert ds.class_names == classes and ds.n_classes == 2
    counts = np.bincount(ds.y, minlength=2)
    n = counts.sum()
    for k in range(2):
        assert abs(counts[k] - ratios[k] * n) <= 1  # exact up to rounding
    # Largest possible N: the limiting class is used in full.
    _, y_all, _ = mnist_train
    avail = np.array([np.sum(y_all == int(c)) for c in classes])
    assert np.any(counts == avail)
    # The kept images are the original ones for those labels.
    assert set(np.unique(ds.y)) == {0, 1}


@needs_mnist
def test_imbalance_deterministic_with_seed():
    a = load_dataset(DataSpec(path="mnist", classes=[3, 5], ratios=[0.7, 0.3], seed=1))
    b = load_dataset(DataSpec(path="mnist", classes=[3, 5], ratios=[0.7, 0.3], seed=1))
    c = load_dataset(DataSpec(path="mnist", classes=[3, 5], ratios=[0.7, 0.3], seed=2))
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


@needs_mnist
def test_mnist5_groups_priors_match_natural_frequencies(mnist_train):
    ds = load_dataset("mnist-5")
    assert ds.class_names == ["3+5+8", "2", "1+4+7+9", "6", "0"]
    _, y, _ = mnist_train
    freq = np.bincount(y, minlength=10) / len(y)
    expected = [freq[[3, 5, 8]].sum(), freq[2], freq[[1, 4, 7, 9]].sum(), freq[6], freq[0]]
    np.testing.assert_allclose(ds.priors, expected, atol=1e-12)
    assert ds.priors.dtype == np.float64 and ds.priors.sum() == pytest.approx(1.0)


@needs_mnist
def test_fmnist5_group_names():
    ds = load_dataset("fmnist-5", split="test")
    assert ds.class_names == ["Sandal+Sneaker+Ankle boot", "Bag", "T-shirt/top+Dress",
                              "Pullover+Coat+Shirt", "Trouser"]
    np.testing.assert_allclose(ds.priors, [0.3, 0.1, 0.2, 0.3, 0.1])


@needs_mnist
def test_max_samples_is_stratified():
    ds = load_dataset(DataSpec(path="mnist", classes=[3, 5], ratios=[0.9, 0.1], max_samples=100))
    assert len(ds) == 100
    assert list(np.bincount(ds.y)) == [90, 10]


def test_data_root_and_env(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "toy", np.zeros((4, 5, 5), np.uint8), np.array([0, 1, 0, 1]))
    assert len(load_dataset("toy", data_root=tmp_path)) == 4
    monkeypatch.setenv("NEMGAN_DATA_DIR", str(tmp_path))
    ds = load_dataset(DataSpec(path="toy", classes=[1]))
    assert len(ds) == 2 and ds.class_names == ["1"] and ds.name == "toy"


# ------------------------------------------------------------------ other sources


def test_read_idx_plain_and_gzip_detected_by_magic(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr))
    (tmp_path / "b.idx").write_bytes(gzip.compress(idx_bytes(arr)))  # gzip without .gz name
    for name in ("a.idx", "b.idx"):
        out = read_idx(tmp_path / name)
        np.testing.assert_array_equal(out, arr)
        assert out.dtype.byteorder in ("=", "|", "<")


def test_idx_directory_ungzipped_and_unlabeled(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 7, 9), dtype=np.uint8)
    write_idx_dir(tmp_path / "d", x, np.array([0, 1, 2, 0, 1, 2]), split="test", gz=False)
    xs, ys, names = load_images(tmp_path / "d", "test")
    assert xs.shape == (6, 1, 7, 9) and list(ys) == [0, 1, 2, 0, 1, 2] and names == ["0", "1", "2"]
    write_idx_dir(tmp_path / "u", x, None)
    xs, ys, names = load_images(tmp_path / "u")
    assert ys is None and names == []


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (4, 3, 10, 12), dtype=np.uint8)  # NCHW reference
    if layout == "nhw":
        base = base[:, :1]
        arr = base[:, 0]
    elif layout == "nhwc":
        arr = base.transpose(0, 2, 3, 1)
    elif layout == "nchw":
        arr = base
    else:
        arr = base.transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    np.savez(tmp_path / "d.npz", images=arr, labels=np.array([1, 0, 1, 0]))
    x, y, names = load_images(tmp_path / "d.npz")
    np.testing.assert_array_equal(x, base)
    assert y.dtype == np.int64 and list(y) == [1, 0, 1, 0] and names == ["0", "1"]


def test_npz_without_labels_and_npy(tmp_path):
    x = np.zeros((3, 5, 5), np.uint8)
    np.savez(tmp_path / "nolab.npz", x=x)
    assert load_images(tmp_path / "nolab.npz")[1] is None
    np.save(tmp_path / "imgs.npy", x)
    xs, ys, names = load_images(tmp_path / "imgs.npy")
    assert xs.shape == (3, 1, 5, 5) and ys is None and names == []
    ds = load_dataset(str(tmp_path / "imgs.npy"))
    assert ds.y is None and ds.name == "imgs"
    with pytest.raises(DataError, match="no labels"):
        ds.priors


def test_image_folder_grey(tmp_path):
    for cls, n in (("cat", 2), ("ant", 3)):
        for i in range(n):
            write_png(tmp_path / "imgs" / cls / f"{i}.png", value=10 * i)
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("ignored")
    x, y, names = load_images(tmp_path / "imgs")
    assert names == ["ant", "cat"]  # sorted folder names
    assert x.shape == (5, 1, 8, 8) and list(y) == [0, 0, 0, 1, 1]
    assert x[1, 0, 0, 0] == 10


def test_image_folder_rgb_when_any_colour_and_split_subfolder(tmp_path):
    write_png(tmp_path / "f" / "train" / "a" / "0.png", mode="L", value=50)
    write_png(tmp_path / "f" / "train" / "b" / "0.jpg", mode="RGB", value=200)
    x, y, names = load_images(tmp_path / "f", "train")
    assert x.shape == (2, 3, 8, 8) and names == ["a", "b"]
    assert np.all(x[0] == 50)  # grey converted to RGB keeps its value in all channels


def test_labeled_indices_stratified():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = labeled_indices(y, fraction=0.1, seed=3)
    assert len(idx) == 20 and np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    assert list(np.bincount(y[idx])) == [10, 5, 3, 2]
    np.testing.assert_array_equal(idx, labeled_indices(y, fraction=0.1, seed=3))
    # Tiny budgets still give every class one label.
    idx = labeled_indices(y, count=4)
    assert list(np.bincount(y[idx])) == [1, 1, 1, 1]
    idx = labeled_indices(y, fraction=0.001)
    assert list(np.bincount(y[idx])) == [1, 1, 1, 1]
    idx = labeled_indices(y, count=7, per_class=False, seed=1)
    assert len(idx) == 7 and len(set(idx)) == 7
    assert len(labeled_indices(y, fraction=1.0)) == len(y)


def test_fake_dataset_and_subset():
    ds = fake_dataset(n=60, n_classes=3, shape=(3, 16, 16), seed=1)
    assert ds.x.shape == (60, 3, 16, 16) and ds.x.dtype == np.uint8
    np.testing.assert_allclose(ds.priors, 1 / 3)
    # Class-dependent structure: per-class mean images differ clearly.
    means = [ds.x[ds.y == k].mean(0) for k in range(3)]
    assert np.abs(means[0] - means[1]).mean() > 5
    np.testing.assert_array_equal(fake_dataset(n=60, n_classes=3, shape=(3, 16, 16), seed=1).x, ds.x)
    sub = ds.subset(np.arange(10))
    assert isinstance(sub, ImageDataset) and len(sub.x) == 10 and sub.n_classes == 3
    assert ds.subset(ds.y == 2).priors[2] == 1.0


def test_module_imports_without_torch():
    code = "import sys, training.dataset; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ------------------------------------------------------------------ batching


def test_batch_iterator_covers_each_epoch_and_resumes_exactly():
    it = BatchIterator(10, 4, seed=7)
    first = np.concatenate([next(it) for _ in range(5)])  # 20 indices = 2 epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert not np.array_equal(first[:10], first[10:])  # reshuffled each epoch
    assert it.epoch == 1

    state = json.loads(json.dumps(it.state_dict()))  # survives JSON checkpoints
    expected = [next(it) for _ in range(6)]
    resumed = BatchIterator(10, 4, seed=0)
    resumed.load_state_dict(state)
    for e in expected:
        np.testing.assert_array_equal(next(resumed), e)
    assert resumed.epoch == it.epoch

    with pytest.raises(DataError, match="batch_size=4"):
        BatchIterator(10, 5).load_state_dict(state)


# ------------------------------------------------------------------ errors


def test_error_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "nope")
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="NEMGAN_DATA_DIR"):
        load_dataset("not-a-preset", data_root=tmp_path)


def test_error_missing_split_file(tmp_path):
    write_idx_dir(tmp_path, np.zeros((2, 4, 4), np.uint8), np.array([0, 1]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_images(tmp_path, "test")


def test_error_truncated_idx(tmp_path):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "t.idx").write_bytes(data[:-5])
    with pytest.raises(DataError, match=r"t\.idx.*truncated"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "h.idx").write_bytes(data[:9])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "h.idx")
    (tmp_path / "x.idx").write_bytes(data + b"junk")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(tmp_path / "x.idx")


def test_error_wrong_magic_and_type(tmp_path):
    (tmp_path / "m.idx").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"m\.idx.*bad magic"):
        read_idx(tmp_path / "m.idx")
    (tmp_path / "c.idx").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="data type code 0x07"):
        read_idx(tmp_path / "c.idx")


def test_error_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((50, 4, 4), np.uint8)))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(good[:10] + b"\xff" * 20 + good[30:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*corrupt gzip"):
        load_images(tmp_path)
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


def test_error_label_count_mismatch(tmp_path):
    write_idx_dir(tmp_path, np.zeros((3, 4, 4), np.uint8), np.array([0, 1]))
    with pytest.raises(DataError, match=r"labels-idx1.*\[3\]"):
        load_images(tmp_path)


def test_error_npz_without_x_and_bad_values(tmp_path):
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    with pytest.raises(DataError, match=r"bad\.npz.*no 'x' or 'images'.*foo"):
        load_images(tmp_path / "bad.npz")
    np.savez(tmp_path / "range.npz", x=np.full((2, 5, 5), 2.0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_images(tmp_path / "range.npz")
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="3 or 4 dimensions"):
        load_images(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz.*cannot read"):
        load_images(tmp_path / "junk.npz")
    (tmp_path / "what.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="unsupported data file"):
        load_images(tmp_path / "what.csv")


def test_mixed_image_sizes_are_resized_to_one(tmp_path):
    # Mixed sizes used to be refused; now every image is resized to one model size (test_dataset_formats.py).
    write_png(tmp_path / "a" / "0.png", size=(8, 8))
    write_png(tmp_path / "a" / "1.png", size=(8, 8))
    write_png(tmp_path / "b" / "odd.png", size=(9, 7), value=90)
    x, y, names = load_images(tmp_path)
    assert x.shape == (3, 1, 28, 28) and list(y) == [0, 0, 1] and np.all(x[2] == 90)
    assert load_images(tmp_path, size=8)[0].shape == (3, 1, 8, 8)


def test_error_unreadable_image(tmp_path):
    write_png(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"broken\.png.*cannot read image"):
        load_images(tmp_path)


def test_error_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_images(tmp_path / "empty")
    write_png(tmp_path / "f" / "a" / "0.png")
    (tmp_path / "f" / "b").mkdir()
    with pytest.raises(DataError, match=r"b: class folder contains no image"):
        load_images(tmp_path / "f")


def test_error_classes_not_present(tmp_path):
    path = small_npz(tmp_path)
    with pytest.raises(DataError, match=r"\[7\] not present.*\[0, 1, 2\]"):
        load_dataset(DataSpec(path=str(path), classes=[1, 7]))
    with pytest.raises(DataError, match="not present"):
        load_dataset(DataSpec(path=str(path), groups=[[0, 9], [1]]))
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="need labels"):
        load_dataset(DataSpec(path=str(tmp_path / "x.npy"), classes=[0]))


def test_error_ratios(tmp_path):
    path = str(small_npz(tmp_path))
    with pytest.raises(DataError, match="ratios has 3 entries but there are 2"):
        load_dataset(DataSpec(path=path, classes=[0, 1], ratios=[0.5, 0.3, 0.2]))
    with pytest.raises(DataError, match="positive"):
        load_dataset(DataSpec(path=path, classes=[0, 1], ratios=[0.7, -0.3]))
    with pytest.raises(DataError, match="max_samples"):
        load_dataset(DataSpec(path=path, max_samples=0))


def test_grouping_and_classes_on_small_data(tmp_path):
    path = str(small_npz(tmp_path, n_per_class=(4, 6, 10)))
    ds = load_dataset(DataSpec(path=path, classes=[2, 0]))
    assert ds.class_names == ["2", "0"] and list(np.bincount(ds.y)) == [10, 4]
    ds = load_dataset(DataSpec(path=path, groups=[[0, 2], [1]], ratios=[1, 1]))
    assert ds.class_names == ["0+2", "1"] and list(np.bincount(ds.y)) == [6, 6]


def test_error_labeled_indices_bad_values():
    y = np.array([0, 0, 1, 1, 2, 2])
    for frac in (0, -0.1, 1.5):
        with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
            labeled_indices(y, fraction=frac)
    with pytest.raises(DataError, match="exactly one"):
        labeled_indices(y)
    with pytest.raises(DataError, match="exactly one"):
        labeled_indices(y, fraction=0.5, count=2)
    with pytest.raises(DataError, match="count must be"):
        labeled_indices(y, count=99)
    with pytest.raises(DataError, match="cannot cover all 3 classes"):
        labeled_indices(y, count=2)
    with pytest.raises(DataError, match="y is None"):
        labeled_indices(None, fraction=0.5)
