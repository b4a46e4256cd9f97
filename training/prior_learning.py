"""The one prior-learning pipeline: `nemgan learn-priors` and the service's job both call `learn_and_export`.

    exported model dir + labeled set (+ unlabeled set, default: the model's training data)
      -> retrain h and fit the priors (training/priors.py: 001 eq. 16 / 003 eq. 5)
      -> a new model directory whose manifest carries the parent's metrics plus `prior_learning`

The service then publishes that directory into its registry as the next version; the CLI writes it where it
is told. Keeping one function here is what keeps the two manifests alike (they had drifted:
`prior_learning` vs `priors_learning`; tests/training/test_prior_learning.py checks both paths).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.manifest import load_manifest
from core.prior_options import ALPHA_STEPS, BATCH_SIZE, H_STEPS

from .priors import PriorResult, learn_priors

# The manifest's metrics key for what prior learning measured (labeled accuracy, p_hat, the priors' fit).
MANIFEST_KEY = "prior_learning"


@dataclass
class LearnedModel:
    model_dir: Path
    version: str
    result: PriorResult


def next_version(version: str) -> str:
    """"3" -> "4"; a non-numeric version gets ".1" appended."""
    return str(int(version) + 1) if version.isdigit() else version + ".1"


def training_images(model, data_root: str | Path | None = None) -> np.ndarray:
    """The model's own training set (preset + any subset/ratio overrides), uint8 NCHW: the default unlabeled
    set. `data_root` overrides the one recorded at training time (the serving machine's data folder)."""
    from .dataset.run import load_training_data

    cfg = model.cfg if data_root is None else dataclasses.replace(model.cfg, data_root=str(data_root))
    return load_training_data(cfg, "train").x


def learn_and_export(model_dir: str | Path, out_dir: str | Path, x_labeled: np.ndarray, y_labeled: np.ndarray,
                     x_unlabeled: np.ndarray | None = None, *, version: str | None = None, method: str = "kl",
                     h_steps: int = H_STEPS, alpha_steps: int = ALPHA_STEPS, batch_size: int = BATCH_SIZE, seed: int = 0,
                     data_root: str | Path | None = None, overwrite: bool = False,
                     progress: Callable[[float, str], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     phase: Callable[[str], None] | None = None) -> LearnedModel:
    """Learn the priors of the model in `model_dir` and export the result to `out_dir` (version: the
    parent's + 1 unless given). `progress(fraction, message)` follows the learning; `phase(name)` is called
    before each phase ("load", "learn", "export") and may raise to stop between them; `should_stop()` is
    polled between steps (training.priors.Cancelled is raised when it turns true)."""
    from .export import export_model, load_exported

    phase = phase or (lambda name: None)
    phase("load")
    parent = load_manifest(model_dir)
    model = load_exported(model_dir)
    own_data = x_unlabeled is None
    if own_data:
        x_unlabeled = training_images(model, data_root)
    phase("learn")
    res = learn_priors(model, x_labeled, y_labeled, x_unlabeled, method=method, h_steps=h_steps,
                       alpha_steps=alpha_steps, batch_size=batch_size, seed=seed, progress=progress,
                       should_stop=should_stop)
    phase("export")
    version = version or next_version(parent.version)
    metrics = {**(parent.data.get("metrics") or {}), MANIFEST_KEY: res.metrics}
    out = export_model(model, out_dir, parent.name, version, metrics=metrics,
                       supervision=parent.data.get("supervision"), dataset=parent.data.get("dataset"),
                       overwrite=overwrite,
                       # the OOD score is calibrated on the in-distribution images at hand: the unlabeled set
                       calibration_x=x_unlabeled,
                       calibration_source=(f"training set of {model.cfg.dataset!r}" if own_data
                                           else "the unlabeled set given to prior learning"))
    return LearnedModel(Path(out), str(version), res)
