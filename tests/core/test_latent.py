"""core.latent: priors are renormalised in one place, and sampling is reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ManifestError
from core.latent import LatentSpec, normalise_priors, sample_latents


def spec(priors) -> LatentSpec:
    return LatentSpec("nemgan", np.eye(3, 5), np.full((3, 5), 0.2), np.asarray(priors), "uniform")


def test_validate_renormalises_float32_priors_in_float64():
    p32 = np.array([0.6, 0.3, 0.1], np.float32)  # sums to 1 only within float32 precision
    s = spec(p32).validate()
    assert s.priors.dtype == np.float64 and abs(s.priors.sum() - 1) < 1e-15
    z, modes = sample_latents(s, 2000, seed=3)
    assert z.shape == (2000, 5) and z.dtype == np.float32
    assert abs(np.mean(modes == 0) - 0.6) < 0.05
    z2, modes2 = sample_latents(spec(p32).validate(), 2000, seed=3)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_array_equal(modes, modes2)


def test_priors_far_from_one_are_refused_and_with_priors_normalises():
    with pytest.raises(ManifestError, match="sum to 1"):
        spec([0.5, 0.5, 0.5]).validate()
    s = spec([1 / 3] * 3).validate().with_priors([2, 1, 1])
    np.testing.assert_allclose(s.priors, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(normalise_priors([1, 3]), [0.25, 0.75])
