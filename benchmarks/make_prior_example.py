"""Write a ready prior-learning example from the shipped data: few_labels.npz and unlabeled.npz.

    python benchmarks/make_prior_example.py --out example            # for models/mnist
    python benchmarks/make_prior_example.py --model models/fashion-mnist --dataset fashion-mnist --out example-f

What the two files hold (what /v1/priors/learn and `nemgan learn-priors` accept as .npz):

- few_labels.npz  x: uint8 [N, 28, 28], pixels 0..255, white object on black (MNIST polarity, as in the
                     training data); y: int64 [N], the MODE INDEX of each image (0..n_modes-1, the position
                     of its label in the manifest's mode_labels -- for models/mnist mode i is digit "i").
                     --per-class images of every class (default 10: 100 labels in all).
- unlabeled.npz   x: uint8 [M, 28, 28], same pixel convention, no labels. Its class mix is what the priors
                     are fitted to: by default digits of the first half of the classes are 3x as frequent
                     as the rest (true priors 0.15 / 0.05), so the learned priors visibly leave uniform.

Both come from the data set's TEST split (images the shipped models never trained on), without overlap.
The true class frequencies of unlabeled.npz are printed (JSON) to compare with the job's learned priors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.manifest import load_manifest  # noqa: E402
from training.dataset import load_dataset  # noqa: E402


def make_example(model_dir: Path, dataset: str, out: Path, per_class: int = 10, n_unlabeled: int = 4000,
                 weights: list[float] | None = None, seed: int = 0, data_root: Path | None = None) -> dict:
    labels = load_manifest(model_dir).mode_labels
    test = load_dataset(dataset, split="test", data_root=data_root)
    # the data set's class k is the model's mode labels.index(name_k); classes the model lacks are left out
    to_mode = {k: labels.index(n) for k, n in enumerate(test.class_names) if n in labels}
    if len(to_mode) != len(labels):
        raise SystemExit(f"the model's mode labels {labels} are not all classes of {dataset} {test.class_names}")
    w = np.asarray(weights if weights else [3.0] * (len(labels) // 2) + [1.0] * (len(labels) - len(labels) // 2))
    if len(w) != len(labels) or (w < 0).any() or w.sum() <= 0:
        raise SystemExit(f"--weights needs {len(labels)} non-negative numbers, one per mode")
    true_priors = w / w.sum()

    rng = np.random.default_rng(seed)
    lab_idx, unl_idx = [], []
    counts = np.floor(true_priors * n_unlabeled).astype(int)
    for k, mode in to_mode.items():
        idx = rng.permutation(np.flatnonzero(test.y == k))
        if len(idx) < per_class + counts[mode]:
            raise SystemExit(f"class {test.class_names[k]!r} has {len(idx)} test images, "
                             f"needs {per_class + counts[mode]}: lower --unlabeled")
        lab_idx.append(idx[:per_class])
        unl_idx.append(idx[per_class:per_class + counts[mode]])
    lab_idx, unl_idx = np.concatenate(lab_idx), rng.permutation(np.concatenate(unl_idx))
    modes = np.array([to_mode[int(k)] for k in test.y[lab_idx]], dtype=np.int64)

    out.mkdir(parents=True, exist_ok=True)
    # x as [N, 28, 28] uint8: the data set is NCHW with one channel
    np.savez_compressed(out / "few_labels.npz", x=test.x[lab_idx, 0], y=modes)
    np.savez_compressed(out / "unlabeled.npz", x=test.x[unl_idx, 0])
    freq = np.bincount([to_mode[int(k)] for k in test.y[unl_idx]], minlength=len(labels)) / len(unl_idx)
    return {"few_labels": str(out / "few_labels.npz"), "unlabeled": str(out / "unlabeled.npz"),
            "n_labeled": int(len(lab_idx)), "n_unlabeled": int(len(unl_idx)), "mode_labels": labels,
            "unlabeled_true_priors": np.round(freq, 4).tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "mnist", help="model directory (its mode labels)")
    p.add_argument("--dataset", default="mnist", help="data set preset or path (test split is used)")
    p.add_argument("--data-root", type=Path, default=None, help="default: $NEMGAN_DATA_DIR or ../shared/data")
    p.add_argument("--out", type=Path, default=Path("example"))
    p.add_argument("--per-class", type=int, default=10, help="labeled images per class")
    p.add_argument("--unlabeled", type=int, default=4000, help="size of the unlabeled set")
    p.add_argument("--weights", type=lambda s: [float(v) for v in s.split(",")], default=None,
                   help="relative class frequencies of the unlabeled set, one per mode (default 3,..,3,1,..,1)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(make_example(a.model, a.dataset, a.out, a.per_class, a.unlabeled, a.weights, a.seed,
                                  a.data_root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
