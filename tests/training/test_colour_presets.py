"""The papers' colour presets (CIFAR-10, STL-10, CelebA; not run here: the data is not on this machine) each
train end to end for two steps on a small file written in the exact distribution format, with narrow networks;
the full-width networks they name are built for their image size."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import PRESETS, TrainConfig
from training.model import NemganModel
from training.train import train

from test_dataset_formats import cifar_record, write_celeba

COLOUR_PRESETS = ["cifar10-airplane-frog-paper", "cifar10-k10-paper", "cifar10-mmgan-paper", "stl10-mmgan-paper",
                  "celeba-eyeglasses-paper", "celeba-smiling-paper", "colored-mnist-10pc"]
SHAPES = {"cifar10": (3, 32, 32), "stl10": (3, 64, 64), "celeba": (3, 64, 64), "colored-mnist": (3, 32, 32)}
SMALL = dict(g_width=8, d_width=8, fc_hidden=16, h2_hidden=16, batch_size=8, val_samples=4, log_every=2,
             eval_every=2, sample_every=2, ckpt_every=2, steps=2, threads=1, prior_start=0)


@pytest.mark.parametrize("name", COLOUR_PRESETS)
def test_preset_networks_fit_their_images(name):
    cfg = TrainConfig.from_dict(PRESETS[name]).validate()
    family = next(k for k in SHAPES if cfg.dataset.startswith(k))
    shape = SHAPES[family]
    assert (cfg.image_size or shape[1]) == shape[1]
    m = NemganModel(cfg, 2, shape)
    assert m.net_cfg.stages == {32: 3, 64: 4}[shape[1]]
    x, _ = m.generate(2, seed=0)
    assert x.shape == (2, *shape)


def run(tmp_path, name, **kw):
    cfg = TrainConfig.from_dict({**PRESETS[name], **SMALL, **kw, "out_dir": str(tmp_path / "run"),
                                 "data_root": str(tmp_path)})
    train(cfg, progress=False)
    return NemganModel.load(tmp_path / "run" / "best.pt")


def test_cifar10_airplane_frog_preset_trains(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    labels = [0] * 15 + [6] * 35 + [3] * 10
    rng = np.random.default_rng(0)
    (d / "data_batch_1.bin").write_bytes(b"".join(cifar_record(c, *rng.integers(0, 256, 3)) for c in labels))
    m = run(tmp_path, "cifar10-airplane-frog-paper")
    assert m.image_shape == (3, 32, 32) and m.class_names == ["airplane", "frog"] and m.learns_priors
    assert m.data_priors == pytest.approx([0.3, 0.7])


def test_stl10_preset_trains_at_64(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(0)
    (d / "train_X.bin").write_bytes(rng.integers(0, 256, 20 * 3 * 96 * 96, dtype=np.uint8).tobytes())
    (d / "train_y.bin").write_bytes(bytes([1 + i % 10 for i in range(20)]))
    m = run(tmp_path, "stl10-mmgan-paper")
    assert m.image_shape == (3, 64, 64) and m.n_modes == 10 and m.cfg.latent_kind == "mmgan-static"


def test_celeba_eyeglasses_preset_trains(tmp_path):
    write_celeba(tmp_path / "celeba", n=45)  # partition: 4 train, so train on "all" through the split override
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()  # no partition file: every image is train
    m = run(tmp_path, "celeba-eyeglasses-paper")
    assert m.image_shape == (3, 64, 64) and m.class_names == ["no Eyeglasses", "Eyeglasses"]
    assert m.data_priors[1] < 0.1  # 93:7
