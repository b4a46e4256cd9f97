"""Losses: adversarial (non-saturating GAN or WGAN-GP), supervised MM-GAN, latent reconstruction,
mode matching and semi-supervision. Pure functions of tensors so each is unit-testable."""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ------------------------------------------------------------------ adversarial
def d_loss_gan(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    # -log sigmoid(d(x)) - log(1 - sigmoid(d(g(z)))), written with softplus for stability.
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_loss_gan(d_fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating generator loss: -log sigmoid(d(g(z))).
    return F.softplus(-d_fake).mean()


def d_loss_wgan(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return d_fake.mean() - d_real.mean()


def g_loss_wgan(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


def gradient_penalty(d, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): (||grad d(x_hat)||_2 - 1)^2 on random interpolates.
    eps [N, 1, 1, 1]: the interpolation weights (default: drawn here); the trainer passes its rank's slice
    of one global draw, so a multi-process run interpolates exactly as one process would."""
    if eps is None:
        eps = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = d(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def d_loss_supervised(d_real: torch.Tensor, y_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """MM-GAN supervised discriminator, 004 eq. (2.6): K binary heads; real of class i is positive
    only for head i; every head calls a fake sample fake."""
    target_real = F.one_hot(y_real, d_real.size(1)).float()
    return (F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake), reduction="none").sum(1).mean()
            + F.binary_cross_entropy_with_logits(d_real, target_real, reduction="none").sum(1).mean())


def g_loss_supervised(d_fake: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """004 eq. (2.5) with f = identity: the sample from Gaussian k should look like a real of class k."""
    target = F.one_hot(modes, d_fake.size(1)).float()
    return F.binary_cross_entropy_with_logits(d_fake, target, reduction="none").sum(1).mean()


# ------------------------------------------------------------------ inversion / mode matching
def latent_loss(z: torch.Tensor, z_hat: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """||z - h1(g(z))||_p, the activity regulariser against intra-mode collapse (001 sec. 2.2).
    The target z is detached: this term should shape g and h1, not move the latent's parameters."""
    # Mean over dimensions (as the authors' Keras MSE/MAE): a sum over 50 dims made this term ~50x
    # the adversarial one and pushed g towards easily inverted, unrealistic images.
    z = z.detach()
    if norm == "l1":
        return (z - z_hat).abs().mean()
    return ((z - z_hat) ** 2).mean()


def mode_loss_ce(logits: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy between h2's prediction and the mode z was drawn from."""
    return F.cross_entropy(logits, modes)


def mode_loss_kl(logits: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """D_KL(P_Yhat || P_Y) with P_Yhat the batch-mean prediction (001 eq. 15).
    Log-softmax and a clamp avoid the log(0) instability noted in the authors' code."""
    p_hat = F.softmax(logits, dim=1).mean(0).clamp_min(1e-8)
    return (p_hat * (p_hat.log() - priors.clamp_min(1e-8).log())).sum()


def prior_kl(p_hat: torch.Tensor, alpha_log_priors: torch.Tensor) -> torch.Tensor:
    """D_KL(P_Yhat || softmax(alpha)) as a loss on alpha (001 eq. 16); p_hat is a fixed estimate."""
    p_hat = p_hat.detach().clamp_min(1e-8)
    return (p_hat * (p_hat.log() - alpha_log_priors)).sum()


def prior_l1(p_hat: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """|| E_x[h(x)] - softmax(alpha) ||_1 (003 eq. 5)."""
    return (p_hat.detach() - priors).abs().sum()


# ------------------------------------------------------------------ real images (extensions beyond the papers)
def info_max(logits: torch.Tensor, balance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Information maximisation on h's predictions for real images (IMSAT, Hu et al. 2017):
    loss = -(balance * H(mean_x p(y|x)) - mean_x H(p(y|x))). The first entropy asks for every mode to be
    used (no empty or merged clusters), the second for confident assignments. Returns (loss, the mutual
    information estimate H(mean p) - mean H(p))."""
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    cond = -(p * logp).sum(1).mean()
    p_mean = p.mean(0).clamp_min(1e-8)
    marg = -(p_mean * p_mean.log()).sum()
    return -(balance * marg - cond), (marg - cond).detach()


def consistency(logits_clean: torch.Tensor, logits_aug: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy from the (sharpened, fixed) prediction on an image to the prediction on its warped copy:
    the mode of a real image should not change under a small affine warp. temperature < 1 sharpens the
    target (as FixMatch's pseudo-labels), which keeps confident assignments from being averaged away."""
    target = F.softmax(logits_clean.detach() / temperature, dim=1)
    return -(target * F.log_softmax(logits_aug, dim=1)).sum(1).mean()
