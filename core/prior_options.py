"""The prior-learning options and their defaults: one table for `nemgan learn-priors`, POST /v1/priors/learn
(and its OpenAPI schema), the worker's pipeline and the playground's form (tests/core/test_prior_options.py
checks the form's values against it).

h_steps defaults to 300: a few hundred steps of retraining h on the labeled images is what lets the labels
move the modes (README, "Prior learning"); 0 keeps h as trained, so clustering cannot change.
"""

from __future__ import annotations

METHODS = ("kl", "l1")  # 001 eq. 16 (KL) and 003 eq. 5 (L1)
DEFAULT_METHOD = "kl"

# name: (default, lowest, highest)
INT_OPTIONS: dict[str, tuple[int, int, int]] = {
    "h_steps": (300, 0, 100_000),
    "alpha_steps": (500, 1, 100_000),
    "batch_size": (64, 1, 4096),
    "seed": (0, 0, 2**31 - 1),
}
H_STEPS = INT_OPTIONS["h_steps"][0]
ALPHA_STEPS = INT_OPTIONS["alpha_steps"][0]
BATCH_SIZE = INT_OPTIONS["batch_size"][0]
