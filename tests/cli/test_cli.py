"""CLI round trip (train -> export -> sample -> learn-priors) and the CLI's error handling."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_commands():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("train", "eval", "export", "sample", "learn-priors", "serve", "worker"):
        assert cmd in r.output


def test_round_trip_train_export_sample(tmp_path):
    r = run("train", "--dry-run", "--out", tmp_path / "run", "--no-progress", "--set", "latent_dim=40")
    assert r.exit_code == 0, r.output
    r = run("export", tmp_path / "run", tmp_path / "model", "--name", "demo", "--version", "7")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert man["name"] == "demo" and man["version"] == "7" and man["latent"]["dim"] == 40
    assert man["training_run"]["steps"] == 3

    r = run("sample", tmp_path / "model", "--mode", "3", "--n", "6", "--seed", "11", "--out", tmp_path / "a.npz")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "a.npz")
    assert a["images"].dtype == np.uint8 and a["images"].shape == (6, 1, 28, 28) and (a["modes"] == 3).all()
    run("sample", tmp_path / "model", "--mode", "3", "--n", "6", "--seed", "11", "--out", tmp_path / "b.npz")
    assert np.array_equal(a["images"], np.load(tmp_path / "b.npz")["images"])  # same seed, same images

    r = run("sample", tmp_path / "model", "--mode", "all", "--n", "4", "--seed", "1", "--out", tmp_path / "grid.png")
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (4 * 30 + 2, 10 * 30 + 2)  # 4 columns, one row per mode, 2 px padding

    # learn-priors on the CLI: a labeled .npz, fake unlabeled data from the dry-run config
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "lab.npz", x=rng.integers(0, 255, (20, 1, 28, 28), dtype=np.uint8), y=np.arange(20) % 10)
    r = run("learn-priors", tmp_path / "model", "--labeled", tmp_path / "lab.npz", "--out", tmp_path / "model2",
            "--h-steps", "3", "--alpha-steps", "20")
    assert r.exit_code == 0, r.output
    man2 = json.loads((tmp_path / "model2" / "manifest.json").read_text())
    assert man2["version"] == "8" and "prior_learning" in man2["metrics"]


@pytest.mark.parametrize("args, fragment", [
    (["train", "--dry-run", "--latent", "vae"], "latent_kind"),
    (["train", "--dry-run", "--set", "nonsense"], "key=value"),
    (["train", "--dry-run", "--set", "stepz=3"], "unknown option 'stepz'"),
    (["train", "--dataset", "/nonexistent/data"], ""),
    (["export", "/nonexistent/run", "/tmp/x-out"], ""),
])
def test_train_and_export_errors_are_clean(tmp_path, args, fragment):
    r = run(*args, "--out", tmp_path / "o") if args[0] == "train" else run(*args)
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    assert fragment in r.output


def test_sample_errors(tiny_model_dir, tmp_path):
    for args, fragment in [
        (["--mode", "10"], "out of range"),
        (["--mode", "seven"], "unknown mode"),
        (["--sigma", "nan"], "sigma"),
        (["--sigma", "-1"], "sigma"),
        (["--n", "0"], "n must be"),
    ]:
        r = run("sample", tiny_model_dir, *args, "--out", tmp_path / "x.png")
        assert r.exit_code == 2, (args, r.output)
        assert fragment in r.output
    r = run("sample", tmp_path, "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and "not a model directory" in r.output
    r = run("sample", tiny_model_dir, "--out", tmp_path / "x.jpg")
    assert r.exit_code == 2 and ".png or .npz" in r.output


def test_eval_lists_metrics():
    r = run("eval", ".", "--list")
    assert r.exit_code == 0 and "cluster" in r.output and "fcd" in r.output


def test_eval_says_what_it_computes_and_shows_progress(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the classifier cache (runs/.cache) goes here
    r = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--metrics", "cluster,gen_purity", "--num-gen", "50",
                                 "--classifier-steps", "4", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    err, out = r.stderr, r.stdout
    assert "evaluating on" in err and "1. cluster" in err and "2. gen_purity: 50 generated images" in err
    assert "trained first on the training set for 4 steps" in err and "4/4" in err  # classifier progress bar
    assert err.index("2. gen_purity") < err.index("[1/2] cluster ...") < err.index("[2/2] gen_purity done")
    assert json.loads(out)["cluster"]["acc"] == json.loads((tmp_path / "e.json").read_text())["cluster"]["acc"]
    gp = json.loads(out)["gen_purity"]
    assert list(gp)[0] == "score" and 0 <= gp["score"] <= gp["mean"]  # the headline first; coverage folded in


def test_export_names_unsupervised_modes_neutrally(tmp_path):
    assert run("train", "--dry-run", "--out", tmp_path / "u", "--no-progress").exit_code == 0  # no labels
    r = run("export", tmp_path / "u", tmp_path / "mu")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "mu" / "manifest.json").read_text())["mode_labels"] == [f"m{k}" for k in range(10)]
    names = [f"c{k}" for k in range(10)]
    for given in (",".join(names), json.dumps(names)):
        r = run("export", tmp_path / "u", tmp_path / "mn", "--force", "--mode-labels", given)
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / "mn" / "manifest.json").read_text())["mode_labels"] == names
    for bad in ("a,b", ",".join(["x"] * 10)):  # too few; not distinct
        r = run("export", tmp_path / "u", tmp_path / "bad", "--mode-labels", bad)
        assert r.exit_code == 2 and "--mode-labels needs 10 distinct" in r.output and "Traceback" not in r.output
        assert not (tmp_path / "bad").exists()
    # labels trained h: the data set's class names are the modes' names
    assert run("train", "--dry-run", "--out", tmp_path / "s", "--labeled-fraction", 0.2, "--no-progress").exit_code == 0
    assert run("export", tmp_path / "s", tmp_path / "ms").exit_code == 0
    assert json.loads((tmp_path / "ms" / "manifest.json").read_text())["mode_labels"] == [str(k) for k in range(10)]


@pytest.mark.parametrize("cmd", ["serve", "worker"])
def test_serve_and_worker_take_the_same_log_level_option(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and "--log-level" in r.output
    r = run(cmd, "--log-level", "loud")
    assert r.exit_code == 2 and "--log-level must be one of debug, info, warning, error" in r.output
