"""Networks: generator g, inverter h = h2 . h1, discriminator d.

Sized for 28x28 grey images by default and for 2 CPU cores: DCGAN-style stride-2 (de)convs. The number of
stride-2 stages grows with the image (`NetConfig.stages`): the size is halved while it stays even and at
least 4 after halving, so 28 -> 7 (2 stages, the original networks, unchanged), 32 -> 4 (3), 64 -> 4 (4),
96 -> 6 (4). Channels double per stage (c, 2c, 4c, 8c at most). Grey or RGB (`channels`). `width` scales
every layer. The critic's stabiliser is named by `d_norm`: "layer" (default), "batch", "none" or "spectral"
(spectral normalisation of every conv/linear weight of d, Miyato et al. 2018, and no norm layer).

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
    # "layer" (safe with WGAN-GP, which forbids batch-norm in the critic) | "batch" | "none" | "spectral"
    d_norm: str = "layer"
    d_outputs: int = 1  # >1: supervised MM-GAN discriminator, one real/fake output per class
    h_norm: str = "batch"  # norm of h1: "batch" (as the authors) | "layer" (no running statistics)

    def check(self) -> "NetConfig":
        if self.height % 4 or self.width % 4:
            raise ValueError(f"image size {self.height}x{self.width} must be divisible by 4")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {D_NORMS}, got {self.d_norm!r}")
        return self

    @property
    def stages(self) -> int:
        """Stride-2 stages: halve the smaller side while it is even and stays >= 4 (at least 2, at most 5);
        the larger side must halve as often."""
        return n_stages(self.height, self.width)

    @property
    def bottom(self) -> tuple[int, int]:
        """(H, W) after the stride-2 stages: the generator's first feature map, the encoders' last."""
        s = 2 ** self.stages
        return self.height // s, self.width // s

    def widths(self, base: int) -> list[int]:
        """Channels after each stride-2 stage of an encoder: base, 2 base, 4 base, 8 base (capped)."""
        return [base * 2 ** min(i, 3) for i in range(self.stages)]


D_NORMS = ("layer", "batch", "none", "spectral")
MAX_STAGES = 5


def n_stages(height: int, width: int) -> int:
    side, n = min(height, width), 0
    while n < MAX_STAGES and side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    n = max(n, 2)  # 28 -> 7 and every size divisible by 4 has at least two
    while n > 2 and (height % 2 ** n or width % 2 ** n):
        n -= 1
    return n


def _norm2d(kind: str, c: int, h: int, w: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "layer":
        return nn.GroupNorm(1, c)  # LayerNorm over (C,H,W), independent of batch composition
    return nn.Identity()


class Generator(nn.Module):
    """fc -> (top, H/2^s, W/2^s) -> s stride-2 deconvs, channels halving down to g_width -> tanh image.
    At 28x28 (s = 2): fc to 2c x 7 x 7, deconv 2c -> c, deconv c -> C, the original layout and keys."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        widths = cfg.widths(cfg.g_width)[::-1]  # e.g. [4c, 2c, c]
        hb, wb = cfg.bottom
        top = widths[0]  # the deepest map: as wide as the encoders' last stage
        self.shape = (top, hb, wb)
        self.fc = nn.Sequential(
            nn.Linear(cfg.latent_dim, top * hb * wb), nn.BatchNorm1d(top * hb * wb), nn.ReLU(True))
        layers: list[nn.Module] = []
        c_in = top
        for c_out in widths[1:] + [None]:
            if c_out is None:
                layers += [nn.ConvTranspose2d(c_in, cfg.channels, 4, 2, 1), nn.Tanh()]
            else:
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(True)]
                c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, *self.shape))


class ConvEncoder(nn.Module):
    """Shared trunk of d and h1: `stages` stride-2 convs (channels c, 2c, 4c, 8c at most; a norm after all
    but the first) then a hidden fc layer. At 28x28 (2 stages) this is the original layout and keys."""

    def __init__(self, cfg: NetConfig, out_dim: int, norm: str):
        super().__init__()
        widths = cfg.widths(cfg.d_width)
        hb, wb = cfg.bottom
        spectral = norm == "spectral"
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(1, len(widths)):
            h, w = cfg.height // 2 ** (i + 1), cfg.width // 2 ** (i + 1)
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1),
                       _norm2d("none" if spectral else norm, widths[i], h, w), nn.LeakyReLU(0.2, True)]
        layers += [nn.Flatten(),
                   nn.Linear(widths[-1] * hb * wb, cfg.fc_hidden), nn.LeakyReLU(0.2, True),
                   nn.Linear(cfg.fc_hidden, out_dim)]
        if spectral:
            from torch.nn.utils.parametrizations import spectral_norm

            layers = [spectral_norm(m) if isinstance(m, (nn.Conv2d, nn.Linear)) else m for m in layers]
        self.net = nn.Sequential(*layers)

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
