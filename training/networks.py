"""Networks: generator g, inverter h = h2 . h1, discriminator d.

Sized for 28x28 grey images by default and for 2 CPU cores: a DCGAN-style pair of stride-2 (de)convs,
so H and W must be divisible by 4. `width` scales every layer; channels/size are configurable so the
same code builds models for other image shapes.

h1 maps an image back to the latent (||z - h1(g(z))|| is the paper's activity regulariser) and h2 reads
the mode from that latent. h2 sees only h1's output, so clustering a real image is h2(h1(x)) and
reconstruction is g(h1(x)) (000 sec. 4.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class NetConfig:
    latent_dim: int = 50
    n_modes: int = 10
    channels: int = 1
    height: int = 28
    width: int = 28
    g_width: int = 32  # base channel count of g
    d_width: int = 32  # base channel count of d and h1
    fc_hidden: int = 128  # hidden fc width of d and h1 (the bulk of their parameters)
    h2_hidden: int = 128
    d_norm: str = "layer"  # "layer" (safe with WGAN-GP, which forbids batch-norm in the critic) | "batch" | "none"
    d_outputs: int = 1  # >1: supervised MM-GAN discriminator, one real/fake output per class
    h_norm: str = "batch"  # norm of h1: "batch" (as the authors) | "layer" (no running statistics)

    def check(self) -> "NetConfig":
        if self.height % 4 or self.width % 4:
            raise ValueError(f"image size {self.height}x{self.width} must be divisible by 4")
        return self


def _norm2d(kind: str, c: int, h: int, w: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "layer":
        return nn.GroupNorm(1, c)  # LayerNorm over (C,H,W), independent of batch composition
    return nn.Identity()


class Generator(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        c, h4, w4 = cfg.g_width, cfg.height // 4, cfg.width // 4
        self.shape = (2 * c, h4, w4)
        self.fc = nn.Sequential(
            nn.Linear(cfg.latent_dim, 2 * c * h4 * w4), nn.BatchNorm1d(2 * c * h4 * w4), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(True),
            nn.ConvTranspose2d(c, cfg.channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, *self.shape))


class ConvEncoder(nn.Module):
    """Shared trunk of d and h1: two stride-2 convs then a hidden fc layer."""

    def __init__(self, cfg: NetConfig, out_dim: int, norm: str):
        super().__init__()
        c, h4, w4 = cfg.d_width, cfg.height // 4, cfg.width // 4
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, c, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 2 * c, 4, 2, 1), _norm2d(norm, 2 * c, h4, w4), nn.LeakyReLU(0.2, True),
            nn.Flatten(),
            nn.Linear(2 * c * h4 * w4, cfg.fc_hidden), nn.LeakyReLU(0.2, True),
            nn.Linear(cfg.fc_hidden, out_dim))

    def forward(self, x):
        return self.net(x)


class Discriminator(ConvEncoder):
    def __init__(self, cfg: NetConfig):
        super().__init__(cfg, cfg.d_outputs, cfg.d_norm)


class H1(ConvEncoder):
    """Image -> latent. Batch-norm is the authors' choice (h1 is not a WGAN critic). Its running statistics
    average every batch h1 sees: g's samples and, with the real-image terms, real and warped images, so
    eval-mode h sees statistics of a mixture. "layer" normalises each image by itself and has no running
    statistics. Measured (RESULTS.md, mnist-unsup vs mnist-abl-batchnorm): both reach the same clustering
    and both drift after their peak, so the norm is not what the drift comes from."""

    def __init__(self, cfg: NetConfig):
        super().__init__(cfg, cfg.latent_dim, cfg.h_norm)


class H2(nn.Module):
    """Latent -> mode logits."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.h2_hidden), nn.LeakyReLU(0.2, True), nn.Linear(cfg.h2_hidden, cfg.n_modes))

    def forward(self, z):
        return self.net(z)


class Inverter(nn.Module):
    """h = h2 . h1, kept as two modules because both are exported and served separately."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.h1, self.h2 = H1(cfg), H2(cfg)

    def forward(self, x):
        zh = self.h1(x)
        return zh, self.h2(zh)


def init_weights(m: nn.Module) -> None:
    # DCGAN initialisation: N(0, 0.02) for convs/linears, N(1, 0.02) for norm scales.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
