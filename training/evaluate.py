"""Evaluate a checkpoint or an exported model directory with the metric registry.

The real-data classifier behind FCD / generation purity / quality-diversity is trained once per data
set and cached (training.classifier.get_or_train_classifier), so repeated evaluations are cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cluster import cluster_generated_classifier
from .config import TrainConfig
from .dataset import load_dataset
from .metrics import MetricContext, clustering_report, compute_metrics
from .model import NemganModel
from .train import load_training_data

DEFAULT_METRICS = ("cluster", "gen_purity", "fcd", "prior_error")


def load_any(path: str | Path) -> NemganModel:
    """A run folder, a .pt checkpoint or an exported model directory."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        from .export import load_exported

        return load_exported(p)
    return NemganModel.load(p)


def evaluate(model: NemganModel, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, split: str = "test",
             data_root: str | None = None, cache_dir: str | Path = "runs/.cache", num_gen: int = 10000,
             algorithm2: bool = False, max_samples: int | None = None, seed: int = 0,
             classifier_steps: int = 2000, sigmas: list[float] | None = None,
             algorithm2_samples_per_mode: int = 1000, algorithm2_steps: int = 1000) -> dict[str, Any]:
    cfg: TrainConfig = model.cfg
    model.eval()
    data_cfg = TrainConfig.from_dict({**cfg.to_dict(), "data_root": data_root or cfg.data_root})
    test = load_training_data(data_cfg, split)
    if max_samples:
        test = test.subset(np.random.default_rng(seed).permutation(len(test.x))[:max_samples])
    needs_clf = any(m in ("fcd", "gen_purity", "quality_diversity") for m in metrics)
    clf = train = None
    if needs_clf:
        from .classifier import get_or_train_classifier

        train = load_training_data(data_cfg, "train")
        name = cfg.dataset if not cfg.dry_run else "dry-run"
        tag = f"{name}-{'-'.join(map(str, cfg.classes or []))}{'g' if cfg.groups else ''}".rstrip("-")
        clf = get_or_train_classifier(tag, train.x, train.y, train.n_classes, cache_dir,
                                      steps=classifier_steps, seed=seed, progress=False)

    def h_predict(x: np.ndarray) -> np.ndarray:
        return model.cluster(torch.from_numpy(np.ascontiguousarray(x, np.float32)))[0]

    def generate(n, mode, sigma, s):
        return model.generate(n, mode, sigma, s)

    ctx = MetricContext(h_predict=h_predict, generate=generate, x_test=test.x, y_test=test.y,
                        n_modes=model.n_modes, classifier=clf, learned_priors=model.latent.priors().detach().numpy(),
                        true_priors=test.priors if test.y is not None else None,
                        x_train=train.x if train is not None else None, num_gen=num_gen, seed=seed,
                        n_classes=test.n_classes, **({"sigmas": list(sigmas)} if sigmas else {}))
    out: dict[str, Any] = {"split": split, "n_samples": int(len(test.x)), **compute_metrics(list(metrics), ctx)}
    if algorithm2:
        pred = cluster_generated_classifier(model, test.x, samples_per_mode=algorithm2_samples_per_mode,
                                            steps=algorithm2_steps, seed=seed)
        out["cluster_algorithm2"] = clustering_report(test.y, pred)
    return out
