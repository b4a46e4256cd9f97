"""Evaluate a checkpoint or an exported model directory with the metric registry.

The real-data classifier behind FCD / generation purity / quality-diversity is trained once per data
set and cached (training.classifier.get_or_train_classifier), so repeated evaluations are cheap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .cluster import cluster_generated_classifier
from .config import TrainConfig
from .metrics import clustering_report
from .model import NemganModel
from .dataset.run import load_training_data

DEFAULT_METRICS = ("cluster", "gen_purity", "fcd", "prior_error")


def load_any(path: str | Path) -> NemganModel:
    """A run folder, a .pt checkpoint or an exported model directory."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        from .export import load_exported

        return load_exported(p)
    return NemganModel.load(p)


# What each metric computes, said before anything runs ({...} filled from the evaluation's sizes); a metric
# registered elsewhere is described by its docstring's first line.
METRIC_WORK = {
    "cluster": "h's mode for each of the {n_test} {split} images -> Hungarian ACC, NMI, ARI, purity",
    "gen_purity": "{num_gen} generated images labeled by the real-data classifier -> score (share of all of them "
                  "in their mode's class, modes and classes matched one to one) and per-mode purity",
    "fcd": "Frechet distance of classifier features, {num_gen} generated vs the {n_test} {split} images",
    "prior_error": "learned priors vs the {split} set's class frequencies",
    "reconstruction": "g(h1(x)) of the {n_test} {split} images labeled by the real-data classifier vs their labels",
    "quality_diversity": "quality and diversity scores at sigma {sigmas}, generated images per sigma",
}


def plan(metrics, n_test: int, split: str, num_gen: int, sigmas, classifier: str | None,
         algorithm2: str | None) -> list[str]:
    """The lines `evaluate` says up front: what it will compute, on what, and what takes long."""
    from .metrics import METRICS

    lines = [f"evaluating on {n_test} {split} images:"]
    for i, m in enumerate(metrics, 1):
        doc = (METRICS[m].__doc__ or m).strip().splitlines()[0] if m in METRICS else m
        what = METRIC_WORK.get(m, doc).format(n_test=n_test, split=split, num_gen=num_gen, sigmas=sigmas)
        lines.append(f"  {i}. {m}: {what}")
    if classifier:
        lines.append(f"  real-data classifier: {classifier}")
    if algorithm2:
        lines.append(f"  Algorithm 2 (004): {algorithm2}")
    return lines


def evaluate(model: NemganModel, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, split: str = "test",
             data_root: str | None = None, cache_dir: str | Path = "runs/.cache", num_gen: int = 10000,
             algorithm2: bool = False, max_samples: int | None = None, seed: int = 0,
             classifier_steps: int = 2000, sigmas: list[float] | None = None,
             algorithm2_samples_per_mode: int = 1000, algorithm2_steps: int = 1000,
             report: Callable[[str], None] | None = None, progress: bool = False) -> dict[str, Any]:
    """The metrics of `model` on `split`. `report(line)` is told the plan up front and each phase as it
    starts and ends; `progress` shows bars for the long phases (classifier training, generation, h on the
    test set, Algorithm 2)."""
    from tqdm.auto import tqdm

    from .metrics import METRICS, MetricContext, compute_metrics, list_metrics

    say = report or (lambda line: None)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:  # before minutes of work
        raise ValueError(f"unknown metric(s) {unknown}; available: {list_metrics()}")
    cfg: TrainConfig = model.cfg
    model.eval()
    data_cfg = TrainConfig.from_dict({**cfg.to_dict(), "data_root": data_root or cfg.data_root})
    test = load_training_data(data_cfg, split)
    if max_samples:
        test = test.subset(np.random.default_rng(seed).permutation(len(test.x))[:max_samples])
    needs_clf = any(m in ("fcd", "gen_purity", "quality_diversity", "reconstruction") for m in metrics)
    name = cfg.dataset if not cfg.dry_run else "dry-run"
    tag = f"{name}-{'-'.join(map(str, cfg.classes or []))}{'g' if cfg.groups else ''}".rstrip("-")
    clf_path = Path(cache_dir) / f"{tag}-classifier.pt"
    clf_note = None
    if needs_clf:
        clf_note = (f"cached in {clf_path}" if clf_path.is_file() else
                    f"trained first on the training set for {classifier_steps} steps, then cached in {clf_path}")
    alg2_note = (f"a classifier on {algorithm2_samples_per_mode} generated images per mode, {algorithm2_steps} "
                 "steps, labels the test images") if algorithm2 else None
    for line in plan(metrics, len(test.x), split, num_gen, list(sigmas or MetricContext().sigmas), clf_note,
                     alg2_note):
        say(line)

    clf = train = None
    if needs_clf:
        from .classifier import get_or_train_classifier

        t = time.perf_counter()
        train = load_training_data(data_cfg, "train")
        say("real-data classifier: " + ("loading" if clf_path.is_file() else f"training on {len(train.x)} images"))
        clf = get_or_train_classifier(tag, train.x, train.y, train.n_classes, cache_dir,
                                      steps=classifier_steps, seed=seed, progress=progress)
        say(f"real-data classifier: ready in {time.perf_counter() - t:.0f} s")

    bar = None  # the current metric's progress: images through h or g

    def h_predict(x: np.ndarray) -> np.ndarray:
        out = model.cluster(torch.from_numpy(np.ascontiguousarray(x, np.float32)))[0]
        if bar is not None:
            bar.update(len(x))
        return out

    def generate(n, mode, sigma, s):
        out = model.generate(n, mode, sigma, s)
        if bar is not None:
            bar.update(n)
        return out

    @torch.no_grad()
    def reconstruct(x: np.ndarray) -> np.ndarray:  # g(h1(x)): what /v1/cluster?return_reconstruction answers
        return model.g(model.h.h1(torch.from_numpy(np.ascontiguousarray(x, np.float32)))).numpy()

    ctx = MetricContext(h_predict=h_predict, generate=generate, reconstruct=reconstruct, x_test=test.x, y_test=test.y,
                        n_modes=model.n_modes, classifier=clf, learned_priors=model.latent.priors().detach().numpy(),
                        true_priors=test.priors if test.y is not None else None,
                        x_train=train.x if train is not None else None, num_gen=num_gen, seed=seed,
                        n_classes=test.n_classes, **({"sigmas": list(sigmas)} if sigmas else {}))
    out: dict[str, Any] = {"split": split, "n_samples": int(len(test.x))}
    for i, m in enumerate(metrics, 1):
        say(f"[{i}/{len(metrics)}] {m} ...")
        t = time.perf_counter()
        bar = tqdm(desc=m, unit="img", disable=not progress, leave=False)
        try:
            out.update(compute_metrics([m], ctx))  # one context: metrics share its cached features
        finally:
            bar.close()
            bar = None
        say(f"[{i}/{len(metrics)}] {m} done in {time.perf_counter() - t:.0f} s")
    if algorithm2:
        say("Algorithm 2 ...")
        t = time.perf_counter()
        pred = cluster_generated_classifier(model, test.x, samples_per_mode=algorithm2_samples_per_mode,
                                            steps=algorithm2_steps, seed=seed, progress=progress)
        out["cluster_algorithm2"] = clustering_report(test.y, pred)
        say(f"Algorithm 2 done in {time.perf_counter() - t:.0f} s")
    return out
