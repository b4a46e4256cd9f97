"""In a serving-only install (no torch) `nemgan --help`, `serve`, `worker` and `sample` work, and the training
commands say what to install."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torch_blocker import REPO, run_without_torch

NEMGAN = "import sys; sys.argv[0] = 'nemgan'; import cli; cli.app()"
MODEL = REPO / "models" / "mnist"


def nemgan(*args, **kw):
    return run_without_torch(NEMGAN, *map(str, args), **kw)


def test_help_and_serving_commands_without_torch():
    r = nemgan("--help")
    assert r.returncode == 0, r.stderr
    for cmd in ("train", "eval", "export", "sample", "learn-priors", "serve", "worker"):
        assert cmd in r.stdout
    for cmd in ("serve", "worker", "sample", "train"):
        r = nemgan(cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, (cmd, r.stderr)


@pytest.mark.skipif(not (MODEL / "g.onnx").is_file(), reason="the shipped models/mnist is missing")
def test_sample_without_torch_matches_with_torch(tmp_path):
    args = ("sample", MODEL, "--mode", "7", "--n", "5", "--seed", "3")
    r = nemgan(*args, "--out", tmp_path / "a.npz")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 5
    from typer.testing import CliRunner

    from cli import app

    r2 = CliRunner().invoke(app, [str(a) for a in args] + ["--out", str(tmp_path / "b.npz")])
    assert r2.exit_code == 0, r2.output
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert (a["modes"] == 7).all() and np.array_equal(a["images"], b["images"])


def test_training_commands_name_the_missing_extra(tmp_path):
    r = nemgan("train", "--dry-run", "--out", tmp_path / "x")
    assert r.returncode == 2
    assert "needs the 'training' extra" in r.stderr and "torch" in r.stderr and "Traceback" not in r.stderr


def test_worker_without_torch_says_it_needs_the_training_extra():
    # the worker retrains h with torch: it must refuse to start, not accept jobs it cannot run
    r = nemgan("worker")
    assert r.returncode == 2
    assert "needs the 'training' extra" in r.stderr and "Traceback" not in r.stderr, r.stderr
