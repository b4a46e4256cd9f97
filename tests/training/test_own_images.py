"""Training on your own images: an unlabeled folder of any size/colour trains (validation logs only the label-free
metrics), the model's input size is an option, and a Colored-MNIST run goes end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.data import default_data_root
from training.config import TrainConfig
from training.model import NemganModel
from training.train import Trainer, load_training_data, train

TINY = dict(g_width=8, d_width=8, fc_hidden=16, h2_hidden=16, batch_size=8, val_samples=8, log_every=2,
            eval_every=2, sample_every=2, ckpt_every=2, threads=1)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(24):
        h, w = rng.integers(34, 60, 2)
        a = np.zeros((h, w, 3), np.uint8)
        a[..., i % 3] = 200  # three colours: something to find
        Image.fromarray(a).save(d / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return d


def read_rows(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def test_unlabeled_folder_trains_with_label_free_validation(folder, tmp_path):
    run = tmp_path / "run"
    out = train(TrainConfig(out_dir=str(run), dataset=f"folder:{folder}", n_modes=3, steps=4, **TINY), progress=False)
    last = read_rows(run)[-1]
    assert "val_mi" in last and "val_gen_agree" in last and "val_modes_used" in last
    assert not any(k.startswith(("val_acc", "val_nmi", "val_ari", "val_purity")) for k in last)
    assert out["best"]["by"] == "val_mi" and out["best"]["val_acc"] is None
    m = NemganModel.load(run / "best.pt")
    assert m.image_shape == (3, 32, 32) and m.n_modes == 3 and m.class_names is None  # sides 34..59: 32


def test_unlabeled_folder_refuses_what_needs_labels(folder, tmp_path):
    base = dict(out_dir=str(tmp_path / "r"), dataset=f"folder:{folder}", steps=1, **TINY)
    with pytest.raises(ValueError, match="no labels: set n_modes"):
        Trainer(TrainConfig(**base), progress=False)
    with pytest.raises(ValueError, match=r"labels for h"):
        Trainer(TrainConfig(**base, n_modes=3, labeled_fraction=0.5), progress=False)
    with pytest.raises(ValueError, match=r"select_by val_acc"):
        Trainer(TrainConfig(**base, n_modes=3, select_by="val_acc"), progress=False)


def test_image_size_and_channels_options(folder, tmp_path):
    cfg = TrainConfig(dataset=f"folder:{folder}", image_size=32, image_channels=1, max_samples=10)
    ds = load_training_data(cfg)
    assert ds.x.shape == (10, 1, 32, 32)
    dry = load_training_data(TrainConfig(dry_run=True, image_size=64, image_channels=3, n_modes=4))
    assert dry.x.shape[1:] == (3, 64, 64) and dry.n_classes == 4
    with pytest.raises(ValueError, match="image_size"):
        TrainConfig(image_size=30).validate()


@pytest.mark.skipif(not (default_data_root() / "mnist").is_dir(), reason="MNIST not present")
def test_colored_mnist_smoke_run(tmp_path):
    """20 steps of the colored-mnist data set end to end: 32x32 RGB networks (3 stages), labeled validation."""
    run = tmp_path / "cm"
    cfg = TrainConfig(out_dir=str(run), dataset="colored-mnist", max_samples=600, steps=20,
                      **{**TINY, "eval_every": 20, "val_samples": 100})
    train(cfg, progress=False)
    last = read_rows(run)[-1]
    assert last["step"] == 20 and 0 <= last["val_acc"] <= 1 and np.isfinite(last["loss_g"])
    m = NemganModel.load(run / "best.pt")
    assert m.image_shape == (3, 32, 32) and m.net_cfg.stages == 3 and m.class_names == [str(d) for d in range(10)]
    grid = Image.open(run / "samples" / "step0000020.png")
    assert grid.mode == "RGB"


def test_example_folder_and_the_readme_commands(tmp_path):
    """README "Your own images": the example folder, `nemgan train --dataset folder:PATH`, export, sample."""
    from typer.testing import CliRunner

    from cli import app
    from training.dataset import load_dataset
    from training.dataset.example import SHAPES, write_example_folder

    flat = write_example_folder(tmp_path / "shapes", n=36)  # export calibrates the OOD score: >= 30
    files = sorted(flat.iterdir())
    assert len(files) == 36 and {f.suffix for f in files} == {".png", ".jpg"}
    assert len({Image.open(f).size for f in files}) > 3  # sizes vary
    labeled = load_dataset(f"folder:{write_example_folder(tmp_path / 'l', n=9, labeled=True)}", size=32)
    assert labeled.class_names == sorted(SHAPES) and np.bincount(labeled.y).tolist() == [3, 3, 3]

    runner = CliRunner()
    run, model = tmp_path / "run", tmp_path / "model"
    r = runner.invoke(app, ["train", "--dataset", f"folder:{flat}", "--set", "n_modes=3", "--set", "image_size=32",
                            "--steps", "2", "--batch-size", "4", "--out", str(run), "--no-progress",
                            *[a for k, v in TINY.items() if k != "batch_size" for a in ("--set", f"{k}={v}")]])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(run), str(model)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sample", str(model), "--mode", "all", "--n", "2", "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "s.png").mode == "RGB"
