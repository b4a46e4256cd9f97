"""Shared fixtures. Tests train tiny models for a few steps; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data import DATA_HINT, default_data_root

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = default_data_root()  # the project's own resolution: $NEMGAN_DATA_DIR, else ../shared/data


def pytest_configure(config):
    # Two cores: keep each test process to one intra-op thread so parallel servers/workers don't thrash.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"needs MNIST under {DATA_ROOT}/mnist: {DATA_HINT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model directory exported from a 3-step dry run (fake data, 10 modes): fast and deterministic."""
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp("tiny-run")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0), progress=False)
    out = tmp_path_factory.mktemp("tiny-export") / "tiny"
    export_model(NemganModel.load(run / "best.pt"), out, name="tiny", version="1")
    return out
