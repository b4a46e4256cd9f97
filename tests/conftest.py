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


def export_tiny_rgb(tmp_path_factory, side: int, name: str) -> Path:
    """A side x side RGB model directory from a 3-step dry run (fake colour data, 4 modes, narrow networks)."""
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp(f"{name}-run")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0, image_size=side, image_channels=3, n_modes=4,
                      g_width=8, d_width=8, fc_hidden=32, h2_hidden=32, d_norm="spectral"), progress=False)
    out = tmp_path_factory.mktemp(f"{name}-export") / name
    export_model(NemganModel.load(run / "best.pt"), out, name=name, version="1")
    return out


@pytest.fixture(scope="session")
def tiny_rgb_model_dir(tmp_path_factory) -> Path:
    """A 32x32 RGB model directory (the Colored-MNIST / CIFAR-10 input), exported like tiny_model_dir."""
    return export_tiny_rgb(tmp_path_factory, 32, "tiny-rgb")
