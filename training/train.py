"""The training loop. Read top to bottom: data, model, optimisers, resume, then the step.

One step (000 eq. 1 / 001 eq. 15-16):
  1. d:   adversarial loss on a real batch and g(z)               (n_critic times)
  2. g,h: adversarial + latent_weight*||z - h1(g(z))|| + mode_weight*CE(h2(h1(g(z))), mode)
          (+ every sup_every steps, sup_weight*CE(h(x_l), y_l) on labeled real images: 000 sec. 4.5)
  3. alpha (learned priors, from prior_start): KL(E_x[h(x)] || softmax(alpha)) on a real batch.

A run folder holds options.json, stats.jsonl, samples/*.png (one row per mode), last.pt (for
--resume) and best.pt (best held-out Hungarian ACC, the checkpoint that gets exported).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import loss as L
from .config import TrainConfig
from core.grid import save_grid
from core.images import uint8_to_model

from .dataset import BatchIterator
# The run's data and split, and the labeled images' shift, live outside the loop (training/dataset/run.py,
# training/augment.py); the names stay importable from here.
from .dataset.run import load_training_data, per_class_indices, run_split  # noqa: F401
from .augment import random_affine, random_color, random_shift  # noqa: F401
from . import distributed
from .device import compiled, pick_device, to_device, with_amp  # noqa: F401  (pick_device: public here too)
from .metrics import clustering_report
from .model import NemganModel


# Options that do not change what is trained: they may differ when a run is resumed (moved folder,
# more steps, other thread count or device, other logging cadence).
# The number of processes is not an option: a run resumes on any world size (training/distributed.py).
RUN_ONLY_OPTIONS = frozenset({"out_dir", "steps", "threads", "device", "compile", "log_every", "eval_every",
                              "sample_every", "ckpt_every", "data_root", "time_limit_s"})


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg.validate()
        # One process, or one of torchrun's (training/distributed.py): rank 0 is the only writer of the run folder.
        self.dist = distributed.setup(cfg.device)
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"batch_size {cfg.batch_size} is the global batch: it must be a multiple of the "
                             f"{self.dist.world} processes")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "samples").mkdir(exist_ok=True)

        # ---- data: a held-out validation slice (labels used only for model selection), the rest trains
        ds = load_training_data(cfg, "train")
        if ds.y is None:  # e.g. a flat image folder: trains, and validation logs only the label-free metrics
            needs = [k for k, on in (("labels for h (labeled_*)", cfg.semi_supervised),
                                     ("supervised_mmgan", cfg.supervised_mmgan), ("select_by val_acc", cfg.select_by == "val_acc"),
                                     ("priors 'data' / c3", cfg.priors == "data" or cfg.c3), ("n_modes", not cfg.n_modes))
                     if on]
            if needs:
                raise ValueError(f"data set {cfg.dataset} has no labels: set n_modes (e.g. --set n_modes=10), and "
                                 f"nothing that needs labels ({', '.join(needs)})")
        self.ds = ds
        split = run_split(cfg, ds)
        self.val_idx, self.train_idx, self.lab_idx = split.val_idx, split.train_idx, split.lab_idx
        self.x_train = torch.from_numpy(uint8_to_model(ds.x[self.train_idx]))
        self.x_val = torch.from_numpy(uint8_to_model(ds.x[self.val_idx]))
        self.y_val = None if ds.y is None else ds.y[self.val_idx]
        # indexed once: the supervised MM-GAN step reads it every step
        self.y_train = None if ds.y is None else ds.y[self.train_idx]
        if cfg.semi_supervised:
            self.y_lab = torch.from_numpy(self.y_train[self.lab_idx]).long()
        n_modes = cfg.n_modes or ds.n_classes

        # ---- model and optimisers (001 sec. 3)
        self.model = NemganModel(cfg, n_modes, ds.image_shape, ds.class_names,
                                 None if ds.y is None else ds.priors.tolist()).to(self.device)
        m = self.model
        betas = (cfg.beta1, cfg.beta2)
        latent_params = [p for n_, p in m.latent.named_parameters() if n_ != "alpha" and p.requires_grad]
        self.opt_d = torch.optim.Adam(m.d.parameters(), lr=cfg.lr_d, betas=betas)
        self.opt_g = torch.optim.Adam(list(m.g.parameters()) + latent_params, lr=cfg.lr_g, betas=betas)
        self.opt_h = torch.optim.Adam(m.h.parameters(), lr=cfg.lr_h, betas=betas)
        self.opt_a = torch.optim.Adam([m.latent.alpha], lr=cfg.prior_lr) if m.learns_priors else None
        # An exponential moving average of g and h (as StyleGAN's G_ema): the raw weights oscillate as
        # the adversarial game moves; the average is what gets evaluated, kept as best.pt and exported.
        self.ema = m
        if cfg.ema > 0:
            self.ema = copy.deepcopy(m).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)
        # The networks as the training step runs them: SyncBatchNorm (several GPUs), bf16 autocast, DDP,
        # torch.compile. With the defaults in one process each view is the network itself. The EMA,
        # evaluation, samples, checkpoints and the gradient penalty use the unwrapped model.
        def view(net):
            return compiled(self.dist.wrap(with_amp(self.dist.sync_batchnorm(net), self.device, cfg.amp)), cfg.compile)

        self.G, self.D = view(m.g), view(m.d)
        h1, h2 = view(m.h.h1), view(m.h.h2)
        self.H = m.h if (h1 is m.h.h1 and h2 is m.h.h2) else distributed.InverterView(h1, h2)
        self.dist.average_grads(m.latent.parameters())  # alpha, MM-GAN means/scales: not inside a DDP module
        self.it_real = BatchIterator(len(self.train_idx), cfg.batch_size, seed=cfg.seed)
        self.it_lab = BatchIterator(len(self.lab_idx), min(cfg.sup_batch, len(self.lab_idx)), seed=cfg.seed + 1) \
            if len(self.lab_idx) else None
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        # Latents are drawn on the model's device: on a GPU that needs a generator of its own.
        self.gen_latent = self.gen if self.device.type == "cpu" else \
            torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.step = 0
        self.best = {"score": -math.inf, "by": "val_" + cfg.select_by, "step": -1}
        # h_freeze_patience: h's held-out MI peak so far (step, score, EMA weights of h) and the step h froze at.
        self.h_peak: dict[str, Any] = {"step": -1, "score": -math.inf, "state": None}
        self.h_frozen_at = -1
        self.started = time.time()
        self.elapsed_before = 0.0

    # ------------------------------------------------------------------ checkpointing
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "best": self.best, "opt_d": self.opt_d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_h": self.opt_h.state_dict(),
                "opt_a": self.opt_a.state_dict() if self.opt_a else None,
                "it_real": self.it_real.state_dict(), "it_lab": self.it_lab.state_dict() if self.it_lab else None,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "gen_latent": None if self.gen_latent is self.gen else self.gen_latent.get_state(),
                "h_peak": self.h_peak, "h_frozen_at": self.h_frozen_at,
                "elapsed": self.elapsed_before + time.time() - self.started}

    def save_last(self) -> None:
        state = self.state()
        if self.ema is not self.model:
            state["ema"] = self.ema.state_dict()
        self.model.save(self.out / "last.pt", {"trainer": state})

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is self.model:
            return
        # Warm-up (as TF / timm): early on the average would be dominated by the random init.
        d = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for net in ("g", "h"):
            src, dst = getattr(self.model, net), getattr(self.ema, net)
            for p_ema, p in zip(dst.parameters(), src.parameters()):
                p_ema.lerp_(p, 1 - d)
            # Batch-norm running statistics are averaged the same way, so that they stay consistent
            # with the averaged weights (copying the live ones made the EMA model predict one class).
            for b_ema, b in zip(dst.buffers(), src.buffers()):
                if b.dtype.is_floating_point:
                    b_ema.lerp_(b, 1 - d)
                else:
                    b_ema.copy_(b)
        self.ema.latent.load_state_dict(self.model.latent.state_dict())

    def resume(self) -> bool:
        p = self.out / "last.pt"
        if not p.is_file():
            return False
        ckpt = torch.load(p, map_location=self.device, weights_only=False)
        def model_options(d: dict) -> dict:
            return {k: v for k, v in d.items() if k not in RUN_ONLY_OPTIONS}

        # An option added after the checkpoint was written is missing there: it ran with the default.
        saved = TrainConfig.from_dict(ckpt["config"]).to_dict()
        if model_options(saved) != model_options(self.cfg.to_dict()):
            diff = sorted(k for k, v in model_options(self.cfg.to_dict()).items() if saved.get(k) != v)
            raise ValueError(f"{p} was written with different options ({', '.join(diff)}); use a new --out "
                             f"or the same options (only {', '.join(sorted(RUN_ONLY_OPTIONS))} may change on resume)")
        self.model.load_state_dict(ckpt["model"])
        t = ckpt["trainer"]
        self.step, self.best = t["step"], t["best"]
        self.opt_d.load_state_dict(t["opt_d"])
        self.opt_g.load_state_dict(t["opt_g"])
        self.opt_h.load_state_dict(t["opt_h"])
        if self.opt_a and t["opt_a"]:
            self.opt_a.load_state_dict(t["opt_a"])
        self.it_real.load_state_dict(t["it_real"])
        if self.it_lab and t["it_lab"]:
            self.it_lab.load_state_dict(t["it_lab"])
        if "ema" in t and self.ema is not self.model:
            self.ema.load_state_dict(t["ema"])
        self.gen.set_state(t["gen"].cpu())  # map_location moved the RNG states to the device
        torch.set_rng_state(t["torch_rng"].cpu())
        if self.gen_latent is not self.gen and t.get("gen_latent") is not None:
            self.gen_latent.set_state(t["gen_latent"].cpu())
        self.elapsed_before = t.get("elapsed", 0.0)
        self.h_peak = t.get("h_peak", self.h_peak)
        if t.get("h_frozen_at", -1) >= 0:
            self.h_frozen_at = t["h_frozen_at"]
            self.model.h.eval()
        return True

    # ------------------------------------------------------------------ one step
    # Every rank draws the same global batch and keeps its rows (training/distributed.py).
    def real_batch(self) -> torch.Tensor:
        return to_device(self.x_train[self.dist.shard(next(self.it_real))], self.device)

    def sample_latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        z, modes = self.model.latent.sample(self.cfg.batch_size, generator=self.gen_latent)
        return self.dist.shard(z).to(self.device), self.dist.shard(modes).to(self.device)

    def labeled_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        j = next(self.it_lab)
        x_l = random_shift(self.x_train[self.lab_idx[j]], self.cfg.sup_augment, self.gen)
        if self.cfg.sup_warp:  # 10 images a class: the warps the consistency term uses widen them cheaply
            x_l = self.warp(x_l)
        x_l, y_l = self.dist.shard(x_l, whole_if_uneven=True), self.dist.shard(self.y_lab[j], whole_if_uneven=True)
        return to_device(x_l, self.device), y_l.to(self.device)

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """The configured random affine warp (aug_*): the consistency term's, and sup_warp's."""
        cfg = self.cfg
        # With aug_color the background is any colour: pad the warp with each image's own edge, not black.
        x = random_affine(x, self.gen, cfg.aug_rotate, cfg.aug_scale, cfg.aug_shear, cfg.aug_shift,
                          background=None if cfg.aug_color else -1.0, flip=cfg.aug_flip)
        return random_color(x, self.gen) if cfg.aug_color else x

    def real_classes(self, idx: torch.Tensor | np.ndarray, x_real: torch.Tensor) -> torch.Tensor:
        """The class of each real image for the K-output critic: its label (supervised MM-GAN) or, with
        d_pseudo_labels, the EMA h's cluster (no label read; the EMA h moves slowly, so the critic's
        heads see a steady split of the real data)."""
        if self.cfg.supervised_mmgan:
            return torch.from_numpy(self.y_train[idx]).long().to(self.device)
        h = self.ema.h
        was = h.training  # (ema 0: the live h, whose batch-norm must not count this batch)
        h.eval()
        with torch.no_grad():
            y = h(x_real)[1].argmax(1)
        h.train(was)
        return y

    def gp_eps(self) -> torch.Tensor:
        return to_device(self.dist.shard(torch.rand(self.cfg.batch_size, 1, 1, 1)), self.device)

    def set_learning_rates(self) -> None:
        """Cosine decay (config lr_decay_steps) of every optimiser's rate from its configured value."""
        cfg = self.cfg
        f = 0.5 * (1 + math.cos(math.pi * min(self.step, cfg.lr_decay_steps) / cfg.lr_decay_steps))
        for opt, lr in ((self.opt_d, cfg.lr_d), (self.opt_g, cfg.lr_g), (self.opt_h, cfg.lr_h)):
            for group in opt.param_groups:
                group["lr"] = lr * f

    def train_step(self) -> dict[str, float]:
        cfg, m = self.cfg, self.model
        stats: dict[str, float] = {}
        if cfg.lr_decay_steps:
            self.set_learning_rates()
        cond_d = cfg.conditional_d

        # 1. discriminator / critic
        for _ in range(cfg.n_critic):
            idx = self.dist.shard(next(self.it_real))
            x_real = to_device(self.x_train[idx], self.device)
            with torch.no_grad():
                z, modes = self.sample_latent()
                x_fake = self.G(z)
            d_real, d_fake = self.D(x_real), self.D(x_fake)
            if cond_d:
                loss_d = L.d_loss_supervised(d_real, self.real_classes(idx, x_real), d_fake)
            elif cfg.gan_loss == "wgan-gp":
                loss_d = L.d_loss_wgan(d_real, d_fake) + cfg.gp_weight * L.gradient_penalty(m.d, x_real, x_fake, self.gp_eps())
            else:
                loss_d = L.d_loss_gan(d_real, d_fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        stats["loss_d"] = loss_d.item()

        # 2. generator + inverter
        z, modes = self.sample_latent()
        x = self.G(z)
        d_fake = self.D(x)
        if cond_d:
            loss_adv = L.g_loss_supervised(d_fake, modes)
        else:
            loss_adv = L.g_loss_wgan(d_fake) if cfg.gan_loss == "wgan-gp" else L.g_loss_gan(d_fake)
        h_live = self.h_frozen_at < 0  # h_freeze_patience: once frozen, no loss updates h
        # C2-bar ablation: h still learns to invert g, but its losses do not reach g.
        if cfg.c2 and (not (0 <= cfg.h_mode_start <= self.step) or not h_live):
            # The mode loss reaches g through h's current weights without updating them (live h2 does not
            # run: under DDP every wrapped network that runs forward must get gradients).
            z_hat = self.H.h1(x)
            frozen = {k: v.detach() for k, v in m.h.named_parameters()}
            _, logits = torch.func.functional_call(m.h, (frozen, dict(m.h.named_buffers())), (x,))
        else:
            z_hat, logits = self.H(x if cfg.c2 else x.detach())
        loss_lat = L.latent_loss(z, z_hat, cfg.latent_norm)
        if cfg.mode_loss == "ce":
            loss_mode = L.mode_loss_ce(logits, modes)
        else:
            loss_mode = L.mode_loss_kl(logits, m.latent.priors().detach())
        loss = loss_adv + cfg.latent_weight * loss_lat + cfg.mode_weight * loss_mode
        if self.it_lab is not None and self.step % cfg.sup_every == 0 and h_live:
            x_l, y_l = self.labeled_batch()
            _, logits_l = self.H(x_l)
            loss_sup = torch.nn.functional.cross_entropy(logits_l, y_l)
            loss = loss + cfg.sup_weight * loss_sup
            stats["loss_sup"] = loss_sup.item()
        if (cfg.im_weight or cfg.consistency_weight) and h_live:
            loss = loss + self.real_image_terms(stats)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_h.zero_grad(set_to_none=True)
        if self.opt_a:
            self.opt_a.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if h_live:
            self.opt_h.step()
        stats.update(loss_g=loss_adv.item(), loss_lat=loss_lat.item(), loss_mode=loss_mode.item())

        # 3. learned priors: match softmax(alpha) to h's estimate of the real mode distribution (001 eq. 16)
        if self.opt_a is not None and self.step >= cfg.prior_start:
            with torch.no_grad():
                m.h.eval()
                p_hat = torch.softmax(m.h(self.real_batch())[1], 1).mean(0)
                m.h.train(h_live)
            self.opt_a.zero_grad(set_to_none=True)
            loss_a = L.prior_kl(p_hat, torch.log_softmax(m.latent.alpha, 0))
            loss_a.backward()
            self.opt_a.step()
            stats["loss_alpha"] = loss_a.item()
        self.update_ema()
        return stats

    def real_image_terms(self, stats: dict[str, float]) -> torch.Tensor:
        """The extensions on real images (config: im_weight, consistency_weight): h's prediction on a real
        batch should use every mode, be confident, and not change under a small affine warp."""
        cfg, h = self.cfg, self.H  # the training view: bf16/compile/DDP as configured (m.h by default)
        n = cfg.real_batch or cfg.batch_size
        idx = torch.randint(0, len(self.x_train), (n,), generator=self.gen)
        x = to_device(self.x_train[idx], self.device)
        _, logits = h(x)
        total = torch.zeros((), device=self.device)
        if cfg.im_weight:
            loss_im, mi = L.info_max(logits, cfg.im_balance)
            total = total + cfg.im_weight * loss_im
            stats.update(loss_im=loss_im.item(), mi_train=mi.item())
        if cfg.consistency_weight:
            _, logits_aug = h(self.warp(x))
            loss_c = L.consistency(logits, logits_aug, cfg.consistency_temp)
            total = total + cfg.consistency_weight * loss_c
            stats["loss_cons"] = loss_c.item()
        return total

    # ------------------------------------------------------------------ evaluation and samples
    def evaluate(self) -> dict[str, float]:
        """Label-free signals first (what `select_by: mi` selects on), then the labeled scores, which are
        only logged: the held-out labels never choose a checkpoint unless `select_by: val_acc`."""
        pred, probs = self.ema.cluster(self.x_val.to(self.device))
        p = torch.from_numpy(probs).double().clamp_min(1e-12)
        cond = -(p * p.log()).sum(1).mean()
        marg = -(p.mean(0) * p.mean(0).log()).sum()
        usage = np.bincount(pred, minlength=self.model.n_modes) / max(1, len(pred))
        out = {"val_mi": float(marg - cond), "val_modes_used": int((usage > 0.2 / self.model.n_modes).sum()),
               "val_usage_max": float(usage.max())}
        out["val_gen_agree"] = self.gen_agreement()
        if self.y_val is None:  # unlabeled data: the label-free metrics only
            return out
        rep = clustering_report(self.y_val, pred)
        out.update({f"val_{k}": float(v) for k, v in rep.items() if k != "n_samples"})
        if self.ema is not self.model:  # the live weights too: shows what the average buys
            live, _ = self.model.cluster(self.x_val.to(self.device))
            out["val_acc_live"] = float(clustering_report(self.y_val, live)["acc"])
        return out

    def gen_agreement(self, per_mode: int = 100) -> float:
        """Label-free: the share of g's samples of mode k that h assigns to mode k (the EMA model, fixed
        latents, so evaluations compare like with like)."""
        pred, _ = self.ema.cluster(torch.from_numpy(self.per_mode_samples(per_mode, seed=4321)).to(self.device))
        return float((pred == np.repeat(np.arange(self.model.n_modes), per_mode)).mean())

    def per_mode_samples(self, n: int, seed: int) -> np.ndarray:
        """n images of every mode in mode order, from the EMA model (mode k draws with seed + k)."""
        return np.concatenate([self.ema.generate(n, mode=k, sigma=1.0, seed=seed + k)[0]
                               for k in range(self.model.n_modes)])

    def select(self, row: dict[str, float]) -> None:
        """best.pt: the checkpoint with the best `select_by` score; once h is frozen (h_freeze_patience) h's
        MI no longer moves, and the best g is the one h agrees with most (val_gen_agree, label-free)."""
        key = "val_gen_agree" if self.h_frozen_at >= 0 else "val_" + self.cfg.select_by
        if self.best["by"] != key:  # h just froze: the new criterion starts its own record
            self.best = {"score": -math.inf, "by": key, "step": -1}
        if row[key] > self.best["score"]:
            self.best = {"score": row[key], "by": key, "step": self.step, "val_acc": row.get("val_acc")}
            if self.h_frozen_at >= 0:
                self.best.update(h_frozen_at=self.h_frozen_at, h_from_step=self.h_peak["step"])
            self.ema.save(self.out / "best.pt", {"best": self.best})

    def watch_h_peak(self, row: dict[str, float] | None) -> None:
        """h_freeze_patience: keep h's weights at its held-out MI peak; once the peak is `patience` steps old,
        put them back and freeze h (every rank: the decision and the weights come from rank 0)."""
        patience = self.cfg.h_freeze_patience
        if not patience or self.h_frozen_at >= 0:
            return
        freeze = False
        if row is not None:  # rank 0, which evaluated
            if row["val_mi"] > self.h_peak["score"]:
                self.h_peak = {"step": self.step, "score": row["val_mi"],
                               "state": {k: v.detach().cpu().clone() for k, v in self.ema.h.state_dict().items()}}
            freeze = self.step - self.h_peak["step"] >= patience
        if not self.dist.any_rank(freeze):
            return
        if self.dist.is_main:
            self.model.h.load_state_dict(self.h_peak["state"])
        self.dist.broadcast_(self.model.h)
        if self.ema is not self.model:
            self.ema.h.load_state_dict(self.model.h.state_dict())
        self.model.h.eval()  # batch-norm running statistics stay as they were at the peak
        self.h_frozen_at = self.step

    def save_samples(self, tag: str) -> Path:
        ncol = 10
        return save_grid(self.per_mode_samples(ncol, seed=1234), self.out / "samples" / f"{tag}.png", nrow=ncol)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        main = self.dist.is_main  # the only writer of the run folder
        if main:
            self.cfg.save(self.out / "options.json")
        stats_f = open(self.out / "stats.jsonl", "a") if main else None
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc="train", unit="step")
        acc: dict[str, list[float]] = {}
        try:
            while self.step < cfg.steps:
                s = self.train_step()
                for k, v in s.items():
                    acc.setdefault(k, []).append(v)
                self.step += 1
                bar.update(1)
                last = self.step == cfg.steps or self.out_of_time()
                if self.step % cfg.log_every == 0 or last:
                    row = {"step": self.step, "time_s": round(self.elapsed(), 1),
                           **self.dist.mean_stats({k: float(np.mean(v)) for k, v in acc.items()}),
                           "priors": [round(p, 4) for p in self.model.latent.priors().tolist()]}
                    acc.clear()
                    self.dist.check_in_sync(self.model)
                    if any(not math.isfinite(v) for k, v in row.items() if k.startswith("loss")):
                        raise FloatingPointError(f"non-finite loss at step {self.step}: {row}")
                    if self.step % cfg.eval_every == 0 or last:
                        if main:
                            row.update(self.evaluate())
                            self.select(row)
                            row["best_step"] = self.best["step"]
                        self.watch_h_peak(row if main else None)  # every rank: the freeze is collective
                        if self.h_frozen_at >= 0:
                            row["h_frozen_at"] = self.h_frozen_at
                    if stats_f:
                        stats_f.write(json.dumps(row) + "\n")
                        stats_f.flush()
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()
                                     if k in ("loss_d", "loss_g", "loss_mode", "val_acc")})
                if (self.step % cfg.sample_every == 0 or last) and main:
                    self.save_samples(f"step{self.step:07d}")
                if (self.step % cfg.ckpt_every == 0 or last) and main:
                    self.save_last()
                if last:  # the step count, or time_limit_s
                    break
        finally:
            bar.close()
            if stats_f:
                stats_f.close()
        summary = {"steps": self.step, "best": self.best, "train_time_s": round(self.elapsed(), 1),
                   "out_dir": str(self.out), "device": str(self.device), "world_size": self.dist.world}
        if main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.dist.barrier()  # the run folder is complete before any rank returns
        return summary

    def out_of_time(self) -> bool:
        """time_limit_s is up (checked every log_every steps; under DDP rank 0's clock decides for every rank)."""
        if not self.cfg.time_limit_s or self.step % self.cfg.log_every:
            return False
        return self.dist.any_rank(self.dist.is_main and time.time() - self.started >= self.cfg.time_limit_s)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    if cfg.dry_run:
        # One cheap smoke run: fake data, a few steps, tiny evaluation.
        cfg.steps = min(cfg.steps, 3)
        cfg.log_every = cfg.eval_every = cfg.sample_every = cfg.ckpt_every = max(1, cfg.steps)
        cfg.val_samples = 32
    ok = False
    try:
        t = Trainer(cfg, progress=progress)
        if resume:
            t.resume()  # no last.pt yet: start fresh
        result = t.fit()
        ok = True
        return result
    finally:
        distributed.teardown(barrier=ok)
