"""Latent math: priors, mode frequencies, gradients to alpha, sigma, the numpy spec sampler."""

import numpy as np
import pytest
import torch

from training.latents import GaussianMixtureLatent, NEMGANLatent, NEMGANPLatent, build_latent
from core.latent import LatentSpec, sample_latents


@pytest.mark.parametrize("kind", ["nemgan", "nemgan-p", "mmgan-static", "mmgan-dynamic", "unimodal"])
def test_priors_sum_to_one_and_spec_is_valid(kind):
    lat = build_latent(kind, 7, 56, priors=[1, 2, 3, 4, 5, 6, 7])
    p = lat.priors()
    assert torch.isclose(p.sum(), torch.tensor(1.0))
    assert np.allclose(p.detach().numpy(), np.arange(1, 8) / 28, atol=1e-6)
    spec = lat.spec()
    assert spec.centres.shape == (7, 56) and spec.scales.shape == (7, 56)


@pytest.mark.parametrize("cls", [NEMGANLatent, NEMGANPLatent])
def test_sampled_mode_frequencies_match_priors(cls):
    priors = [0.6, 0.25, 0.1, 0.05]
    lat = cls(4, 20, priors=priors)
    g = torch.Generator().manual_seed(0)
    _, modes = lat.sample(40000, generator=g)
    freq = np.bincount(modes.numpy(), minlength=4) / 40000
    assert np.allclose(freq, priors, atol=0.01), freq


def test_numpy_sampler_frequencies_and_determinism():
    spec = LatentSpec("nemgan", np.eye(3, 6), np.full((3, 6), 0.3), np.array([0.7, 0.2, 0.1]), "uniform").validate()
    z1, m1 = sample_latents(spec, 30000, seed=5)
    z2, m2 = sample_latents(spec, 30000, seed=5)
    assert np.array_equal(z1, z2) and np.array_equal(m1, m2)
    assert np.allclose(np.bincount(m1) / 30000, [0.7, 0.2, 0.1], atol=0.01)
    z3, _ = sample_latents(spec, 30000, seed=6)
    assert not np.array_equal(z1, z3)


def test_alpha_receives_gradients_through_the_reparameterisation():
    lat = NEMGANPLatent(5, 25, priors=[0.4, 0.3, 0.1, 0.1, 0.1])
    assert lat.alpha.requires_grad
    z, _ = lat.sample(4096, generator=torch.Generator().manual_seed(0))
    w = torch.randn(25, generator=torch.Generator().manual_seed(1))
    (z @ w).sum().backward()
    assert lat.alpha.grad is not None and lat.alpha.grad.abs().sum() > 0


def test_fixed_priors_do_not_require_grad():
    assert not NEMGANLatent(3, 9).alpha.requires_grad


def test_sigma_zero_gives_the_mode_centre():
    for lat in (NEMGANLatent(4, 20), GaussianMixtureLatent(4, 16, dynamic=True)):
        for k in range(4):
            z, modes = lat.sample(8, mode=k, sigma=0.0)
            assert torch.allclose(z, lat.centres()[k].expand(8, -1))
            assert (modes == k).all()
        spec = lat.spec()
        z, _ = sample_latents(spec, 5, mode=2, sigma=0.0, seed=0)
        assert np.allclose(z, spec.centres[2], atol=1e-6)


def test_nemgan_modes_are_disjoint_boxes():
    lat = NEMGANLatent(10, 50, noise_width=0.3)
    z, modes = lat.sample(2000, generator=torch.Generator().manual_seed(0))
    # the coordinate at index 5k carries the one-hot: > 0.7 only for mode k
    for k in range(10):
        hot = z[:, 5 * k] > 0.69
        assert torch.equal(hot, modes == k)


def test_sigma_scales_the_spread():
    lat = GaussianMixtureLatent(3, 32, sigma=0.15)
    z1, _ = lat.sample(4000, mode=1, sigma=1.0, generator=torch.Generator().manual_seed(0))
    z2, _ = lat.sample(4000, mode=1, sigma=2.0, generator=torch.Generator().manual_seed(0))
    assert abs(z2.std(0).mean() / z1.std(0).mean() - 2.0) < 0.05


def test_dynamic_mmgan_parameters_get_gradients():
    lat = GaussianMixtureLatent(3, 8, dynamic=True)
    z, _ = lat.sample(64)
    z.pow(2).sum().backward()
    assert lat.mu.grad.abs().sum() > 0 and lat.log_s.grad.abs().sum() > 0
    static = GaussianMixtureLatent(3, 8, dynamic=False)
    assert not any(p.requires_grad for n, p in static.named_parameters() if n != "alpha")


def test_set_priors_and_bad_arguments():
    lat = NEMGANPLatent(3, 9)
    lat.set_priors([0.5, 0.3, 0.2])
    assert np.allclose(lat.priors().detach().numpy(), [0.5, 0.3, 0.2], atol=1e-6)
    with pytest.raises(ValueError):
        NEMGANLatent(3, 9, priors=[0.5, 0.5])
    with pytest.raises(ValueError):
        NEMGANLatent(10, 5)
    with pytest.raises(ValueError):
        build_latent("nope", 3, 9)
    spec = lat.spec()
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError):
            sample_latents(spec, 3, sigma=bad)
    with pytest.raises(ValueError):
        sample_latents(spec, 3, mode=3)


def test_priors_slightly_off_one_still_sample():
    """float32 softmax output can miss 1 by ~1e-7; sampling must still work (choice() is strict)."""
    p = np.array([0.9, 0.1], np.float32).astype(np.float64) + 3e-7
    spec = LatentSpec("nemgan", np.eye(2, 4), np.full((2, 4), 0.3), p, "uniform").validate()
    _, modes = sample_latents(spec, 1000, seed=0)
    assert set(np.unique(modes)) <= {0, 1}
