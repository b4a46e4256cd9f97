"""The latent spec of an exported model and its numpy sampler.

Every latent kind we support reduces, at sampling time, to one formula:

    z = centres[mode] + sigma * scales[mode] * eps,   eps ~ U(-1,1)^D  (NEMGAN, NEMGAN-P)
                                                      eps ~ N(0,1)^D   (MM-GAN)
    mode ~ Categorical(priors)  unless the caller fixes it

so a consumer needs no knowledge of how the latent was trained. sigma scales the noise
(sigma=0 gives the mode centre): the quality/diversity knob of MM-GAN (004 sec. 4.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ManifestError

# How far stored priors may miss a sum of 1 before they are refused rather than renormalised
# (float32 softmax output misses by ~1e-7; a typo in a hand-written manifest by much more).
PRIOR_SUM_TOL = 1e-4


def normalise_priors(p) -> np.ndarray:
    """Non-negative weights -> float64 probabilities that sum to 1 exactly enough for numpy's
    Generator.choice (priors that went through float32 can miss 1 by more than it tolerates)."""
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum()


@dataclass
class LatentSpec:
    kind: str  # "nemgan" | "nemgan-p" | "mmgan-static" | "mmgan-dynamic" | "unimodal"
    centres: np.ndarray  # [K, D]
    scales: np.ndarray  # [K, D]
    priors: np.ndarray  # [K], sums to 1 (float64 once validated)
    noise: str  # "uniform" | "gaussian"

    @property
    def n_modes(self) -> int:
        return int(self.centres.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    def validate(self) -> "LatentSpec":
        """Check the shapes and values, and renormalise the priors in float64 (the one place)."""
        if self.centres.ndim != 2 or self.scales.shape != self.centres.shape:
            raise ManifestError(f"latent centres {self.centres.shape} and scales {self.scales.shape} must both be [K, D]")
        p = np.asarray(self.priors, dtype=np.float64)
        if p.shape != (self.n_modes,):
            raise ManifestError(f"latent priors shape {p.shape} != ({self.n_modes},)")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > PRIOR_SUM_TOL:
            raise ManifestError(f"latent priors must be non-negative and sum to 1, got {p.tolist()}")
        if self.noise not in ("uniform", "gaussian"):
            raise ManifestError(f"unknown latent noise {self.noise!r}")
        self.priors = normalise_priors(p)
        return self

    def with_priors(self, priors) -> "LatentSpec":
        """The same latent with new mode priors (any non-negative weights; normalised here)."""
        return LatentSpec(self.kind, self.centres, self.scales, normalise_priors(priors), self.noise).validate()

    def save(self, path: str | Path) -> None:
        np.savez(path, centres=self.centres, scales=self.scales, priors=self.priors,
                 kind=np.array(self.kind), noise=np.array(self.noise))

    @classmethod
    def load(cls, path: str | Path) -> "LatentSpec":
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls(str(f["kind"]), f["centres"].astype(np.float64), f["scales"].astype(np.float64),
                           f["priors"].astype(np.float64), str(f["noise"])).validate()
        except (OSError, KeyError, ValueError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"cannot read latent file {path}: {e}") from e


# sigma beyond this only feeds g latents far outside anything it was trained on (the papers use 0.25..2):
# pictures of nothing, and near float32's range non-finite pixels. The service and the CLI refuse it.
SIGMA_MAX = 10.0


def sample_latents(spec: LatentSpec, n: int, mode: int | None = None, sigma: float = 1.0,
                   seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw n latents from a validated spec. Same (spec, n, mode, sigma, seed) -> bit-identical z.

    The mode draw and the noise draw use one numpy Generator in a fixed order, so a seed
    reproduces the images exactly across the CLI, the service and the tests.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and 0 <= sigma <= SIGMA_MAX):
        raise ValueError(f"sigma must be a number in 0..{SIGMA_MAX:g}, got {sigma!r}")
    rng = np.random.default_rng(seed)
    if mode is None:
        modes = rng.choice(spec.n_modes, size=n, p=spec.priors)
    else:
        if not 0 <= int(mode) < spec.n_modes:
            raise ValueError(f"mode {mode} out of range 0..{spec.n_modes - 1}")
        modes = np.full(n, int(mode), dtype=np.int64)
    if spec.noise == "uniform":
        eps = rng.uniform(-1.0, 1.0, size=(n, spec.dim))
    else:
        eps = rng.standard_normal(size=(n, spec.dim))
    z = spec.centres[modes] + sigma * spec.scales[modes] * eps
    return z.astype(np.float32), modes.astype(np.int64)
