"""How well a z's own mode can be told from z itself under the MM-GAN latent (Gaussian means ~ U(-c, c)^d,
scale sigma): the Bayes rule's accuracy (nearest mean; the Gaussians share one isotropic scale), by Monte Carlo.
It bounds how pure g's modes can be: a z that looks like mode j's cannot be drawn as mode k's digit.

    python benchmarks/latent_overlap.py --out docs/results/latent_overlap.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def bayes_accuracy(c: float, sigma: float, dim: int = 50, k: int = 10, n: int = 20000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-c, c, (k, dim))
    modes = rng.integers(0, k, n)
    z = mu[modes] + sigma * rng.standard_normal((n, dim))
    pred = ((z[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)
    return float((pred == modes).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rows = [{"mm_c": c, "mm_sigma": s, "latent_dim": 50, "n_modes": 10, "bayes_acc": bayes_accuracy(c, s)}
            for c, s in [(0.1, 0.15), (0.2, 0.15), (0.25, 0.15), (0.5, 0.3)]]
    for r in rows:
        print(f"mm_c {r['mm_c']:<5} mm_sigma {r['mm_sigma']:<5} Bayes accuracy {r['bayes_acc']:.4f}")
    if a.out:
        a.out.write_text(json.dumps({"command": "python benchmarks/latent_overlap.py --out " + str(a.out),
                                     "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
