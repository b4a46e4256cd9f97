"""The run's data split lives outside the training loop (training/dataset/run.py): torch-free, the same
indices the Trainer uses, callable without building a Trainer; random_shift lives in training/augment.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from training.config import TrainConfig
from training.dataset.run import RunSplit, load_training_data, run_split
from training.train import Trainer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "core"))  # torch_blocker: import with torch made unimportable
from torch_blocker import run_without_torch  # noqa: E402


@pytest.mark.parametrize("extra", [{}, {"labeled_fraction": 0.1}, {"labeled_per_class": 3}, {"labeled_count": 20}])
def test_run_split_is_the_trainers_split(tmp_path, extra):
    cfg = TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True, val_samples=40, seed=3, **extra)
    ds = load_training_data(cfg, "train")
    s = run_split(cfg, ds)
    assert isinstance(s, RunSplit) and not (tmp_path / "r").exists()  # no run folder, no networks
    t = Trainer(cfg, progress=False)
    for name in ("val_idx", "train_idx", "lab_idx"):
        assert np.array_equal(getattr(s, name), getattr(t, name)), name
    assert len(s.val_idx) == 40 and len(np.intersect1d(s.val_idx, s.train_idx)) == 0
    assert len(s.val_idx) + len(s.train_idx) == len(ds.x)
    if cfg.semi_supervised:
        x_l, y_l = s.labeled(ds)
        assert np.array_equal(y_l, t.y_lab.numpy()) and len(x_l) == len(s.lab_idx) > 0
        if cfg.labeled_per_class:
            assert (np.bincount(y_l) == 3).all()
    else:
        assert len(s.lab_idx) == 0


def test_run_split_is_pinned():
    """Changing the split changes every run (and which images a benchmark calls labeled): pinned here."""
    cfg = TrainConfig(dry_run=True, val_samples=10, seed=0, labeled_per_class=1)
    s = run_split(cfg, load_training_data(cfg, "train"))
    assert s.val_idx[:5].tolist() == np.random.default_rng(0).permutation(256)[:5].tolist()
    assert len(s.lab_idx) == 10 and len(s.train_idx) == 246


def test_run_data_and_split_import_without_torch():
    r = run_without_torch("from training.dataset.run import load_training_data, run_split\n"
                          "import types, sys\n"
                          "cfg = types.SimpleNamespace(dry_run=True, image_size=0, image_channels=0, n_modes=None, seed=0,\n"
                          "    val_samples=20, semi_supervised=True, labeled_per_class=2, labeled_count=None,\n"
                          "    labeled_fraction=0.0, dataset='fake')\n"
                          "s = run_split(cfg, load_training_data(cfg))\n"
                          "assert 'torch' not in sys.modules\n"
                          "print(len(s.lab_idx))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "20"


def test_helpers_are_not_imported_from_the_loop():
    """Only the loop's own entry points (train, Trainer) are imported from training.train inside training/ and
    the paper reproduction; helpers come from where they live."""
    from training import augment, train

    assert train.random_shift is augment.random_shift  # still importable from the loop, for old callers
    for f in sorted([*(REPO / "training").rglob("*.py"), *(REPO / "benchmarks" / "repro").rglob("*.py")]):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.module == "training.train" or (n.level == 1 and n.module == "train")):
                names = {a.name for a in n.names}
                assert names <= {"train", "Trainer", "RUN_ONLY_OPTIONS"}, (f, names)
