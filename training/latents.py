"""Latent spaces with one mode per class: the single abstraction used by training, export and sampling.

Three families, one interface (`Latent`):

* NEMGAN (paper 000):  z = y + nu2, y a (scaled) one-hot placed at index k*spacing, nu2 ~ U(-w, w)^D.
* NEMGAN-P (paper 001): the same, but the mode y is drawn by reparameterising nu1 ~ U(0,1) with a
  learnable vector alpha, eq. (3)-(4): a_i = cumsum(softmax(alpha))_i, f_i = s(a_i - nu1) - s(a_{i-1} - nu1).
  With s the unit step this is exactly Categorical(softmax(alpha)) (Lemma 1); we use a hard sigmoid
  for s so that gradients reach alpha through samples near the boundaries a_i.
* MM-GAN (thesis 004): a Gaussian mixture, z|k ~ N(mu_k, diag(s_k)^2). Static: mu_k ~ U(-c, c)^D and
  s_k = sigma fixed. Dynamic: mu_k and log s_k learned through the reparameterisation z = mu_k + s_k*eps
  (the diagonal variant the thesis suggests to keep the parameter count at 2*K*D).

Every latent exports a `LatentSpec` (centres, scales, priors, noise) so that consumers sample with
numpy only; see core/latent.py for the formula. Training samples in torch (`sample`) so that
gradients reach alpha / mu / s.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.latent import LatentSpec

LATENT_KINDS = ("nemgan", "nemgan-p", "mmgan-static", "mmgan-dynamic", "unimodal")


def hard_sigmoid(x: torch.Tensor, slope: float) -> torch.Tensor:
    """Piecewise-linear step: 0 below -1/(2 slope), 1 above +1/(2 slope), linear between."""
    return torch.clamp(slope * x + 0.5, 0.0, 1.0)


class Latent(nn.Module):
    """Base class. Subclasses define centres(), scales(), noise and how the mode is drawn."""

    kind: str = ""
    noise: str = "uniform"

    def __init__(self, n_modes: int, dim: int, priors=None, learn_priors: bool = False):
        super().__init__()
        if n_modes < 1 or dim < 1:
            raise ValueError("n_modes and dim must be >= 1")
        self.n_modes, self.dim = int(n_modes), int(dim)
        p = torch.full((n_modes,), 1.0 / n_modes) if priors is None else torch.as_tensor(priors, dtype=torch.float32)
        if p.shape != (n_modes,) or torch.any(p <= 0):
            raise ValueError(f"priors must be {n_modes} positive numbers, got {p.tolist()}")
        # alpha = log priors (up to a constant): softmax(alpha) == priors.
        self.alpha = nn.Parameter(torch.log(p / p.sum()), requires_grad=learn_priors)

    # -- priors ----------------------------------------------------------------------------
    def priors(self) -> torch.Tensor:
        return F.softmax(self.alpha, dim=0)

    @torch.no_grad()
    def set_priors(self, priors) -> None:
        p = torch.as_tensor(priors, dtype=torch.float32).clamp_min(1e-8)
        self.alpha.copy_(torch.log(p / p.sum()))

    # -- geometry (overridden) ---------------------------------------------------------------
    def centres(self) -> torch.Tensor:  # [K, D]
        raise NotImplementedError

    def scales(self) -> torch.Tensor:  # [K, D]
        raise NotImplementedError

    # -- sampling --------------------------------------------------------------------------------
    def draw_modes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Soft one-hot y [n, K] (exactly one-hot except in the boundary band) for learned priors."""
        idx = torch.multinomial(self.priors().detach(), n, replacement=True, generator=generator)
        return F.one_hot(idx, self.n_modes).float()

    def _eps(self, n: int, generator=None) -> torch.Tensor:
        dev = self.alpha.device
        if self.noise == "uniform":
            return torch.rand(n, self.dim, generator=generator, device=dev) * 2 - 1
        return torch.randn(n, self.dim, generator=generator, device=dev)

    def sample(self, n: int, mode: int | torch.Tensor | None = None, sigma: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (z [n, D], mode ids [n]). mode=None draws modes from the priors."""
        if mode is None:
            y = self.draw_modes(n, generator)
        else:
            ids = torch.as_tensor(mode, device=self.alpha.device).long().expand(n) if not torch.is_tensor(mode) or mode.dim() == 0 \
                else mode.long()
            y = F.one_hot(ids, self.n_modes).float()
        modes = y.argmax(dim=1)
        # y @ centres keeps the path y -> z differentiable (NEMGAN-P's alpha gets gradients here).
        z = y @ self.centres() + sigma * (y @ self.scales()) * self._eps(n, generator)
        return z, modes

    def spec(self) -> LatentSpec:
        with torch.no_grad():
            return LatentSpec(
                kind=self.kind,
                centres=self.centres().detach().cpu().double().numpy(),
                scales=self.scales().detach().cpu().double().numpy(),
                priors=self.priors().detach().cpu().double().numpy(),
                noise=self.noise,
            ).validate()


class NEMGANLatent(Latent):
    """z = mode_scale * e_{k*spacing} + U(-noise_width, noise_width)^D (paper 000; authors' code: D=50, spacing 5, w=0.3)."""

    kind = "nemgan"
    noise = "uniform"

    def __init__(self, n_modes: int = 10, dim: int = 50, noise_width: float = 0.3, mode_scale: float = 1.0,
                 priors=None, learn_priors: bool = False):
        super().__init__(n_modes, dim, priors, learn_priors)
        if dim < n_modes:
            raise ValueError(f"latent dim {dim} must be >= n_modes {n_modes}")
        spacing = dim // n_modes
        c = torch.zeros(n_modes, dim)
        c[torch.arange(n_modes), torch.arange(n_modes) * spacing] = mode_scale
        self.register_buffer("_centres", c)
        self.register_buffer("_scales", torch.full((n_modes, dim), float(noise_width)))
        # The modes are disconnected (000 sec. 2) only while noise_width < mode_scale / 2; wider noise
        # is allowed (a user may want overlapping modes) but then mode purity is no longer guaranteed.

    def centres(self):
        return self._centres

    def scales(self):
        return self._scales


class NEMGANPLatent(NEMGANLatent):
    """NEMGAN with learnable priors alpha drawn through the eq. (3)-(4) reparameterisation."""

    kind = "nemgan-p"

    def __init__(self, *args, step_slope: float = 50.0, learn_priors: bool = True, **kw):
        super().__init__(*args, learn_priors=learn_priors, **kw)
        self.step_slope = float(step_slope)

    def draw_modes(self, n: int, generator=None) -> torch.Tensor:
        nu1 = torch.rand(n, 1, generator=generator, device=self.alpha.device)
        a = torch.cumsum(self.priors(), dim=0)  # eq. (4): a_i = sum_{j<=i} softmax(alpha)_j
        s = hard_sigmoid(a[None, :] - nu1, self.step_slope)  # s_i = step(a_i - nu1)
        # eq. (3): f_0 = s_0, f_i = s_i - s_{i-1}. The last a_i is 1, so s_{K-1} = 1 for nu1 < 1.
        f = torch.cat([s[:, :1], s[:, 1:] - s[:, :-1]], dim=1)
        return f


class GaussianMixtureLatent(Latent):
    """MM-GAN latent: z|k ~ N(mu_k, diag(s_k^2)); static (fixed) or dynamic (learned mu, log s)."""

    noise = "gaussian"

    def __init__(self, n_modes: int = 10, dim: int = 100, c: float = 0.1, sigma: float = 0.15,
                 dynamic: bool = False, priors=None, learn_priors: bool = False, seed: int = 0):
        super().__init__(n_modes, dim, priors, learn_priors)
        g = torch.Generator().manual_seed(seed)
        mu = (torch.rand(n_modes, dim, generator=g) * 2 - 1) * c  # mu_k ~ U(-c, c)^d (004 sec. 2.1.1)
        log_s = torch.full((n_modes, dim), math.log(sigma))
        self.dynamic = bool(dynamic)
        self.kind = "mmgan-dynamic" if dynamic else "mmgan-static"
        if dynamic:
            self.mu = nn.Parameter(mu)
            self.log_s = nn.Parameter(log_s)
        else:
            self.register_buffer("mu", mu)
            self.register_buffer("log_s", log_s)

    def centres(self):
        return self.mu

    def scales(self):
        return self.log_s.exp()


class UnimodalLatent(Latent):
    """Ablation C1-bar (paper 003): a single-mode latent that carries no mode information.

    Mode ids are still drawn (so the training loop and the mode loss run unchanged), but z does not
    depend on them: every mode shares centre 0 and uniform noise of the same width.
    """

    kind = "unimodal"
    noise = "uniform"

    def __init__(self, n_modes: int = 10, dim: int = 50, noise_width: float = 1.0, priors=None):
        super().__init__(n_modes, dim, priors, False)
        self.register_buffer("_centres", torch.zeros(n_modes, dim))
        self.register_buffer("_scales", torch.full((n_modes, dim), float(noise_width)))

    def centres(self):
        return self._centres

    def scales(self):
        return self._scales


def build_latent(kind: str, n_modes: int, dim: int, priors=None, learn_priors: bool | None = None,
                 noise_width: float = 0.3, mode_scale: float = 1.0, step_slope: float = 50.0,
                 mm_c: float = 0.1, mm_sigma: float = 0.15, seed: int = 0) -> Latent:
    if kind == "nemgan":
        return NEMGANLatent(n_modes, dim, noise_width, mode_scale, priors, bool(learn_priors))
    if kind == "nemgan-p":
        return NEMGANPLatent(n_modes, dim, noise_width, mode_scale, priors=priors, step_slope=step_slope,
                             learn_priors=True if learn_priors is None else learn_priors)
    if kind in ("mmgan-static", "mmgan-dynamic"):
        return GaussianMixtureLatent(n_modes, dim, mm_c, mm_sigma, kind == "mmgan-dynamic", priors,
                                     bool(learn_priors), seed)
    if kind == "unimodal":
        return UnimodalLatent(n_modes, dim, 1.0, priors)
    raise ValueError(f"unknown latent kind {kind!r}; choose one of {LATENT_KINDS}")
