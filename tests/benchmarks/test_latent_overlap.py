"""benchmarks/latent_overlap.py: the Bayes accuracy of telling a z's mode is chance for coincident means and
1 for far-apart ones, and falls as the Gaussians close in."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from latent_overlap import bayes_accuracy  # noqa: E402


def test_bayes_accuracy_bounds_and_order():
    assert abs(bayes_accuracy(0.0, 0.15, n=4000) - 0.1) < 0.03  # one mean for all: chance
    assert bayes_accuracy(5.0, 0.15, n=2000) == 1.0
    assert bayes_accuracy(0.1, 0.15, n=4000) < bayes_accuracy(0.25, 0.15, n=4000)
