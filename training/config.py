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
SELECT_BY = ("mi", "val_acc")


@dataclass
class TrainConfig:
    # run
    out_dir: str = "runs/mnist"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i> (under torchrun each process takes its local rank's GPU)
    amp: str = "none"  # none | bf16: autocast of the networks' forwards; losses and gradient penalty stay fp32
    compile: bool = False  # torch.compile the training forwards (CUDA: faster after a warm-up; CPU: rarely)
    time_limit_s: float = 0.0  # stop cleanly (final evaluation, samples, checkpoint) after this long; 0 = no limit
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
    # The model's input: every image is converted and resized to it through core/images.py (what the service
    # does to an upload). 0 = the data's own (an image folder of mixed sizes picks one: training/dataset/sources.py).
    image_size: int = 0  # e.g. 32 or 64: square side in pixels, divisible by 4
    image_channels: int = 0  # 1 grey | 3 RGB
    labeled_fraction: float = 0.0  # 0 = unsupervised; e.g. 0.05 = semi-supervised h with 5% labels (000 sec. 4.5)
    labeled_count: int | None = None  # alternative to labeled_fraction
    labeled_per_class: int = 0  # alternative: exactly N labeled images of every class (e.g. 10 per class)
    sup_every: int = 1  # a supervised CE step for h every N steps
    sup_weight: float = 1.0
    sup_batch: int = 64
    sup_augment: int = 2  # random shifts of up to N pixels on labeled images: few labels overfit fast
    sup_warp: bool = False  # also the consistency term's affine warp (aug_*) on labeled images (beyond the papers)

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
    h_norm: str = "batch"  # batch (authors) | layer (no running statistics): see training/networks.py H1

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
    # Beyond the papers, label-free: the supervised MM-GAN's K-output critic with h's own cluster of each real
    # image (argmax of the EMA h, no labels) in place of its class. The mode loss only asks g's mode-k images
    # to be *called* k by h, which g can satisfy with images that fool h (generation purity 0.72-0.77 by a
    # classifier h never saw); this critic asks them to look like the real images h puts in cluster k.
    d_pseudo_labels: bool = False

    # Extensions beyond the papers (all off by default, so the "paper" rows are the papers' method).
    # They act on h's predictions for *real* images, which the papers' losses never look at: that is why
    # unsupervised NEMGAN can converge to modes of g that do not line up with the classes.
    im_weight: float = 0.0  # information maximisation (IMSAT): balanced cluster use + confident assignments
    im_balance: float = 1.0  # weight of H(mean p), the balance term, inside the im loss
    consistency_weight: float = 0.0  # h(x) and h(affine-warped x) predict the same mode
    consistency_temp: float = 1.0  # <1 sharpens the consistency target
    aug_rotate: float = 15.0  # degrees, affine warp of the consistency term
    aug_scale: float = 0.1
    aug_shear: float = 10.0
    aug_shift: float = 3.0  # pixels
    aug_flip: bool = False  # also a left-right mirror, half the time (clothes are symmetric; digits are not)
    aug_color: bool = False  # also recolour RGB images (channel permutation, per-channel gain): colour is not the class
    real_batch: int = 0  # real images per step for the terms above (0 = batch_size)
    # Which checkpoint becomes best.pt: "mi" = the mutual information between image and mode of h on held-out
    # *unlabeled* images (label-free, the default: unsupervised means no labels in model selection either);
    # "val_acc" = Hungarian ACC on held-out labels (uses labels: not for unsupervised rows).
    select_by: str = "mi"
    # Label-free early stop for h (0 = off), in steps: once h's held-out I(image; mode) has not improved for
    # this many steps, h goes back to its weights at the peak and stays frozen; g trains on through the
    # frozen h, so its modes become h's clusters, and best.pt is then chosen by `val_gen_agree` (the share
    # of g's samples of mode k that h assigns to k). Why: without it, unsupervised h peaks and then drifts
    # with g (README), and g's modes stay impure because h keeps learning to accept whatever g draws.
    h_freeze_patience: int = 0

    # paper 003 ablation switches
    c1: bool = True  # multimodal latent (False -> unimodal latent carrying no mode)
    c2: bool = True  # inverter losses shape g (False -> h learns on g's samples but g gets no gradient from it)
    c3: bool = False  # priors matched to the data's class frequencies

    # optimiser (001 sec. 3)
    lr_g: float = 2e-4
    lr_d: float = 1e-3
    lr_h: float = 1e-3
    # Cosine decay of every learning rate to 0 over this many steps (0 = constant, as the papers). Beyond the
    # papers: in the unsupervised recipe h's clustering peaks and then drifts with g (see README); decaying
    # the rates lets the run settle instead of wandering off the peak.
    lr_decay_steps: int = 0
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
        if self.select_by not in SELECT_BY:
            errs.append(f"select_by must be one of {SELECT_BY}")
        if self.lr_decay_steps < 0:
            errs.append("lr_decay_steps must be >= 0")
        if self.h_norm not in ("batch", "layer", "none"):
            errs.append("h_norm must be batch|layer|none")
        if self.consistency_temp <= 0:
            errs.append("consistency_temp must be > 0")
        if self.h_freeze_patience < 0:
            errs.append("h_freeze_patience must be >= 0 (0 = off)")
        if self.image_size and (self.image_size < 8 or self.image_size % 4) or self.image_channels not in (0, 1, 3):
            errs.append("image_size must be 0 (the data's) or a multiple of 4 >= 8, image_channels 0, 1 or 3")
        if self.supervised_mmgan and not self.latent_kind.startswith("mmgan"):
            errs.append("supervised_mmgan needs latent_kind mmgan-static or mmgan-dynamic")
        if self.d_pseudo_labels and (self.supervised_mmgan or self.gan_loss != "gan"):
            errs.append("d_pseudo_labels needs gan_loss gan and supervised_mmgan off (it is the same K-output "
                        "critic, with h's clusters in place of labels)")
        if not DEVICE_PATTERN.match(str(self.device)) or self.amp not in AMP_MODES:
            errs.append(f"device must be auto|cpu|cuda|cuda:<i> and amp one of {AMP_MODES}")
        if errs:
            raise ValueError("; ".join(errs))
        return self

    @property
    def semi_supervised(self) -> bool:
        return self.labeled_fraction > 0 or bool(self.labeled_count) or self.labeled_per_class > 0

    @property
    def conditional_d(self) -> bool:
        """The critic has one real/fake output per mode (supervised MM-GAN, or h's pseudo-labels)."""
        return self.supervised_mmgan or self.d_pseudo_labels

    def net_config(self, n_modes: int, shape: tuple[int, int, int]) -> NetConfig:
        return NetConfig(latent_dim=self.latent_dim, n_modes=n_modes, channels=shape[0], height=shape[1],
                         width=shape[2], g_width=self.g_width, d_width=self.d_width, fc_hidden=self.fc_hidden,
                         h2_hidden=self.h2_hidden, h_norm=self.h_norm,
                         d_norm="none" if self.gan_loss == "wgan-gp" and self.d_norm == "batch" else self.d_norm,
                         d_outputs=n_modes if self.conditional_d else 1).check()

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


# ------------------------------------------------------------------ presets
# Named recipes (`nemgan train --preset NAME`; command-line options and --set override them). The "-paper"
# presets are the papers' method as the authors ran it (WGAN-GP critic, 10x latent loss, spaced one-hot +
# U(-0.3, 0.3), lr 2e-4 / 1e-3); the others add the named extensions above. Every preset selects its
# checkpoint without labels (select_by "mi"); labeled ones see only their labeled images.
_PAPER = dict(gan_loss="wgan-gp", gp_weight=10.0, latent_weight=10.0, latent_norm="l2", mode_weight=1.0,
              noise_width=0.3, lr_g=2e-4, lr_d=1e-3, lr_h=1e-3, select_by="mi")
# Ours: the non-saturating GAN (cheaper than WGAN-GP: no double backward, ~1.6x faster a step here) and the
# real-image terms. lr_d 2e-4 keeps the critic from overpowering g at this size (see README).
_OURS = dict(gan_loss="gan", lr_d=2e-4, latent_weight=10.0, h_norm="layer", im_weight=1.0, im_balance=2.0,
             consistency_weight=1.0, consistency_temp=0.5, select_by="mi")
# Unsupervised MNIST. h learns the clusters from real images alone (information maximisation + the warp
# consistency); the mode loss shapes g through a frozen copy of h (h_mode_start -1), and the critic has one
# real/fake output per mode with h's cluster as each real image's class (d_pseudo_labels): g's mode k must look
# like the real images h puts in k. The MM-GAN latent with its means spread to U(-0.25, 0.25) (mm_c): at the
# thesis' 0.1 the Gaussians overlap so much in 50 dimensions that a z's own mode is recoverable only 84% of
# the time, which caps g's purity there. A half-width critic (1.6x faster a step, benchmarks/step_profile.py).
_MNIST_UNSUP = dict(_OURS, dataset="mnist", steps=5000, eval_every=250, latent_kind="mmgan-static", mm_c=0.25,
                    h_mode_start=-1, d_width=16, d_pseudo_labels=True)
PRESETS: dict[str, dict[str, Any]] = {
    "mnist-unsup-paper": dict(_PAPER, dataset="mnist", steps=20000),
    "mnist-unsup": dict(_MNIST_UNSUP),
    # The same recipe answers MM-GAN's Algorithm 2 (a classifier trained on g's samples labeled by their
    # Gaussian clusters the test set; it already uses the MM-GAN latent): its rows are mnist-unsup's.
    "mnist-mmgan": dict(_MNIST_UNSUP),
    # Unknown number of modes (beyond the papers): at most 20, and the data keeps what it supports. A weaker
    # balance term (im_balance 0.5) no longer pays h to spread the images over all 20 modes, while the warp
    # consistency makes splitting a class costly; the latent's mode priors are learned from h's use of each
    # mode on real images (001 eq. 16), so g stops drawing the modes h leaves empty, and
    # `nemgan export --prune-modes` drops them.
    "mnist-k-auto": dict(_MNIST_UNSUP, n_modes=20, im_balance=0.5, priors="learned", prior_start=500),
    # Colour that carries no class (Colored-MNIST, 32x32 RGB): the consistency warp also recolours the image
    # (aug_color), so h's mode must not depend on colour.
    "colored-mnist-unsup": dict(_MNIST_UNSUP, dataset="colored-mnist", aug_color=True),
    # The recipe before it (h frozen at its held-out MI peak, NEMGAN latent): 0.90-0.97 over seeds, generation
    # purity 0.85; the older ablation rows in benchmarks/recipes.py ran on it and still do.
    "mnist-unsup-v1": dict(_OURS, dataset="mnist", steps=4000, h_freeze_patience=400),
    # With labels, the mode loss shapes g through a frozen h (h_mode_start -1), as the 5%-label model did:
    # h cannot learn to accept whatever g draws for mode k, so g must draw the digit h calls k
    # (generation purity 0.99 instead of 0.67 with h_mode_start 0; RESULTS.md).
    "mnist-10pc-v1": dict(_OURS, dataset="mnist", steps=2000, labeled_per_class=10, sup_every=1, sup_batch=64,
                          h_mode_start=-1),
    # Ten labels a class on the unsupervised recipe: the labels fix which cluster is which digit and keep h from
    # merging two; g and its critic follow h as without labels, so g(h1(x)) keeps the digit (0.919 with
    # mnist-10pc-v1's NEMGAN latent and unconditional critic, by the real-data classifier).
    "mnist-10pc": dict(_MNIST_UNSUP, labeled_per_class=10, sup_every=1, sup_batch=64),
    "fmnist-unsup-paper": dict(_PAPER, dataset="fashion-mnist", steps=20000),
    # Clothes are upright and left-right symmetric: mirror them in the consistency warp, rotate and shear less
    # (test ACC 0.671 instead of 0.525 with the digits' warp; RESULTS.md).
    "fmnist-unsup-v1": dict(_OURS, dataset="fashion-mnist", steps=2000, aug_flip=True, aug_rotate=5.0, aug_shear=5.0),
    # mnist-unsup's recipe with the clothes' warp (evaluated every 200 steps, as the run that set it).
    "fmnist-unsup": dict(_MNIST_UNSUP, dataset="fashion-mnist", steps=4000, aug_flip=True, aug_rotate=5.0,
                         aug_shear=5.0, eval_every=200, log_every=100),
    # The clothes' warp as fmnist-unsup, and the 100 labels weighed 3x: with weight 1 the unlabeled terms
    # win and the run plateaus at 0.79 (RESULTS.md: fmnist-10pc-sup1 0.793, sup_weight 0.3 0.756).
    "fmnist-10pc": dict(_OURS, dataset="fashion-mnist", steps=2000, labeled_per_class=10, sup_every=1,
                        sup_batch=64, sup_weight=3.0, aug_flip=True, aug_rotate=5.0, aug_shear=5.0),
    # 60 labels a class (600, 1% of the training set): fmnist-10pc's recipe with g shaped through the frozen h
    # and h's clusters conditioning the critic, so g draws the class h calls k (evaluated every 200 steps,
    # as the run that set it).
    "fmnist-1pc": dict(_OURS, dataset="fashion-mnist", steps=3000, labeled_per_class=60, sup_every=1, sup_batch=64,
                       sup_weight=3.0, aug_flip=True, aug_rotate=5.0, aug_shear=5.0, h_mode_start=-1,
                       d_pseudo_labels=True, eval_every=200, log_every=100),
    # MNIST-2 (3 vs 5) 90:10 with 1% labels and learned priors (001 Table 2, 003 Table III).
    "mnist2-90-10": dict(_OURS, dataset="mnist-2-90-10", steps=2000, labeled_fraction=0.01, priors="learned",
                         prior_start=1000, im_balance=0.0),
}


# ---- colour and other sizes (issue 16): the papers' colour rows. Not run here: the data (CIFAR-10, STL-10,
# CelebA) is not on this machine; put its distribution folder under the data root (core/data.py) to run them.
# Networks scale with the image (training/networks.py): 32x32 -> 3 stride-2 stages, 64x64 -> 4; wider than
# MNIST's (64 base channels, as DCGAN's CIFAR-10 networks are), and the critic spectrally normalised where the
# papers' WGAN-GP is not used.
_COLOUR = dict(g_width=64, d_width=64, fc_hidden=256)
PRESETS.update({
    # 000: CIFAR-10 airplane vs frog at 30:70, no labels, priors learned (paper: ACC 0.81).
    "cifar10-airplane-frog-paper": dict(_PAPER, **_COLOUR, dataset="cifar10-airplane-frog-30-70", steps=20000,
                                        priors="learned", prior_start=5000),
    # 000: CIFAR-10 with k = 10 modes (the paper picks k by FID).
    "cifar10-k10-paper": dict(_PAPER, **_COLOUR, dataset="cifar10", steps=50000),
    # 004: CIFAR-10 and STL-10 quality / diversity with the MM-GAN latent (STL-10 96x96 trained at 64x64).
    "cifar10-mmgan-paper": dict(_PAPER, **_COLOUR, dataset="cifar10", latent_kind="mmgan-static", steps=50000),
    "stl10-mmgan-paper": dict(_PAPER, **_COLOUR, dataset="stl10", image_size=64, latent_kind="mmgan-static",
                              steps=50000),
    # 000/001: CelebA attribute discovery at 64x64, 2 modes, priors learned: glasses 7:93, smile 70:30.
    # (The papers' pose row, 10:30:60, has no label in CelebA's attribute list: not expressible here.)
    "celeba-eyeglasses-paper": dict(_PAPER, **_COLOUR, dataset="celeba-eyeglasses", image_size=64, steps=20000,
                                    priors="learned", prior_start=5000),
    "celeba-smiling-paper": dict(_PAPER, **_COLOUR, dataset="celeba-smiling", image_size=64, steps=20000,
                                 priors="learned", prior_start=5000),
    # Colored-MNIST (32x32 RGB, colour independent of the digit) with ten labels a class: colored-mnist-unsup's
    # recipe (training/config.py above) with the labels, as mnist-10pc is mnist-unsup's.
    "colored-mnist-10pc": dict(PRESETS["colored-mnist-unsup"], labeled_per_class=10, sup_every=1, sup_batch=64),
})


def preset(name: str) -> dict[str, Any]:
    """The TrainConfig fields of a named preset (a copy: callers may update it)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])
