"""How unlike the training data an image is: the out-of-distribution (OOD) score of an exported model.

Torch-free (numpy only): the service scores every clustered image with it in the batch thread, export
and `nemgan calibrate-ood` fit it, and benchmarks/ood_auroc.py measures it, all through this one file.

The score only uses what the model computes anyway (or the image itself), plus statistics of the training data:

    latent_mahalanobis   d(x) = |W_k^T (h1(x) - mu_k)|^2 / D, k = argmax h2(h1(x)): how far the latent of x
                         lies from the latents of the training images h2 put in the same mode (mu_k, and
                         W_k W_k^T = the inverse of their covariance, shrunk towards the pooled one).
                         Needs only z and logits, so it costs no extra network call.
    pixel_mse            mean (g(h1(x)) - x)^2: the image's own reconstruction error. Needs one g call.
    pixel_pca            (|x - m|^2 - |B^T (x - m)|^2) / D: the energy of the image outside the top-P principal
                         components B [D,P] (P = 64, at most N/10) of the training images (mean m), per pixel. No
                         network call: one [N,D]x[D,P] matmul on the image the service already holds.

score = mean over the chosen components of (log v - mean_log) / std_log, the mean and std taken on the
calibration images, so 0 is a typical training image. The flag is score > threshold, the threshold
being the (1 - fpr) quantile of the score on held-out training images (fpr: the stated false-positive
rate on in-distribution data).

Why latent_mahalanobis + pixel_pca is the default (benchmarks/ood_auroc.py measures every candidate):
the entropy of h2 is useless here, h2 is *more* confident on uniform noise than on digits (AUROC 0.00 on
noise); the latent norm and the latent reconstruction |h1(g(h1(x))) - h1(x)| separate less than the
class-conditional latent distance. latent_mahalanobis alone stopped at AUROC 0.946 for models/mnist vs
Fashion-MNIST; pixel_mse lifts that to 0.972 but runs g on every image (PNG /v1/cluster about half as
fast). pixel_pca sees the same thing pixel_mse sees (an image not made of the training images' strokes)
through a linear model of the training images instead of g, so it costs one small matmul: both MNIST
models reach >= 0.98 vs Fashion-MNIST and 1.00 vs inverted digits and uniform noise
(docs/results/ood_auroc.txt; the cost in docs/results/ood_cost.json, benchmarks/ood_cost.py).

The fitted statistics live in `ood.npz` (means [K,D], whiten [K,D,D]; with pixel_pca also pca_mean [D]
and pca_basis [D,P]) beside the manifest, whose `ood` section holds the rest (components, log mean/std,
threshold, fpr, how it was calibrated). Manifests written before pixel_pca (latent only) load and score
as they did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ManifestError

LATENT = "latent_mahalanobis"
PIXEL = "pixel_mse"
PIXEL_PCA = "pixel_pca"
COMPONENTS = (LATENT, PIXEL, PIXEL_PCA)
DEFAULT_COMPONENTS = (LATENT, PIXEL_PCA)
PCA_DIMS = 64  # principal components pixel_pca keeps (fewer when the images have fewer pixels or are few)
_EXACT_PCA_MAX_DIM = 4096  # up to this many values per image the PCA is an exact eigendecomposition
DEFAULT_FPR = 0.05
FILE = "ood.npz"
_EPS = 1e-12


def latent_mahalanobis(z: np.ndarray, modes: np.ndarray, means: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """|W_k^T (z - mu_k)|^2 / D per row, k = modes[i]: one matmul per mode present in the batch."""
    z = np.asarray(z, np.float32)
    out = np.empty(len(z), np.float32)
    for k in np.unique(modes):
        rows = modes == k
        y = (z[rows] - means[k]) @ whiten[k]
        out[rows] = np.einsum("nd,nd->n", y, y)
    return out / np.float32(z.shape[1])


def pixel_mse(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    d = (np.asarray(recon, np.float32) - np.asarray(x, np.float32)).reshape(len(x), -1)
    return np.einsum("nd,nd->n", d, d) / np.float32(d.shape[1])


def pixel_pca(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(|x - m|^2 - |B^T (x - m)|^2) / D per row: the energy of x outside the span of B's orthonormal columns."""
    d = np.asarray(x, np.float32).reshape(len(x), -1) - mean
    p = d @ basis
    r = np.einsum("nd,nd->n", d, d) - np.einsum("np,np->n", p, p)
    return np.maximum(r, np.float32(0)) / np.float32(d.shape[1])


def fit_pca(x: np.ndarray, dims: int = PCA_DIMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean [D], top-`dims` principal directions [D,P] (orthonormal columns; P <= D - 1 and <= N / 10) of the
    rows of x, and the share of the variance they explain. Exact (eigendecomposition of the covariance) up to D = 4096; above, a
    seeded randomized subspace iteration, so a 64x64 RGB model (D = 12288) needs no D x D matrix."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    n, d = x.shape
    p = int(max(1, min(dims, d - 1, n // 10)))  # <= n/10: fitted on few images, the basis would fit them all
    mean = x.mean(0, dtype=np.float64)
    total = float(((x - mean.astype(np.float32)) ** 2).sum(dtype=np.float64) / n)
    if d <= _EXACT_PCA_MAX_DIM:
        c = x.astype(np.float64) - mean
        w, v = np.linalg.eigh(c.T @ c / n)
        order = np.argsort(w)[::-1][:p]
        basis, kept = v[:, order], float(np.clip(w[order], 0, None).sum())
    else:
        m32 = mean.astype(np.float32)
        k = min(p + 16, d, n)
        q = np.random.default_rng(seed).standard_normal((d, k)).astype(np.float32)
        for _ in range(6):  # subspace iteration on C^T C, re-orthonormalised each step
            y = x @ q - m32 @ q
            q, _ = np.linalg.qr(x.T @ y - np.outer(m32, y.sum(0)))
        b = (x @ q - m32 @ q).T  # [k, n]: C q, transposed
        u, s, _ = np.linalg.svd(b.astype(np.float64), full_matrices=False)
        basis, kept = (q.astype(np.float64) @ u)[:, :p], float((s[:p] ** 2).sum() / n)
    return mean.astype(np.float32), np.ascontiguousarray(basis, np.float32), (kept / total if total > 0 else 1.0)


@dataclass
class OodCalibration:
    components: tuple[str, ...]
    means: np.ndarray  # [K, D] float32
    whiten: np.ndarray  # [K, D, D] float32
    log_mean: dict[str, float]
    log_std: dict[str, float]
    threshold: float
    fpr: float
    info: dict = field(default_factory=dict)
    pca_mean: np.ndarray | None = None  # [D] float32, with pixel_pca
    pca_basis: np.ndarray | None = None  # [D, P] float32, with pixel_pca

    @property
    def needs_reconstruction(self) -> bool:
        """Whether the score needs g(h1(x)) (one more network call per image)."""
        return PIXEL in self.components

    @property
    def needs_image(self) -> bool:
        """Whether the score needs the image x itself (model range, as h1 gets it)."""
        return PIXEL in self.components or PIXEL_PCA in self.components

    def values(self, z, logits, x=None, recon=None) -> dict[str, np.ndarray]:
        """The raw component values per image (before the log and the standardisation)."""
        out = {}
        if LATENT in self.components:
            out[LATENT] = latent_mahalanobis(z, np.asarray(logits).argmax(1), self.means, self.whiten)
        if PIXEL in self.components:
            if x is None or recon is None:
                raise ValueError("this OOD score needs the image and its reconstruction g(h1(x))")
            out[PIXEL] = pixel_mse(x, recon)
        if PIXEL_PCA in self.components:
            if x is None:
                raise ValueError("this OOD score needs the image x (pixel_pca)")
            out[PIXEL_PCA] = pixel_pca(x, self.pca_mean, self.pca_basis)
        return out

    def score(self, z, logits, x=None, recon=None) -> np.ndarray:
        """float32 [N]: 0 for a typical training image, larger = less like the training data."""
        return combine(self.values(z, logits, x, recon), self.log_mean, self.log_std)

    def flag(self, score: np.ndarray) -> np.ndarray:
        return np.asarray(score) > self.threshold

    # ------------------------------------------------------------------ persistence
    def to_manifest(self) -> dict:
        return {
            "file": FILE,
            "components": list(self.components),
            "score": "mean over components of (log(value) - log_mean) / log_std; ood = score > threshold",
            "log_mean": self.log_mean, "log_std": self.log_std,
            "threshold": self.threshold, "fpr": self.fpr,
            "calibration": self.info,
        }

    def save(self, model_dir: str | Path) -> Path:
        p = Path(model_dir) / FILE
        arrays = {"means": self.means.astype(np.float32), "whiten": self.whiten.astype(np.float32)}
        if self.pca_basis is not None:
            arrays.update(pca_mean=self.pca_mean.astype(np.float32), pca_basis=self.pca_basis.astype(np.float32))
        np.savez(p, **arrays)
        return p

    @classmethod
    def load(cls, section: dict, model_dir: str | Path) -> OodCalibration:
        validate_section(section, model_dir)
        with np.load(Path(model_dir) / section["file"], allow_pickle=False) as f:
            means, whiten = f["means"].astype(np.float32), f["whiten"].astype(np.float32)
            pca_mean = f["pca_mean"].astype(np.float32) if "pca_mean" in f.files else None
            pca_basis = np.ascontiguousarray(f["pca_basis"], np.float32) if "pca_basis" in f.files else None
        if means.ndim != 2 or whiten.shape != (*means.shape, means.shape[1]):
            raise ManifestError(f"{model_dir}/{section['file']}: means {means.shape} / whiten {whiten.shape} "
                                "are not [K,D] / [K,D,D]")
        if PIXEL_PCA in section["components"]:
            if pca_mean is None or pca_basis is None:
                raise ManifestError(f"{model_dir}/{section['file']}: pixel_pca needs pca_mean and pca_basis")
            if pca_mean.ndim != 1 or pca_basis.ndim != 2 or pca_basis.shape[0] != pca_mean.shape[0]:
                raise ManifestError(f"{model_dir}/{section['file']}: pca_mean {pca_mean.shape} / pca_basis "
                                    f"{pca_basis.shape} are not [D] / [D,P]")
        return cls(tuple(section["components"]), means, whiten, dict(section["log_mean"]),
                   dict(section["log_std"]), float(section["threshold"]), float(section["fpr"]),
                   dict(section.get("calibration") or {}), pca_mean=pca_mean, pca_basis=pca_basis)


def combine(values: dict[str, np.ndarray], log_mean: dict, log_std: dict) -> np.ndarray:
    s = None
    for name, v in values.items():
        t = (np.log(np.maximum(v, _EPS)) - np.float32(log_mean[name])) / np.float32(log_std[name])
        s = t if s is None else s + t
    return (s / np.float32(len(values))).astype(np.float32)


def fit_latent(z: np.ndarray, modes: np.ndarray, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-mode mean and whitening of the latents of training images.

    Each mode's covariance is shrunk towards the pooled within-mode covariance with weight D / (n_k + D)
    (a mode with few images, e.g. in a tiny test model, still gets an invertible, sensible covariance;
    one with thousands keeps its own). A mode no image falls in gets the overall mean and the pooled one."""
    z = np.asarray(z, np.float64)
    n, d = z.shape
    means = np.tile(z.mean(0), (n_modes, 1))
    scatter = np.zeros((n_modes, d, d))
    counts = np.bincount(modes, minlength=n_modes)
    for k in np.flatnonzero(counts):
        zk = z[modes == k]
        means[k] = zk.mean(0)
        c = zk - means[k]
        scatter[k] = c.T @ c
    pooled = scatter.sum(0) / max(n, 1)
    ridge = 1e-6 * max(np.trace(pooled) / d, 1e-12) * np.eye(d)
    whiten = np.empty((n_modes, d, d))
    for k in range(n_modes):
        cov = (scatter[k] + d * pooled) / (counts[k] + d) + ridge
        whiten[k] = np.linalg.cholesky(np.linalg.inv(cov))  # L L^T = cov^-1: |L^T v|^2 = v^T cov^-1 v
    return means.astype(np.float32), whiten.astype(np.float32)


def fit(z_fit, logits_fit, z_hold, logits_hold, *, x_fit=None, recon_fit=None, x_hold=None, recon_hold=None,
        components=DEFAULT_COMPONENTS, fpr: float = DEFAULT_FPR, info: dict | None = None,
        pca_dims: int = PCA_DIMS) -> OodCalibration:
    """Fit the statistics on one set of training images and set the threshold on another (held out).

    The threshold is the (1 - fpr) quantile of the score on the held-out images, so about `fpr` of
    in-distribution images are flagged; the held-out rate actually reached is recorded in `info`.
    pixel_pca needs the images (x_fit, x_hold, model range); its principal components come from x_fit."""
    components = tuple(components)
    if not components or any(c not in COMPONENTS for c in components):
        raise ValueError(f"OOD components must be a non-empty subset of {COMPONENTS}, got {components}")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    k = int(np.asarray(logits_fit).shape[1])
    means, whiten = fit_latent(z_fit, np.asarray(logits_fit).argmax(1), k)
    cal = OodCalibration(components, means, whiten, {}, {}, 0.0, fpr)
    pca_info = {}
    if PIXEL_PCA in components:
        if x_fit is None or x_hold is None:
            raise ValueError("pixel_pca needs the calibration images (x_fit, x_hold)")
        cal.pca_mean, cal.pca_basis, explained = fit_pca(x_fit, pca_dims)
        pca_info = {"pixel_pca": {"dims": int(cal.pca_basis.shape[1]), "explained_variance": round(explained, 4)}}
    for name, v in cal.values(z_fit, logits_fit, x_fit, recon_fit).items():
        lv = np.log(np.maximum(v.astype(np.float64), _EPS))
        cal.log_mean[name] = float(lv.mean())
        cal.log_std[name] = float(max(lv.std(), 1e-6))
    s = cal.score(z_hold, logits_hold, x_hold, recon_hold)
    cal.threshold = float(np.quantile(s.astype(np.float64), 1 - fpr))
    cal.info = {**(info or {}), "n_fit": len(z_fit), "n_holdout": len(z_hold),
                "holdout_fpr": float(np.mean(s > cal.threshold)), **pca_info}
    return cal


def validate_section(section, model_dir: str | Path | None = None) -> None:
    """ManifestError unless the manifest's `ood` section is well formed (and its file exists)."""
    if not isinstance(section, dict):
        raise ManifestError("manifest ood must be an object")
    missing = [k for k in ("file", "components", "log_mean", "log_std", "threshold", "fpr") if k not in section]
    if missing:
        raise ManifestError(f"manifest ood: missing keys {missing}")
    comps = section["components"]
    if not isinstance(comps, list) or not comps or any(c not in COMPONENTS for c in comps):
        raise ManifestError(f"manifest ood.components must be a non-empty subset of {list(COMPONENTS)}, got {comps!r}")
    for c in comps:
        for key in ("log_mean", "log_std"):
            v = section[key].get(c) if isinstance(section[key], dict) else None
            if not isinstance(v, (int, float)) or not math.isfinite(v) or (key == "log_std" and v <= 0):
                raise ManifestError(f"manifest ood.{key}.{c} must be a finite number{' > 0' if key == 'log_std' else ''}, got {v!r}")
    t, fpr = section["threshold"], section["fpr"]
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ManifestError(f"manifest ood.threshold must be a finite number, got {t!r}")
    if not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise ManifestError(f"manifest ood.fpr must be in (0, 1), got {fpr!r}")
    if model_dir is not None and not (Path(model_dir) / section["file"]).is_file():
        raise ManifestError(f"{model_dir}: manifest ood.file {section['file']} is missing")
