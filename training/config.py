"""TrainConfig: every option of a training run, saved with each checkpoint so a model rebuilds itself.

Defaults follow paper 001 sec. 3 (Adam beta=(0.5, 0.9), lr 2e-4 for g, 1e-3 for d and h) and the
authors' code (latent 50-d, noise U(-0.3, 0.3), latent loss weight 10, mode loss weight 1).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .device import AMP_MODES, DEVICE_PATTERN
from .latents import LATENT_KINDS
from .networks import NetConfig

GAN_LOSSES = ("gan", "wgan-gp")
# Fields older run folders, checkpoints and manifests still carry; ignored when read (extra: never used).
RETIRED_KEYS = frozenset({"extra"})
PRIOR_MODES = ("uniform", "data", "learned")


@dataclass
class TrainConfig:
    # run
    out_dir: str = "runs/mnist"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i> (under torchrun each process takes its local rank's GPU)
    amp: str = "none"  # none | bf16: autocast of the networks' forwards; losses and gradient penalty stay fp32
    compile: bool = False  # torch.compile the training forwards (CUDA: faster after a warm-up; CPU: rarely)
    steps: int = 5000
    batch_size: int = 64
    log_every: int = 50
    eval_every: int = 500
    sample_every: int = 1000
    ckpt_every: int = 500
    ema: float = 0.999  # decay of the exponential moving average of g and h that is evaluated and exported (0 = off)
    threads: int = 0  # torch intra-op threads; 0 = torch default
    dry_run: bool = False  # a few steps on fake data: the cheap smoke test

    # data
    dataset: str = "mnist"  # preset name (training.dataset.PRESETS) or a path
    data_root: str | None = None
    classes: list[int] | None = None
    ratios: list[float] | None = None
    groups: list[list[int]] | None = None
    max_samples: int | None = None
    val_samples: int = 2000  # held out of the training split for model selection (labels used only there)
    labeled_fraction: float = 0.0  # 0 = unsupervised; e.g. 0.05 = semi-supervised h with 5% labels (000 sec. 4.5)
    labeled_count: int | None = None  # alternative to labeled_fraction
    sup_every: int = 1  # a supervised CE step for h every N steps
    sup_weight: float = 1.0
    sup_batch: int = 64
    sup_augment: int = 2  # random shifts of up to N pixels on labeled images: few labels overfit fast

    # latent
    latent_kind: str = "nemgan"
    latent_dim: int = 50
    n_modes: int | None = None  # default: number of classes of the data set
    noise_width: float = 0.3
    mode_scale: float = 1.0
    step_slope: float = 50.0
    mm_c: float = 0.1
    mm_sigma: float = 0.15
    priors: str | list[float] = "uniform"  # uniform | data (true class frequencies: condition C3) | learned | explicit list
    prior_start: int = 0  # step from which alpha is learned (authors: 10k)
    prior_lr: float = 1e-3

    # networks
    g_width: int = 32
    d_width: int = 32
    fc_hidden: int = 128
    h2_hidden: int = 128
    d_norm: str = "layer"

    # losses
    gan_loss: str = "gan"  # gan (non-saturating) | wgan-gp
    gp_weight: float = 10.0
    n_critic: int = 1
    latent_weight: float = 10.0
    latent_norm: str = "l1"  # l1 (paper) | l2 (authors' code)
    mode_weight: float = 1.0
    mode_loss: str = "ce"  # ce per sample | kl between batch-mean prediction and priors
    # From which step the mode loss also trains h (before it, and always with -1, it shapes only g,
    # through a frozen copy of h). With labels this matters: if h learns g's modes before the labels
    # have shaped it, g's mode k can settle on another digit and h then has to serve two masters.
    h_mode_start: int = 0
    supervised_mmgan: bool = False  # MM-GAN supervised variant: K-output discriminator, eq. (2.5)-(2.6)

    # paper 003 ablation switches
    c1: bool = True  # multimodal latent (False -> unimodal latent carrying no mode)
    c2: bool = True  # inverter losses shape g (False -> h learns on g's samples but g gets no gradient from it)
    c3: bool = False  # priors matched to the data's class frequencies

    # optimiser (001 sec. 3)
    lr_g: float = 2e-4
    lr_d: float = 1e-3
    lr_h: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.9

    def validate(self) -> "TrainConfig":
        errs = []
        if self.latent_kind not in LATENT_KINDS:
            errs.append(f"latent_kind must be one of {LATENT_KINDS}")
        if self.gan_loss not in GAN_LOSSES:
            errs.append(f"gan_loss must be one of {GAN_LOSSES}")
        if isinstance(self.priors, str) and self.priors not in PRIOR_MODES:
            errs.append(f"priors must be one of {PRIOR_MODES} or a list of numbers")
        if not 0.0 <= self.labeled_fraction <= 1.0:
            errs.append("labeled_fraction must be in [0, 1]")
        if self.steps < 0 or self.batch_size < 2:
            errs.append("steps must be >= 0 and batch_size >= 2")
        if self.latent_norm not in ("l1", "l2") or self.mode_loss not in ("ce", "kl"):
            errs.append("latent_norm must be l1|l2 and mode_loss ce|kl")
        if self.supervised_mmgan and not self.latent_kind.startswith("mmgan"):
            errs.append("supervised_mmgan needs latent_kind mmgan-static or mmgan-dynamic")
        if not DEVICE_PATTERN.match(str(self.device)) or self.amp not in AMP_MODES:
            errs.append(f"device must be auto|cpu|cuda|cuda:<i> and amp one of {AMP_MODES}")
        if errs:
            raise ValueError("; ".join(errs))
        return self

    @property
    def semi_supervised(self) -> bool:
        return self.labeled_fraction > 0 or bool(self.labeled_count)

    def net_config(self, n_modes: int, shape: tuple[int, int, int]) -> NetConfig:
        return NetConfig(latent_dim=self.latent_dim, n_modes=n_modes, channels=shape[0], height=shape[1],
                         width=shape[2], g_width=self.g_width, d_width=self.d_width, fc_hidden=self.fc_hidden,
                         h2_hidden=self.h2_hidden,
                         d_norm="none" if self.gan_loss == "wgan-gp" and self.d_norm == "batch" else self.d_norm,
                         d_outputs=n_modes if self.supervised_mmgan else 1).check()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in RETIRED_KEYS}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
