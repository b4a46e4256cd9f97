"""NemganModel: latent + g + h1/h2 + d in one module, with a checkpoint that rebuilds itself.

The checkpoint stores the TrainConfig and the data facts (n_modes, image shape, class names, true
priors) next to the weights, so `NemganModel.load(path)` needs nothing else (nanoGPT style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig
from .latents import Latent, build_latent
from .networks import Discriminator, Generator, Inverter, NetConfig, init_weights


class NemganModel(nn.Module):
    def __init__(self, cfg: TrainConfig, n_modes: int, image_shape: tuple[int, int, int],
                 class_names: list[str] | None = None, data_priors: list[float] | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_modes = int(n_modes)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.class_names = list(class_names) if class_names else None
        self.data_priors = list(map(float, data_priors)) if data_priors is not None else None
        self.net_cfg: NetConfig = cfg.net_config(self.n_modes, self.image_shape)
        self.latent: Latent = build_latent(
            "unimodal" if not cfg.c1 else cfg.latent_kind, self.n_modes, cfg.latent_dim,
            priors=self.initial_priors(), learn_priors=self.learns_priors,
            noise_width=cfg.noise_width, mode_scale=cfg.mode_scale, step_slope=cfg.step_slope,
            mm_c=cfg.mm_c, mm_sigma=cfg.mm_sigma, seed=cfg.seed)
        self.g = Generator(self.net_cfg)
        self.h = Inverter(self.net_cfg)
        self.d = Discriminator(self.net_cfg)
        for m in (self.g, self.h, self.d):
            m.apply(init_weights)

    # ------------------------------------------------------------------ priors
    @property
    def learns_priors(self) -> bool:
        return self.cfg.priors == "learned"

    def initial_priors(self) -> list[float] | None:
        p = self.cfg.priors
        if isinstance(p, list):
            if len(p) != self.n_modes:
                raise ValueError(f"priors has {len(p)} values, the model has {self.n_modes} modes")
            return p
        if p == "data" or (self.cfg.c3 and p == "uniform"):
            # Condition C3 of paper 003: the latent's mode priors matched to the data's class frequencies.
            if self.data_priors is None:
                raise ValueError("priors='data' (or c3) needs the data set's class frequencies")
            return self.data_priors
        return None  # uniform (also the starting point when priors are learned)

    # ------------------------------------------------------------------ inference helpers
    @torch.no_grad()
    def cluster(self, x: torch.Tensor, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Mode ids and probabilities of h2(h1(x)) for float images in [-1, 1]."""
        was = self.h.training
        self.h.eval()
        probs = []
        for i in range(0, len(x), batch_size):
            _, logits = self.h(x[i:i + batch_size])
            probs.append(torch.softmax(logits, 1).cpu())
        self.h.train(was)
        p = torch.cat(probs).numpy() if probs else np.zeros((0, self.n_modes), np.float32)
        return p.argmax(1), p

    @torch.no_grad()
    def generate(self, n: int, mode: int | None = None, sigma: float = 1.0, seed: int | None = None,
                 batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Images float32 [-1, 1] NCHW and their modes, latents drawn by the numpy spec sampler
        (the same draw the exported model and the service make for a given seed)."""
        from core.latent import sample_latents

        z, modes = sample_latents(self.latent.spec(), n, mode, sigma, seed)
        was = self.g.training
        self.g.eval()
        dev = next(self.g.parameters()).device
        out = [self.g(torch.from_numpy(z[i:i + batch_size]).to(dev)).cpu() for i in range(0, n, batch_size)]
        self.g.train(was)
        x = torch.cat(out).numpy() if out else np.zeros((0, *self.image_shape), np.float32)
        return x, modes

    # ------------------------------------------------------------------ checkpoint
    def meta(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "n_modes": self.n_modes, "image_shape": list(self.image_shape),
                "class_names": self.class_names, "data_priors": self.data_priors}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Atomic: write to a temporary file then rename, so a crash never leaves half a checkpoint."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({**self.meta(), "model": self.state_dict(), **(extra or {})}, tmp)
        tmp.replace(path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "NemganModel":
        cfg = TrainConfig.from_dict(ckpt["config"])
        m = cls(cfg, ckpt["n_modes"], tuple(ckpt["image_shape"]), ckpt.get("class_names"), ckpt.get("data_priors"))
        # Exported checkpoints drop the discriminator (not needed to serve or to retrain h): allow that only.
        missing, unexpected = m.load_state_dict(ckpt["model"], strict=False)
        bad = [k for k in missing if not k.startswith("d.")] + list(unexpected)
        if bad:
            raise ValueError(f"checkpoint does not match the model: {bad[:5]}")
        return m

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> "NemganModel":
        path = Path(path)
        if path.is_dir():  # a run folder or an exported model directory
            for name in ("best.pt", "checkpoint.pt", "last.pt"):
                if (path / name).is_file():
                    path = path / name
                    break
            else:
                raise FileNotFoundError(f"{path} holds no best.pt, checkpoint.pt or last.pt")
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        return cls.from_checkpoint(ckpt)
