"""Evaluating one trained row: the test-split metrics, and its extras (prior learning, Algorithm 2, the
sigma quality/diversity sweep).
"""

from __future__ import annotations

from pathlib import Path

from .rows import Options, SIGMAS
from .util import FileLock


def classifier_tag(cfg) -> str:
    """The cache name training.evaluate uses for the real-data classifier of this config."""
    name = cfg.dataset if not cfg.dry_run else "dry-run"
    return f"{name}-{'-'.join(map(str, cfg.classes or []))}{'g' if cfg.groups else ''}".rstrip("-")


def load_model(path: Path):
    """NemganModel.load plus a guard for a training/ bug: Latent.spec() takes the priors from a float32 softmax,
    whose sum can be off from 1 by ~1e-7, beyond the 1.5e-8 numpy's Generator.choice allows, so sampling modes
    from learned priors (FCD, sigma sweep, export) raises "Probabilities do not sum to 1". Renormalise them in
    float64 on this instance (harmless once training/latents.py does it itself)."""
    from training.model import NemganModel

    model = NemganModel.load(path)
    orig = model.latent.spec

    def spec():
        sp = orig()
        return sp.with_priors(sp.priors)

    model.latent.spec = spec
    return model


def _align_priors(priors, mapping: dict, n: int) -> list[float]:
    """Re-index mode priors into class order via a mode -> class mapping (unmatched modes fill the rest)."""
    out = [None] * n
    for mode, cls in mapping.items():
        if mode < len(priors) and cls < n:
            out[cls] = float(priors[mode])
    rest = [float(priors[k]) for k in range(len(priors)) if k not in mapping]
    for i in range(n):
        if out[i] is None:
            out[i] = rest.pop(0) if rest else 0.0
    return out


def _balanced_test_report(model) -> dict | None:
    """001 sec. 3 reports ACC/NMI/ARI 'on balanced test data': for the ratio presets (MNIST-2) evaluate
    also on the test split of the same classes without the imbalance."""
    import torch

    from core.images import uint8_to_model
    from training.dataset import PRESETS, DataSpec, load_dataset
    from training.metrics import clustering_report

    cfg = model.cfg
    base = dict(PRESETS.get(cfg.dataset, {}))
    if cfg.dry_run or not (base.get("ratios") or cfg.ratios) or cfg.groups:
        return None
    base.pop("ratios", None)
    if cfg.classes:
        base["classes"] = cfg.classes
    ds = load_dataset(DataSpec(**base, split="test", seed=cfg.seed), data_root=cfg.data_root)
    pred, _ = model.cluster(torch.from_numpy(uint8_to_model(ds.x)))
    rep = clustering_report(ds.y, pred)
    return {k: float(v) for k, v in rep.items()}


def evaluate_row(model, opts: Options) -> dict:
    from training.evaluate import evaluate

    cache = Path(opts.cache_dir)
    with FileLock(cache / f".{classifier_tag(model.cfg)}.lock"):
        res = evaluate(model, ("cluster", "gen_purity", "fcd", "prior_error"), split="test", cache_dir=cache,
                       num_gen=opts.num_gen, classifier_steps=opts.classifier_steps, seed=opts.seed)
    bal = _balanced_test_report(model)
    if bal:
        res["cluster_balanced_test"] = bal
    return res


def headline(ev: dict, source: str) -> dict:
    c = ev.get("cluster_balanced_test") or ev["cluster"]
    h = {k: c.get(k) for k in ("acc", "nmi", "ari", "purity")}
    h["fcd"] = ev.get("fcd", {}).get("fcd")
    h["source"] = source + (" (balanced test set, as 001 sec. 3)" if "cluster_balanced_test" in ev else "")
    return h


def prior_learning(model, run_dir: Path, opts: Options) -> dict:
    """001 eq. (16): retrain h on the labeled set, fit alpha to h's mode distribution on unlabeled data."""
    import numpy as np

    from training.metrics import hungarian_mapping, prior_error
    from training.priors import learn_priors
    from training.dataset.run import load_training_data, run_split

    cfg = model.cfg
    if not cfg.semi_supervised:
        raise ValueError("prior learning needs a labeled set: the row must be semi-supervised")
    # The exact split the run used (held-out val slice, labeled subset), as the Trainer draws it.
    ds = load_training_data(cfg, "train")
    split = run_split(cfg, ds)
    x_tr = ds.x[split.train_idx]
    x_l, y_l = split.labeled(ds)
    true = list(map(float, model.data_priors))
    n = len(true)

    def aligned() -> list[float]:
        pred, _ = model.cluster(torch_from_uint8(x_l))
        return _align_priors(model.latent.priors().detach().cpu().numpy(), hungarian_mapping(y_l, pred), n)

    before = aligned()
    res = learn_priors(model, x_l, y_l, x_tr, method="kl", h_steps=opts.prior_h_steps,
                       alpha_steps=opts.prior_alpha_steps, seed=opts.seed)
    after = aligned()
    model.save(run_dir / "prior_learned.pt", {"prior_learning": res.metrics})
    return {"method": "kl (001 eq. 16)", "n_labeled": int(len(x_l)), "n_unlabeled": int(len(x_tr)),
            "labeled_acc": res.metrics.get("labeled_acc"), "true_priors": true,
            "priors_after_training": before, "learned_priors": after,
            "error": prior_error(np.asarray(after) / np.sum(after), np.asarray(true)),
            "error_after_training": prior_error(np.asarray(before) / np.sum(before), np.asarray(true)),
            "h_steps": opts.prior_h_steps, "alpha_steps": opts.prior_alpha_steps}


def torch_from_uint8(x):
    import torch

    from core.images import uint8_to_model

    return torch.from_numpy(uint8_to_model(x))


def algorithm2(model, opts: Options) -> dict:
    from training.cluster import cluster_generated_classifier
    from training.metrics import clustering_report
    from training.dataset.run import load_training_data

    test = load_training_data(model.cfg, "test")
    pred = cluster_generated_classifier(model, test.x, samples_per_mode=opts.alg2_samples, steps=opts.alg2_steps,
                                        seed=opts.seed)
    rep = clustering_report(test.y, pred)
    return {**{k: float(v) for k, v in rep.items()}, "samples_per_mode": opts.alg2_samples,
            "classifier_steps": opts.alg2_steps}


def sigma_sweep(model, opts: Options) -> dict:
    """004 ch. 3 quality (eq. 3.2-3.3) and diversity (eq. 3.6) scores vs the sampling sigma (sec. 4.3)."""
    from training.classifier import get_or_train_classifier
    from training.metrics import MetricContext, compute_metrics
    from training.dataset.run import load_training_data

    cfg = model.cfg
    train = load_training_data(cfg, "train")
    test = load_training_data(cfg, "test")  # calibrates the quality score's alpha (training.metrics)
    cache = Path(opts.cache_dir)
    with FileLock(cache / f".{classifier_tag(cfg)}.lock"):
        clf = get_or_train_classifier(classifier_tag(cfg), train.x, train.y, train.n_classes, cache,
                                      steps=opts.classifier_steps, seed=opts.seed, progress=False)
    ctx = MetricContext(generate=lambda n, mode, sigma, s: model.generate(n, mode, sigma, s), x_train=train.x,
                        x_test=test.x,
                        n_modes=model.n_modes, classifier=clf, num_gen=opts.sigma_num_gen, sigmas=list(SIGMAS),
                        seed=opts.seed, n_classes=train.n_classes)
    qd = compute_metrics(["quality_diversity"], ctx)["quality_diversity"]
    return {"sigma": list(SIGMAS), "quality": [qd[f"quality@{s:g}"] for s in SIGMAS],
            "diversity": [qd[f"diversity@{s:g}"] for s in SIGMAS],
            "combined": [qd[f"combined@{s:g}"] for s in SIGMAS], "num_gen": opts.sigma_num_gen,
            "quality_alpha": qd.get("quality_alpha")}
