"""--restarts: N seeds trained, all recorded, the kept one chosen without reading a label."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from training.config import TrainConfig  # noqa: E402
from training.restarts import pick, train_restarts  # noqa: E402


def test_pick_reads_val_mi_only():
    recs = [{"val_mi": 1.2, "val_acc": 0.99}, {"val_mi": 1.9, "val_acc": 0.10}, {"val_mi": 1.9, "val_acc": 0.5}]
    assert pick(recs) == 1  # highest MI, the earlier of a tie; val_acc never enters
    assert pick([{"val_mi": 0.3}]) == 0


def _npz(tmp_path, y, name):
    rng = np.random.default_rng(0)
    x = (rng.random((300, 1, 28, 28)) * 255).astype(np.uint8)
    p = tmp_path / name
    np.savez(p, x=x, y=y)
    return p


def _cfg(data, out):
    return TrainConfig(dataset=str(data), out_dir=str(out), steps=4, eval_every=2, log_every=2, sample_every=100,
                       ckpt_every=100, val_samples=60, batch_size=16, n_modes=3, threads=1,
                       latent_kind="mmgan-static", d_pseudo_labels=True, h_mode_start=-1, im_weight=1.0,
                       consistency_weight=1.0)


def test_restarts_record_all_and_pick_without_labels(tmp_path):
    y = np.arange(300) % 3
    labeled = _npz(tmp_path, y, "a.npz")
    shuffled = _npz(tmp_path, np.random.default_rng(1).permutation(y), "b.npz")  # same images, other labels
    r1 = train_restarts(_cfg(labeled, tmp_path / "r1"), 3, progress=False)
    r2 = train_restarts(_cfg(shuffled, tmp_path / "r2"), 3, progress=False)
    assert [r["seed"] for r in r1["restarts"]] == [0, 1, 2]
    for i in range(3):
        assert (tmp_path / "r1" / f"restart-{i}" / "best.pt").is_file()
    assert (tmp_path / "r1" / "best.pt").is_file()
    assert json.loads((tmp_path / "r1" / "restarts.json").read_text())["chosen"] == r1["chosen"]
    # The labels differ, so the logged held-out accuracies differ ...
    acc = lambda run, r: [json.loads(l).get("val_acc") for l in  # noqa: E731
                          (tmp_path / run / f"restart-{r}" / "stats.jsonl").read_text().splitlines()]
    assert any(acc("r1", i) != acc("r2", i) for i in range(3))
    # ... but training reads none, so the criterion and the choice are identical.
    assert [r["val_mi"] for r in r1["restarts"]] == [r["val_mi"] for r in r2["restarts"]]
    assert r1["chosen"] == r2["chosen"] == pick(r1["restarts"])


def test_restarts_refuse_label_selection(tmp_path):
    cfg = TrainConfig(dry_run=True, out_dir=str(tmp_path), select_by="val_acc")
    with pytest.raises(ValueError, match="labels"):
        train_restarts(cfg, 2, progress=False)


def test_cli_restarts_writes_every_run_and_the_pick(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["train", "--dry-run", "--restarts", "2", "--out", str(out), "--no-progress",
                                   "--set", "latent_kind=mmgan-static", "--set", "d_pseudo_labels=true"])
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "restarts.json").read_text())
    assert [r["seed"] for r in rec["restarts"]] == [0, 1] and (out / "best.pt").is_file()
    assert all((out / f"restart-{i}" / "best.pt").is_file() for i in range(2))
    again = CliRunner().invoke(app, ["train", "--dry-run", "--restarts", "2", "--out", str(out), "--no-progress"])
    assert again.exit_code != 0 and "--force" in again.output  # a finished set of restarts is not overwritten
