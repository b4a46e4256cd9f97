"""benchmarks/make_prior_example.py: the documented prior-learning example files hold what the README says
(keys, shapes, dtypes, mode indices, the unlabeled class mix), and the API's upload parser accepts them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from make_prior_example import main, make_example  # noqa: E402

MODEL = REPO / "models" / "mnist"


@pytest.fixture(scope="module")
def example(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("example")
    return make_example(MODEL, "mnist", out, per_class=10, n_unlabeled=4000, data_root=data_root), out


def test_files_hold_what_the_readme_says(example):
    info, out = example
    lab, unl = np.load(out / "few_labels.npz"), np.load(out / "unlabeled.npz")
    assert sorted(lab.files) == ["x", "y"] and unl.files == ["x"]
    assert lab["x"].dtype == np.uint8 and lab["x"].shape == (100, 28, 28)
    assert lab["y"].dtype == np.int64 and lab["y"].shape == (100,)
    assert np.bincount(lab["y"], minlength=10).tolist() == [10] * 10
    assert unl["x"].dtype == np.uint8 and unl["x"].shape == (4000, 28, 28)
    # MNIST polarity: light digits on a dark background (the border is background)
    assert lab["x"][:, 0, :].mean() < 10 and lab["x"].max() == 255
    assert info["unlabeled_true_priors"] == [0.15] * 5 + [0.05] * 5
    assert info["mode_labels"] == [str(d) for d in range(10)]
    # labeled and unlabeled images are different images
    lab_rows = {r.tobytes() for r in lab["x"]}
    assert not any(r.tobytes() in lab_rows for r in unl["x"])


def test_labels_are_the_model_mode_indices(example, data_root):
    from training.dataset import load_dataset

    _info, out = example
    lab = np.load(out / "few_labels.npz")
    test = load_dataset("mnist", split="test", data_root=data_root)
    by_image = {test.x[i, 0].tobytes(): int(test.y[i]) for i in range(len(test.x))}
    assert [by_image[r.tobytes()] for r in lab["x"]] == lab["y"].tolist()  # models/mnist: mode i = digit i


def test_the_api_upload_parser_accepts_both_files(example):
    from core.manifest import load_manifest
    from service.jobs.uploads import parse_set

    _info, out = example
    m = load_manifest(MODEL)
    x_l, y_l = parse_set((out / "few_labels.npz").read_bytes(), "few_labels.npz", m, labeled=True)
    x_u, y_u = parse_set((out / "unlabeled.npz").read_bytes(), "unlabeled.npz", m, labeled=False)
    assert x_l.shape == (100, 1, 28, 28) and y_l.tolist() == np.load(out / "few_labels.npz")["y"].tolist()
    assert x_u.shape == (4000, 1, 28, 28) and y_u is None


def test_bad_weights_are_refused(tmp_path, data_root):
    with pytest.raises(SystemExit, match="one per mode"):
        main(["--out", str(tmp_path), "--data-root", str(data_root), "--weights", "1,2,3"])
