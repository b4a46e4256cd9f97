"""Clustering with h and with 004 Algorithm 2."""

import numpy as np

from training.cluster import cluster_generated_classifier, cluster_h
from training.config import TrainConfig
from training.dataset import load_dataset
from core.images import uint8_to_model
from training.metrics import hungarian_acc
from training.model import NemganModel


def test_cluster_h_shapes(tiny_model_dir):
    from training.export import load_exported

    m = load_exported(tiny_model_dir)
    x = np.random.default_rng(0).integers(0, 255, (5, 1, 28, 28), dtype=np.uint8)
    ids, probs = cluster_h(m, x)
    assert ids.shape == (5,) and probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_algorithm2_with_a_perfect_generator(data_root, tmp_path):
    """If g's mode k produced real images of digit (k+1) mod 3, Algorithm 2 must recover the digits
    up to that permutation: the classifier trained on 'generated' samples clusters real test data."""
    train = load_dataset("mnist", split="train", data_root=str(data_root))
    test = load_dataset("mnist", split="test", data_root=str(data_root))
    keep = lambda ds: ds.subset(np.flatnonzero(ds.y < 3))  # noqa: E731
    train, test = keep(train), keep(test)
    model = NemganModel(TrainConfig(out_dir=str(tmp_path)), 3, (1, 28, 28))
    rng = np.random.default_rng(0)

    def fake_generate(n, mode=None, sigma=1.0, seed=None, batch_size=1000):
        pool = np.flatnonzero(train.y == (mode + 1) % 3)
        return uint8_to_model(train.x[rng.choice(pool, n)]), np.full(n, mode)

    model.generate = fake_generate
    sub = test.subset(np.arange(600))
    pred = cluster_generated_classifier(model, sub.x, samples_per_mode=300, steps=150, seed=0)
    assert hungarian_acc(sub.y, pred) > 0.9
    assert np.mean(pred == (sub.y - 1) % 3) > 0.9  # the mode -> digit permutation is the one g had
