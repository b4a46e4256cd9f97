"""Prior learning: alpha fitting recovers a known distribution; the full procedure recovers the
class ratio of an imbalanced MNIST subset from a small labeled set."""

import numpy as np
import pytest

from training.config import TrainConfig
from training.dataset import labeled_indices, load_dataset
from training.metrics import prior_error
from training.model import NemganModel
from training.priors import Cancelled, fit_alpha, learn_priors


@pytest.mark.parametrize("method", ["kl", "l1"])
def test_fit_alpha_recovers_target(method):
    target = np.array([0.3, 0.1, 0.4, 0.1, 0.1])
    p, hist = fit_alpha(target, np.full(5, 0.2), method=method, steps=800)
    assert np.abs(p - target).max() < 0.01
    assert hist[-1] < hist[0]


def test_fit_alpha_rejects_unknown_method():
    with pytest.raises(ValueError):
        fit_alpha(np.array([0.5, 0.5]), np.array([0.5, 0.5]), method="mse")


@pytest.fixture(scope="module")
def imbalanced(data_root):
    # digits 0 vs 4 at 90:10: well separated, so a tiny h trained on a few labels is accurate and
    # the estimate E_x[h(x)] is close to the real ratio.
    ds = load_dataset("mnist-2-04-90-10", data_root=str(data_root))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds.x))[:3000]
    return ds.subset(idx)


@pytest.mark.parametrize("method", ["kl", "l1"])
def test_learn_priors_recovers_imbalanced_ratio(imbalanced, tmp_path, method):
    model = NemganModel(TrainConfig(out_dir=str(tmp_path), latent_dim=20), 2, (1, 28, 28))
    lab = labeled_indices(imbalanced.y, count=60, seed=0)
    res = learn_priors(model, imbalanced.x[lab], imbalanced.y[lab], imbalanced.x, method=method,
                       h_steps=150, alpha_steps=600, seed=0)
    err = prior_error(res.priors, imbalanced.priors)
    assert err["max_abs"] < 0.04, (res.priors, imbalanced.priors)
    assert np.allclose(model.latent.priors().detach().numpy(), res.priors, atol=1e-5)
    assert res.metrics["labeled_acc"] > 0.9


def test_learn_priors_bad_inputs_and_cancel(tmp_path):
    model = NemganModel(TrainConfig(out_dir=str(tmp_path), latent_dim=20), 2, (1, 28, 28))
    x = np.zeros((4, 1, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="labels must be in"):
        learn_priors(model, x, np.array([0, 1, 2, 0]), x)
    with pytest.raises(ValueError, match="empty"):
        learn_priors(model, x[:0], np.zeros(0, int), x)
    with pytest.raises(ValueError, match="uint8"):
        learn_priors(model, np.zeros((4, 1, 32, 32), np.uint8), np.zeros(4, int), x)
    with pytest.raises(ValueError, match="labels for"):
        learn_priors(model, x, np.zeros(3, int), x)
    with pytest.raises(ValueError, match="method"):
        learn_priors(model, x, np.zeros(4, int), x, method="mse")
    with pytest.raises(Cancelled):
        learn_priors(model, x, np.zeros(4, int), x, h_steps=5, should_stop=lambda: True)


def test_default_prior_learning_keeps_h_bitwise(tmp_path):
    """Prior learning's default fits alpha only: h (and so every clustering figure) is the h that was trained."""
    import copy

    import numpy as np
    import torch

    from training.config import TrainConfig
    from training.model import NemganModel
    from training.priors import learn_priors

    model = NemganModel(TrainConfig(latent_dim=20, n_modes=2), 2, (1, 28, 28))
    before = copy.deepcopy(model.h.state_dict())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    res = learn_priors(model, x[:8], np.array([0, 1] * 4), x, alpha_steps=30)
    after = model.h.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.allclose(res.priors, model.latent.priors().detach().numpy(), atol=1e-6)
    assert abs(res.priors.sum() - 1) < 1e-9
