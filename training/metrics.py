"""Evaluation metrics for mode-matching GANs.

Three families, following the papers (see /work/shared/papers/README.md and notes/science.md,
"Evaluation conventions"):

1. Clustering of the inverter h on real test images (NEMGAN, NEMGAN-P Tables 1-2): Hungarian ACC, NMI,
   ARI, plus purity (the authors' code reports purity).
2. Generation quality against a classifier trained on the real training set (training/classifier.py):
   Fréchet Classification Distance (FCD, NEMGAN-P), per-mode purity / class coverage of generated
   samples, and the MM-GAN thesis' quality and diversity scores (eqs. 3.2-3.6).
3. Prior learning (NEMGAN-P, "Effect of the latent structure" Table III): error of learned mode priors.

The pure functions work on numpy arrays and import no torch; the metric registry at the bottom (modelled
on stylegan2-ada's metric_main) wires them to a trained model through a `MetricContext`, and only the
metrics that need the classifier import torch, inside the function.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.linalg
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment
from scipy.special import expit, rel_entr
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from core.images import uint8_to_model

# --------------------------------------------------------------------------------------------------
# Clustering metrics
# --------------------------------------------------------------------------------------------------


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} entries but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("empty label arrays")
    return y_true, y_pred


def _hungarian(y_true, y_pred) -> tuple[dict[int, int], int, int]:
    """Solve the assignment; returns (cluster -> label mapping, n matched correctly, n samples).

    The contingency matrix is rectangular (n_classes x n_clusters) when the model has a different number
    of modes than the data has classes; linear_sum_assignment handles that and matches
    min(n_classes, n_clusters) pairs. Samples in unmatched clusters count as errors: ACC is a strict
    one-to-one score, which is what the papers report. (Purity is the many-to-one alternative.)
    """
    y_true, y_pred = _labels(y_true, y_pred)
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    # contingency_matrix rows follow np.unique(y_true), columns np.unique(y_pred)
    c = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(c, maximize=True)
    mapping = {int(clusters[j]): int(classes[i]) for i, j in zip(rows, cols)}
    return mapping, int(c[rows, cols].sum()), y_true.size


def hungarian_acc(y_true, y_pred) -> float:
    """Clustering accuracy under the best one-to-one mapping of cluster ids to labels."""
    _, correct, n = _hungarian(y_true, y_pred)
    return correct / n


def hungarian_mapping(y_true, y_pred) -> dict[int, int]:
    """Best one-to-one cluster -> label mapping.

    When there are more clusters than labels, the surplus clusters are left out of the mapping (they are
    not matched); use the per-cluster majority label (see `purity`) if every cluster needs a label.
    """
    mapping, _, _ = _hungarian(y_true, y_pred)
    return mapping


def purity(y_true, y_pred) -> float:
    """Fraction of samples whose label is the majority label of their cluster (many-to-one mapping).

    Always >= hungarian_acc, and trivially 1 with one cluster per sample, so report it next to ACC.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    c = contingency_matrix(y_true, y_pred)
    return float(c.max(axis=0).sum() / y_true.size)


def nmi(y_true, y_pred) -> float:
    """Normalized mutual information, MI / mean(H(true), H(pred)).

    average_method="arithmetic" is sklearn's default since 0.22 and what recent clustering papers use;
    it is spelled out so a future sklearn default change cannot silently move our numbers.
    """
    y_true, y_pred = _labels(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index (0 in expectation for random labellings, 1 for identical partitions)."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def clustering_report(y_true, y_pred) -> dict:
    y_true, y_pred = _labels(y_true, y_pred)
    return {
        "acc": hungarian_acc(y_true, y_pred),
        "nmi": nmi(y_true, y_pred),
        "ari": ari(y_true, y_pred),
        "purity": purity(y_true, y_pred),
        "n_samples": int(y_true.size),
    }


# --------------------------------------------------------------------------------------------------
# Prior learning
# --------------------------------------------------------------------------------------------------


def _prob_vector(p, name: str, atol: float = 1e-3) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D probability vector, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {p}")
    # Learned priors come out of a float32 softmax / hard sigmoid, so allow a little slack, then
    # renormalise so the KL below is between true distributions.
    if abs(p.sum() - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (±{atol}), sums to {p.sum():.6f}")
    return p / p.sum()


def prior_error(learned, true) -> dict:
    """Distance between learned and true mode priors.

    l1 is what "Effect of the latent structure" (eq. 5, Table III) optimises and reports; kl is
    KL(true || learned), the direction in which a learned prior that misses a real mode (learned ≈ 0)
    is penalised heavily. Learned entries are floored at 1e-12 so a collapsed mode gives a large, finite
    KL instead of inf.

    Mode order matters: pass priors already aligned (e.g. learned priors re-indexed through
    `hungarian_mapping` of the inverter's clustering).
    """
    learned = _prob_vector(learned, "learned")
    true = _prob_vector(true, "true")
    if learned.shape != true.shape:
        raise ValueError(f"learned has {learned.size} modes but true has {true.size}")
    diff = np.abs(learned - true)
    kl = rel_entr(true, np.maximum(learned, 1e-12)).sum()
    return {"l1": float(diff.sum()), "max_abs": float(diff.max()), "kl": float(kl)}


# --------------------------------------------------------------------------------------------------
# Fréchet distance (FID / FCD)
# --------------------------------------------------------------------------------------------------


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features [N, D], in float64 for the matrix square root."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape [N>=2, D], got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), the Fréchet distance of two Gaussians.

    Follows pytorch-fid: if the product is singular (e.g. fewer samples than feature dimensions), sqrtm
    returns non-finite values and we retry with eps*I added to both covariances; tiny imaginary parts from
    round-off are dropped, large ones mean the statistics are broken and raise.
    Scalars are accepted for 1-D Gaussians (sigma is then the variance).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean shapes differ: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"covariances must be {mu1.size}x{mu1.size}, got {sigma1.shape} and {sigma2.shape}")

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on (near-)singular input; we detect and handle that case ourselves below
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    # round-off can push a zero distance slightly negative
    return float(max(d, 0.0))


# --------------------------------------------------------------------------------------------------
# Generation quality with the in-project classifier
# --------------------------------------------------------------------------------------------------


def generation_purity(mode_ids, predicted_classes, n_modes: int, n_classes: int | None = None) -> dict:
    """Per-mode purity of generated samples as judged by the classifier.

    For each mode: the classifier's majority class among that mode's samples (`mode_to_class`) and the
    fraction of samples in that class (`per_mode`). A good conditional generator has high purity *and*
    modes covering distinct classes, so `classes_covered` counts distinct majority classes and
    `coverage` divides it by n_classes (defaults to n_modes, the usual K = number of classes setting).
    Modes with no samples get purity nan and class -1 and are left out of the mean.

    `score` is the one figure to read: the share of *all* generated samples whose class is their mode's class
    when modes and classes are matched one to one (Hungarian), so coverage is folded in. A generator whose
    ten modes all draw the same class has `mean` 1.0 but `score` 0.1; a perfect conditional generator 1.0.
    """
    mode_ids = np.asarray(mode_ids, dtype=np.int64).ravel()
    predicted = np.asarray(predicted_classes, dtype=np.int64).ravel()
    if mode_ids.shape != predicted.shape:
        raise ValueError(f"{mode_ids.size} mode ids but {predicted.size} predictions")
    if mode_ids.size and (mode_ids.min() < 0 or mode_ids.max() >= n_modes):
        raise ValueError(f"mode ids must be in [0, {n_modes})")
    n_classes = n_modes if n_classes is None else n_classes

    per_mode, mode_to_class = [], []
    for k in range(n_modes):
        preds_k = predicted[mode_ids == k]
        if preds_k.size == 0:
            per_mode.append(float("nan"))
            mode_to_class.append(-1)
            continue
        counts = np.bincount(preds_k)
        mode_to_class.append(int(counts.argmax()))
        per_mode.append(float(counts.max() / preds_k.size))
    covered = len({c for c in mode_to_class if c >= 0})
    valid = [p for p in per_mode if not math.isnan(p)]
    score = float("nan")
    if mode_ids.size:
        counts = np.zeros((n_modes, max(n_classes, int(predicted.max()) + 1)), np.int64)
        np.add.at(counts, (mode_ids, predicted), 1)
        rows, cols = linear_sum_assignment(counts, maximize=True)
        score = float(counts[rows, cols].sum() / mode_ids.size)
    return {
        "score": score,
        "per_mode": per_mode,
        "mean": float(np.mean(valid)) if valid else float("nan"),
        "mode_to_class": mode_to_class,
        "classes_covered": covered,
        "coverage": covered / n_classes,
    }


def nearest_neighbor_distance(query, reference) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row.

    sklearn's pairwise_distances_argmin_min works in chunks (its ArgKmin backend), so 10k generated x 60k
    training features never materialises the 10k x 60k distance matrix (4.8 GB in float64).
    """
    from sklearn.metrics import pairwise_distances_argmin_min

    query = np.asarray(query, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"need [N, D] and [M, D] features, got {query.shape} and {reference.shape}")
    _, dist = pairwise_distances_argmin_min(query, reference, metric="euclidean")
    return dist.astype(np.float64)


def quality_score(gen_features, train_features, alpha: float = 1.0) -> float:
    """MM-GAN thesis eqs. (3.2)-(3.3): mean over samples of q(x) = 1 - e^d / (e^d + alpha).

    d is the L2 distance from the sample's classifier features to the nearest training sample's features.
    q = alpha / (e^d + alpha) = sigmoid(log(alpha) - d), computed as such so large d cannot overflow.
    q is in (0, 1), 1/(1+1/alpha) at d = 0, and decreasing in d. The score depends on the scale of the
    feature space, so only compare numbers computed with the same classifier and alpha.
    """
    if alpha <= 0:
        raise ValueError("alpha must be > 0")
    d = nearest_neighbor_distance(gen_features, train_features)
    return float(np.mean(expit(np.log(alpha) - d)))


def _to_unit_gray(images) -> np.ndarray:
    """Images (uint8 in [0,255] or float in [-1,1], NCHW or NHW) -> float64 [N, C, H, W] in [0, 1]."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"expected NCHW images, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    return (x.astype(np.float64) + 1.0) / 2.0


def ssim(a, b, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """Single-scale SSIM (Wang et al. 2004) per image pair; a, b: [N, C, H, W] in [0, data_range].

    Gaussian-weighted local statistics (sigma 1.5, the paper's 11x11 window: truncate=3.5 gives radius
    5), constants K1 = 0.01, K2 = 0.03, mean of the SSIM map over pixels and channels.

    Why not MS-SSIM as in the thesis: MS-SSIM downsamples 4 times (5 scales), so a 28x28 image becomes
    14, 7, 4 and 2 pixels wide, smaller than the 11x11 window; the coarse scales are then pure padding
    artefacts (pytorch-msssim refuses images under 161 px). Single-scale SSIM is the meaningful version.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # filter over the two spatial axes only
    s = (0, 0, sigma, sigma)

    def blur(z):
        return gaussian_filter(z, sigma=s, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return smap.mean(axis=(1, 2, 3))


def diversity_score(
    images,
    predicted_classes,
    n_classes: int,
    max_pairs: int = 2000,
    seed: int = 0,
    batch_pairs: int = 500,
) -> dict:
    """MM-GAN thesis eqs. (3.4)-(3.6).

    intra (3.4) = 1 - mean SSIM over pairs of generated images. The thesis averages over all |X|^2
    ordered pairs, self-pairs included; we estimate the same mean from `max_pairs` random pairs of
    distinct images (self-pairs only add a 1/|X| bias towards 0). Single-scale SSIM, see `ssim` for why
    not MS-SSIM. Clipped to [0, 1] since SSIM of unrelated images can be slightly negative.
    inter (3.5) = entropy of the histogram of classifier predictions / log(n_classes).
    diversity (3.6) = sqrt(intra * inter).
    """
    x = _to_unit_gray(images)
    predicted = np.asarray(predicted_classes, dtype=np.int64).ravel()
    if predicted.size != x.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {predicted.size} predictions")
    n = x.shape[0]

    if n < 2:
        intra = 0.0
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        # draw j != i: shift by 1..n-1 modulo n
        j = (i + rng.integers(1, n, size=max_pairs)) % n
        sims = [ssim(x[i[s : s + batch_pairs]], x[j[s : s + batch_pairs]]) for s in range(0, max_pairs, batch_pairs)]
        intra = float(np.clip(1.0 - np.concatenate(sims).mean(), 0.0, 1.0))

    if n_classes < 2 or n == 0:
        inter = 0.0  # log(1) = 0: a single class has no inter-class diversity to measure
    else:
        p = np.bincount(predicted, minlength=n_classes) / n
        p = p[p > 0]
        inter = float(-(p * np.log(p)).sum() / np.log(n_classes))
    return {"intra": intra, "inter": inter, "diversity": math.sqrt(intra * inter)}


# --------------------------------------------------------------------------------------------------
# Metric registry
# --------------------------------------------------------------------------------------------------


@dataclass
class MetricContext:
    """Everything a registered metric may need; metrics check for the fields they use.

    h_predict: images float32 [-1,1] NCHW -> mode ids (np.int64) — the inverter's hard assignment.
    h_proba:   optional, images -> [N, n_modes] mode probabilities.
    generate:  (n, mode: int | None, sigma: float, seed) -> (images float32 NCHW in [-1,1], modes);
               mode None samples modes from the model's prior, sigma scales the latent noise (MM-GAN
               sec. 4.3), seed makes the call deterministic.
    x_test, x_train: uint8 NCHW; y_test: int labels.
    classifier: a training.classifier.Classifier trained on the real training set.
    """

    h_predict: Callable[[np.ndarray], np.ndarray] | None = None
    generate: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    n_modes: int = 10
    classifier: Any = None
    learned_priors: np.ndarray | None = None
    true_priors: np.ndarray | None = None
    x_train: np.ndarray | None = None
    num_gen: int = 10000
    h_proba: Callable[[np.ndarray], np.ndarray] | None = None
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None  # images [-1,1] -> g(h1(x)) [-1,1]
    n_classes: int | None = None  # classes of the real data; defaults to the classifier's, then n_modes
    sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    seed: int = 0
    batch_size: int = 1000  # images per h_predict / generate call, bounds memory
    # classifier outputs for real data, shared between metrics (fcd and quality_diversity both need them)
    _cache: dict = field(default_factory=dict, repr=False)

    def require(self, metric: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"metric {metric!r} needs MetricContext fields {missing}")

    def num_classes(self) -> int:
        if self.n_classes is not None:
            return self.n_classes
        if self.classifier is not None:
            return int(self.classifier.n_classes)
        return self.n_modes

    def real_predictions(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Classifier (labels, features) of x_train / x_test, computed once per context."""
        if split not in self._cache:
            from training.classifier import predict

            self._cache[split] = predict(self.classifier, getattr(self, f"x_{split}"))
        return self._cache[split]

    def generate_n(self, n: int, mode: int | None, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Call `generate` in batches of `batch_size`; each batch gets its own derived seed."""
        imgs, modes = [], []
        for b, start in enumerate(range(0, n, self.batch_size)):
            m = min(self.batch_size, n - start)
            x, k = self.generate(m, mode, sigma, seed * 100003 + b)
            imgs.append(np.asarray(x, np.float32))
            modes.append(np.asarray(k, np.int64).ravel())
        return np.concatenate(imgs), np.concatenate(modes)


METRICS: dict[str, Callable[[MetricContext], dict]] = {}


def register_metric(name: str):
    """Decorator: add `fn(ctx) -> dict[str, float]` to METRICS under `name`."""

    def decorator(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn

    return decorator


def list_metrics() -> list[str]:
    return sorted(METRICS)


def compute_metrics(names: list[str], ctx: MetricContext) -> dict:
    """Run the named metrics; returns {name: {key: float}}.

    All names are checked before anything runs, so a typo fails immediately rather than after minutes
    of generation.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; available: {list_metrics()}")
    return {name: METRICS[name](ctx) for name in names}


@register_metric("cluster")
def _cluster(ctx: MetricContext) -> dict:
    """ACC / NMI / ARI / purity of the inverter's mode assignment on the real test set."""
    ctx.require("cluster", "h_predict", "x_test", "y_test")
    preds = [
        np.asarray(ctx.h_predict(uint8_to_model(ctx.x_test[i : i + ctx.batch_size])), np.int64).ravel()
        for i in range(0, len(ctx.x_test), ctx.batch_size)
    ]
    report = clustering_report(ctx.y_test, np.concatenate(preds))
    return {k: float(v) for k, v in report.items()}


@register_metric("fcd")
def _fcd(ctx: MetricContext) -> dict:
    """Fréchet Classification Distance (NEMGAN-P): Fréchet distance between classifier penultimate
    features of the real test set and of num_gen generated images (modes from the prior, sigma 1)."""
    ctx.require("fcd", "classifier", "generate", "x_test")
    from training.classifier import predict

    _, real_f = ctx.real_predictions("test")
    x_gen, _ = ctx.generate_n(ctx.num_gen, None, 1.0, ctx.seed)
    _, gen_f = predict(ctx.classifier, x_gen)
    return {"fcd": frechet_distance(*feature_stats(real_f), *feature_stats(gen_f))}


@register_metric("gen_purity")
def _gen_purity(ctx: MetricContext) -> dict:
    """Generation purity: `score` (one-to-one matched, over all samples), per-mode purity and class coverage;
    every mode gets num_gen / n_modes samples so that modes with a small learned prior are still measured."""
    ctx.require("gen_purity", "classifier", "generate")
    from training.classifier import predict

    per_mode = max(1, math.ceil(ctx.num_gen / ctx.n_modes))
    xs, ks = zip(*(ctx.generate_n(per_mode, k, 1.0, ctx.seed + k) for k in range(ctx.n_modes)))
    # label samples with the mode we asked for, not what generate echoes, in case it ignores `mode`
    modes = np.concatenate([np.full(len(x), k, np.int64) for k, x in enumerate(xs)])
    labels, _ = predict(ctx.classifier, np.concatenate(xs))
    r = generation_purity(modes, labels, ctx.n_modes, ctx.num_classes())
    return {
        "score": r["score"],  # the headline: one-to-one matched purity over all samples (coverage folded in)
        "mean": r["mean"],
        "min": float(np.nanmin(r["per_mode"])),
        "classes_covered": float(r["classes_covered"]),
        "coverage": r["coverage"],
    }


@register_metric("reconstruction")
def _reconstruction(ctx: MetricContext) -> dict:
    """Does g(h1(x)) keep the class? The real-data classifier's accuracy on the reconstructions of the test
    images against their labels (`acc`), on the images themselves (`acc_images`, the classifier's ceiling)
    and its agreement between image and reconstruction (`agreement`)."""
    ctx.require("reconstruction", "classifier", "reconstruct", "x_test", "y_test")
    from training.classifier import predict

    recon = np.concatenate([np.asarray(ctx.reconstruct(uint8_to_model(ctx.x_test[i:i + ctx.batch_size])), np.float32)
                            for i in range(0, len(ctx.x_test), ctx.batch_size)])
    on_recon, _ = predict(ctx.classifier, recon)
    on_images, _ = ctx.real_predictions("test")
    y = np.asarray(ctx.y_test)
    return {"acc": float((on_recon == y).mean()), "acc_images": float((on_images == y).mean()),
            "agreement": float((on_recon == on_images).mean())}


@register_metric("prior_error")
def _prior_error(ctx: MetricContext) -> dict:
    ctx.require("prior_error", "learned_priors", "true_priors")
    return prior_error(ctx.learned_priors, ctx.true_priors)


@register_metric("quality_diversity")
def _quality_diversity(ctx: MetricContext) -> dict:
    """MM-GAN thesis quality q, diversity d and combined s = sqrt(q d) (eq. 3.7) at each sigma."""
    ctx.require("quality_diversity", "classifier", "generate", "x_train")
    from training.classifier import predict

    _, train_f = ctx.real_predictions("train")
    out = {}
    # The thesis leaves alpha a free constant; with 128-d classifier features exp(d) is huge and every
    # q is ~0. Calibrate alpha so that a real held-out image scores 0.5: log(alpha) = median real
    # nearest-neighbour distance. Scores stay comparable across sigmas and models of one data set.
    alpha = 1.0
    if ctx.x_test is not None:
        _, test_f = ctx.real_predictions("test")
        alpha = float(np.exp(np.median(nearest_neighbor_distance(test_f[:2000], train_f))))
        out["quality_alpha"] = alpha
    for sigma in ctx.sigmas:
        x_gen, _ = ctx.generate_n(ctx.num_gen, None, float(sigma), ctx.seed)
        labels, gen_f = predict(ctx.classifier, x_gen)
        q = quality_score(gen_f, train_f, alpha=alpha)
        d = diversity_score(x_gen, labels, ctx.num_classes(), seed=ctx.seed)["diversity"]
        out[f"quality@{sigma:g}"] = q
        out[f"diversity@{sigma:g}"] = d
        out[f"combined@{sigma:g}"] = math.sqrt(q * d)
    return out
