"""`nemgan cluster MODEL DIR_OR_NPZ --out results.csv`: offline clustering with ONNX Runtime, no torch; the same
mode, probability and OOD flag per image as POST /v1/cluster."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from torch_blocker import REPO, run_without_torch

MODEL = REPO / "models" / "mnist"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pngs(n, seed=0, size=(28, 28)):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(b, format="PNG")
        out.append(b.getvalue())
    return out


def test_cluster_a_folder_and_an_npz_as_the_service_does(tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    blobs = pngs(5) + pngs(1, seed=1, size=(40, 30))  # any size: resized as the API resizes
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    names = ["a.png", "b.png", "c.png", "d.png", "sub/e.png", "sub/f.png"]
    for name, b in zip(names, blobs):
        (tmp_path / "imgs" / name).write_bytes(b)
    r = run("cluster", tiny_model_dir, tmp_path / "imgs", "--out", tmp_path / "r.csv", "--batch-size", 4)
    assert r.exit_code == 0, r.output
    rows = read_csv(tmp_path / "r.csv")
    assert [row["item"] for row in rows] == names
    assert json.loads(r.stdout)["n"] == 6

    settings = Settings(var_dir=tmp_path / "var", model_dirs=[tiny_model_dir], intra_op_threads=1,
                        worker_metrics_port=0)
    with TestClient(create_app(settings)) as c:
        res = c.post("/v1/cluster", files=[("files", (n, b, "image/png")) for n, b in zip(names, blobs)])
        assert res.status_code == 200, res.text
        want = res.json()["results"]
    assert [int(row["mode"]) for row in rows] == [w["mode"] for w in want]
    assert [row["label"] for row in rows] == [w["label"] for w in want]
    np.testing.assert_allclose([float(row["probability"]) for row in rows],
                               [max(w["probabilities"]) for w in want], atol=1e-5)
    np.testing.assert_allclose([float(row["ood_score"]) for row in rows], [w["ood_score"] for w in want], atol=1e-4)
    assert [row["ood"] == "true" for row in rows] == [w["ood"] for w in want]

    # the same images as one uint8 .npz batch (key x): the same rows, named by index
    x = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs[:5]])  # the 28 x 28 ones
    np.savez(tmp_path / "x.npz", x=x)
    r = run("cluster", tiny_model_dir, tmp_path / "x.npz", "--out", tmp_path / "n.csv")
    assert r.exit_code == 0, r.output
    rows_n = read_csv(tmp_path / "n.csv")
    assert [row["item"] for row in rows_n] == ["0", "1", "2", "3", "4"]
    assert [row["mode"] for row in rows_n] == [row["mode"] for row in rows[:5]]


def test_cluster_errors_are_clean(tiny_model_dir, tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 28, 28), np.float32))
    (tmp_path / "empty").mkdir()
    for args, fragment in [((tmp_path / "f.npy", "--out", tmp_path / "r.csv"), "--input-range 0-1"),
                           ((tmp_path / "empty", "--out", tmp_path / "r.csv"), "holds no images"),
                           ((tmp_path / "f.npy", "--out", tmp_path / "r.txt"), "must end in .csv"),
                           ((tmp_path / "nothing.bin", "--out", tmp_path / "r.csv"), "expected an image folder")]:
        r = run("cluster", tiny_model_dir, *args)
        assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "r.csv").exists()
    r = run("cluster", tiny_model_dir, tmp_path / "f.npy", "--input-range", "0-1", "--out", tmp_path / "r.csv")
    assert r.exit_code == 0, r.output
    assert len(read_csv(tmp_path / "r.csv")) == 2


@pytest.mark.skipif(not (MODEL / "h.onnx").is_file(), reason="the shipped models/mnist is missing")
def test_cluster_runs_without_torch_and_flags_noise(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", x=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8))
    r = run_without_torch("import sys; sys.argv[0] = 'nemgan'; import cli; cli.app()", "cluster", str(MODEL),
                          str(tmp_path / "noise.npz"), "--out", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "r.csv")
    assert len(rows) == 8 and all(row["ood"] == "true" for row in rows)  # uniform noise is no digit
