"""The issue-9 recipes, end to end: train a preset (resumable), export it, score it on the 10k test set
through the exported ONNX h, and write one JSON per row to docs/results/recipes/. `report` builds the
RESULTS.md section and the training-curve figure from those JSON files only.

    python benchmarks/recipes.py run mnist-unsup            # one row (train -> export -> test scores)
    python benchmarks/recipes.py run all --jobs 2           # every row, two at a time
    python benchmarks/recipes.py report                     # RESULTS.md section + docs/images/recipes-curves.png

Label use is the point of these rows, so it is spelled out: training sees no labels (unsup rows) or
exactly the labeled images of the preset; best.pt is chosen by `select_by: mi`, the mutual information
between image and mode of h on held-out *unlabeled* images; test labels only score the exported model.
The held-out labels are logged as `val_acc` in stats.jsonl for the curves, never used to choose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RESULTS = REPO / "docs" / "results" / "recipes"
RUNS = REPO / "runs" / "recipes"

# name: (preset, overrides, steps, role). "ablation" rows switch one extension off the ours recipe.
# fmnist-10pc before it took the clothes' warp and sup_weight 3 (rows that ran with it say so).
_FMNIST_10PC_V1 = {"aug_flip": False, "aug_rotate": 15.0, "aug_shear": 10.0, "sup_weight": 1.0}
_MMGAN_GFROZEN_DHALF = {"latent_kind": "mmgan-static", "h_mode_start": -1, "h_freeze_patience": 0, "d_width": 16}
_LEGACY: dict[str, tuple[str, dict, int, str]] = {
    "mnist-unsup-v1": ("mnist-unsup-v1", {}, 4000, "variant"),
    "mnist-unsup-v1-seed1": ("mnist-unsup-v1", {"seed": 1}, 3000, "seed"),
    "mnist-unsup-v1-seed2": ("mnist-unsup-v1", {"seed": 2}, 3000, "seed"),
    "mnist-10pc-v1": ("mnist-10pc-v1", {}, 2000, "variant"),
    "fmnist-unsup-v1": ("fmnist-unsup-v1", {}, 2000, "variant"),
    "fmnist-unsup-v1-seed1": ("fmnist-unsup-v1", {"seed": 1}, 2000, "seed"),
    "fmnist-10pc": ("fmnist-10pc", {}, 2000, "ours"),
    "fmnist-10pc-seed1": ("fmnist-10pc", {"seed": 1}, 2000, "seed"),
    "mnist2-90-10": ("mnist2-90-10", {}, 2000, "ours"),
    # The rows below trained before the presets took h_freeze_patience (mnist-unsup) and the clothes' warp
    # (fmnist-unsup): they say so in their overrides, so each row still names exactly what it ran.
    # benchmarks/step_profile.py: a half-width critic is the only measured speed-up of the step (1.6x)
    "mnist-unsup-dhalf": ("mnist-unsup-v1", {"d_width": 16}, 4000, "variant"),
    # h keeps training after its MI peak: it drifts, and g's modes stay impure (the freeze's ablation).
    "mnist-unsup-nofreeze": ("mnist-unsup-v1", {"h_freeze_patience": 0}, 4000, "ablation"),
    # The mode loss also trains h on g's samples (h_mode_start 0): h learns to accept whatever g draws for
    # mode k, and g's modes stop being pure digits (the presets use -1: g is shaped through a frozen h).
    "mnist-10pc-hmode": ("mnist-10pc-v1", {"h_mode_start": 0}, 3000, "variant"),
    "mnist-unsup-gfrozen": ("mnist-unsup-v1", {"h_mode_start": -1, "h_freeze_patience": 0}, 5000, "variant"),
    "mnist-mmgan-gfrozen": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "h_mode_start": -1,
                                            "h_freeze_patience": 0}, 5000, "variant"),
    "mnist-mmgan-dhalf": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "d_width": 16}, 4000, "variant"),
    # g's modes follow h only 72-80% of the time with the MM-GAN latent: pull harder through the frozen h.
    "mnist-mmgan-mode5": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "mode_weight": 5.0}, 4000, "variant"),
    "mnist-mmgan-mode5-dhalf": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "mode_weight": 5.0, "d_width": 16},
                                4000, "variant"),
    "mnist-mmgan-gfrozen-dhalf": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "h_mode_start": -1,
                                                  "h_freeze_patience": 0, "d_width": 16}, 5000, "variant"),
    "mnist-mmgan-gfrozen-dhalf-seed1": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "h_mode_start": -1,
                                                        "h_freeze_patience": 0, "d_width": 16, "seed": 1}, 5000,
                                        "variant"),
    "mnist-mmgan-freeze": ("mnist-unsup-v1", {"latent_kind": "mmgan-static"}, 4000, "variant"),
    "mnist-mmgan-v1": ("mnist-unsup-v1", {"latent_kind": "mmgan-static", "h_freeze_patience": 0}, 2500, "variant"),
    "fmnist-10pc-gfrozen": ("fmnist-10pc", {"h_mode_start": -1, **_FMNIST_10PC_V1}, 2000, "variant"),
    "fmnist-10pc-digitwarp": ("fmnist-10pc", _FMNIST_10PC_V1, 4000, "variant"),
    # The digits' warp (+-15 deg rotation, +-10 deg shear, no mirror) on clothes: the warp's ablation.
    "fmnist-unsup-digitwarp": ("fmnist-unsup-v1", {"aug_flip": False, "aug_rotate": 15.0, "aug_shear": 10.0}, 3000,
                               "ablation"),
    "fmnist-unsup-flip": ("fmnist-unsup-v1", {"aug_rotate": 15.0, "aug_shear": 10.0}, 2000, "variant"),
    "fmnist-unsup-flip-shift": ("fmnist-unsup-v1", {"aug_rotate": 0.0, "aug_shear": 0.0}, 2000, "variant"),
    "fmnist-10pc-flip": ("fmnist-10pc", {"aug_rotate": 15.0, "aug_shear": 10.0, "sup_weight": 1.0}, 2000, "variant"),
    "fmnist-10pc-sup1": ("fmnist-10pc", {"sup_weight": 1.0}, 4000, "variant"),
    # 10 labels a class, seen 64 at a time every step, are memorised fast: weigh them less than the unlabeled terms?
    "fmnist-10pc-sup03": ("fmnist-10pc", {"sup_weight": 0.3}, 2000, "variant"),
    "fmnist-10pc-supwarp": ("fmnist-10pc", {"sup_weight": 1.0, "sup_warp": True}, 2000, "variant"),
    "mnist-unsup-paper": ("mnist-unsup-paper", {}, 2000, "paper"),
    "mnist-abl-no-im": ("mnist-unsup-v1", {"im_weight": 0.0, "h_freeze_patience": 0}, 2000, "ablation"),
    "mnist-abl-no-cons": ("mnist-unsup-v1", {"consistency_weight": 0.0, "h_freeze_patience": 0}, 2000, "ablation"),
    "mnist-abl-neither": ("mnist-unsup-v1", {"im_weight": 0.0, "consistency_weight": 0.0, "h_freeze_patience": 0},
                          2000, "ablation"),
    # h1 with the authors' batch-norm: its running statistics drift with g's samples (see networks.H1).
    "mnist-abl-batchnorm": ("mnist-unsup-v1", {"h_norm": "batch", "h_freeze_patience": 0}, 3000, "ablation"),
}
# The rows above trained before the presets carried their own evaluation cadence: they evaluated every 200
# steps. That is part of what they ran (it decides when h freezes and which checkpoint is kept), so their
# overrides say so. The rows below run their preset exactly as `nemgan train --preset P [--seed S]` does
# (tests/benchmarks/test_recipes.py compares the two configurations).
_LEGACY_CADENCE = {"eval_every": 200, "log_every": 100}
ROWS: dict[str, tuple[str, dict, int | None, str]] = {
    name: (p, {**over, **_LEGACY_CADENCE}, steps, role) for name, (p, over, steps, role) in _LEGACY.items()}
ROWS.update({
    # The presets as `nemgan train --preset P --seed S` trains them (steps None: the preset's own).
    **{("mnist-unsup" if s == 0 else f"mnist-unsup-seed{s}"): ("mnist-unsup", {"seed": s} if s else {}, None, "ours" if s == 0 else "seed")
       for s in range(5)},
    "mnist-10pc": ("mnist-10pc", {}, None, "ours"),
    **{("fmnist-unsup" if s == 0 else f"fmnist-unsup-seed{s}"): ("fmnist-unsup", {"seed": s} if s else {}, None,
                                                                  "ours" if s == 0 else "seed") for s in range(3)},
    "fmnist-1pc": ("fmnist-1pc", {}, None, "ours"),
    "mnist-k-auto": ("mnist-k-auto", {}, None, "ours"),
    # The same recipe on digits 0-4 only: it should keep about 5 of its 20 modes.
    "mnist04-k-auto": ("mnist-k-auto", {"classes": [0, 1, 2, 3, 4]}, None, "variant"),
    "colored-mnist-unsup": ("colored-mnist-unsup", {}, None, "ours"),
    # The critic without h's clusters: g's mode k need only be *called* k by h (3,000 steps: g's purity
    # settles by then in the preset's runs).
    "mnist-abl-no-pseudo": ("mnist-unsup", {"d_pseudo_labels": False}, 3000, "ablation"),
})
# Options that change nothing trained or selected (how often samples and last.pt are written).
RUN_OPTS = dict(sample_every=1000, ckpt_every=500)


def row_config(name: str, threads: int = 1, steps: int | None = None):
    """The TrainConfig a row trains: its preset, its overrides, the run options above; steps None = the
    row's budget, whose None is the preset's own."""
    from training.config import TrainConfig, preset

    preset_name, over, row_steps, _ = ROWS[name]
    base = {**preset(preset_name), **over, **RUN_OPTS, "out_dir": str(RUNS / name), "threads": threads}
    if steps or row_steps:
        base["steps"] = steps or row_steps
    return TrainConfig(**base)


def onnx_scores(model_dir: Path, x_uint8: np.ndarray, y: np.ndarray, extras: dict | None = None) -> dict:
    """ACC / NMI / ARI of the exported h.onnx on the test set (what the service answers); `modes_1pct`: the
    modes h gives at least 1% of the images (what an unknown number of modes keeps); with a background hue
    in `extras` (Colored-MNIST), `nmi_bg_hue`: NMI between the modes and the hue in 10 bins (0 = colour-blind)."""
    import onnxruntime as ort

    from core.images import uint8_to_model
    from training.metrics import clustering_report

    sess = ort.InferenceSession(str(model_dir / "h.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = [sess.run(["logits"], {name: uint8_to_model(x_uint8[i:i + 1000])})[0].argmax(1)
            for i in range(0, len(x_uint8), 1000)]
    pred = np.concatenate(pred)
    out = {k: float(v) for k, v in clustering_report(y, pred).items()}
    out["modes_1pct"] = int((np.bincount(pred) >= 0.01 * len(pred)).sum())
    if extras and "bg_hue" in extras:
        from training.dataset.colored import hue_bins
        from training.metrics import nmi

        out["nmi_bg_hue"] = float(nmi(hue_bins(extras["bg_hue"], 10), pred))
    return out


def run_row(name: str, threads: int = 1, steps: int | None = None) -> dict:
    from training.evaluate import evaluate
    from training.export import export_model
    from training.model import NemganModel
    from training.train import load_training_data, train

    preset_name, over, _, role = ROWS[name]
    out = RUNS / name
    cfg = row_config(name, threads, steps)
    t0 = time.time()
    summary = train(cfg, resume=True, progress=False)
    model = NemganModel.load(out / "best.pt")
    model_dir = out / "model"
    export_model(model, model_dir, name, "1", overwrite=True, supervision=supervision(cfg),
                 metrics={"selection": summary["best"]})
    test = load_training_data(cfg, "test")
    row = {"row": name, "preset": preset_name, "overrides": over, "role": role, "steps": cfg.steps,
           "train_time_s": summary["train_time_s"], "labels": supervision(cfg),
           "selected": summary["best"], "test_onnx": onnx_scores(model_dir, test.x, test.y, getattr(test, "extras", None))}
    # (not under no_grad: the first evaluation of a data set trains the reference classifier)
    row["eval"] = evaluate(model, ["cluster", "gen_purity", "reconstruction"], algorithm2=cfg.latent_kind.startswith("mmgan"),
                           num_gen=5000)
    if name == "mnist-unsup":  # Algorithm 2 again, its classifier trained on warped samples of g
        from training.cluster import cluster_generated_classifier
        from training.metrics import clustering_report

        pred = cluster_generated_classifier(model, test.x, augment=True)
        row["eval"]["cluster_algorithm2_augment"] = {k: float(v) for k, v in clustering_report(test.y, pred).items()}
    if cfg.semi_supervised and cfg.priors == "learned":
        row["prior_learning"] = prior_learning_check(model, cfg, test)
    row["curve"] = [{k: r[k] for k in ("step", "time_s", "val_acc", "val_nmi", "val_mi") if k in r}
                    for r in map(json.loads, (out / "stats.jsonl").read_text().splitlines()) if "val_acc" in r]
    row["wall_s"] = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(row, indent=2, default=float) + "\n")
    return row


def supervision(cfg) -> str:
    if cfg.labeled_per_class:
        return f"{cfg.labeled_per_class} per class"
    if cfg.labeled_fraction:
        return f"{cfg.labeled_fraction:.0%} of the training set"
    return "none"


def prior_learning_check(model, cfg, test) -> dict:
    """Post-hoc prior learning (001 eq. 16) on the model's own labeled images, scored before and after on
    the test set: the learned prior against the true one, and the change of test ACC / NMI."""
    import torch

    from core.images import uint8_to_model
    from training.metrics import clustering_report
    from training.dataset.run import load_training_data, run_split
    from training.priors import learn_priors

    # The same labeled images the run trained with: run_split draws them exactly as the Trainer did.
    ds = load_training_data(cfg, "train")
    split = run_split(cfg, ds)
    x_train, y_train = ds.x[split.train_idx], ds.y[split.train_idx]
    x_l, y_l = x_train[split.lab_idx], y_train[split.lab_idx]
    pred0, _ = model.cluster(torch.from_numpy(uint8_to_model(test.x)))
    before = clustering_report(test.y, pred0)
    res = learn_priors(model, x_l, y_l, x_train, alpha_steps=500)
    pred1, _ = model.cluster(torch.from_numpy(uint8_to_model(test.x)))
    after = clustering_report(test.y, pred1)
    return {"n_labeled": int(len(x_l)), "learned_priors": res.priors.tolist(), "true_priors": test.priors.tolist(),
            "prior_abs_error_max": float(np.abs(res.priors - test.priors).max()),
            "before": {k: float(before[k]) for k in ("acc", "nmi", "ari")},
            "after": {k: float(after[k]) for k in ("acc", "nmi", "ari")}}


def ship(name: str, dest: Path, model_name: str, ood_components: str | None = None, prune: bool = False) -> Path:
    """Export a finished row's best.pt as a shipped model directory, with its test figures and label use in
    the manifest. An unsupervised model's modes carry no class: they are named m0..m{K-1}, not digits.
    prune: keep only the modes h gives >= 1% of the training images (`nemgan export --prune-modes`)."""
    from training.export import export_model, export_pruned
    from training.model import NemganModel

    row = json.loads((RESULTS / f"{name}.json").read_text())
    model = NemganModel.load(RUNS / name / "best.pt")
    if row["labels"] == "none":
        model.class_names = [f"m{k}" for k in range(model.n_modes)]
        sel = row["selected"]
        how = (f"h from its held-out MI peak at step {sel['h_from_step']}, g by val_gen_agree at step {sel['step']}"
               if "h_from_step" in sel else f"{sel['by']} at step {sel['step']}")
        sup = f"unsupervised: no labels in training or in checkpoint selection ({how})"
    else:
        sup = f"semi-supervised: {row['labels']} labeled training images supervise h ({row['selected']['by']} selection)"
    metrics = {**row["eval"], "test_onnx": row["test_onnx"], "selection": row["selected"],
               "recipe": {"preset": row["preset"], "overrides": row["overrides"], "steps": row["steps"],
                          "train_time_s": row["train_time_s"]}}
    if prune:
        out = export_pruned(model, dest, model_name, "1", metrics=metrics, supervision=sup, overwrite=True)
    else:
        out = export_model(model, dest, model_name, "1", metrics=metrics, supervision=sup, overwrite=True)
    if ood_components:  # refit the OOD score with other components (export fits the default one)
        from training.calibrate import calibrate

        calibrate(out, components=tuple(c.strip() for c in ood_components.split(",") if c.strip()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train + export + score rows (resumable: reruns continue from last.pt)")
    r.add_argument("rows", nargs="+", help=f"row names or 'all': {', '.join(ROWS)}")
    r.add_argument("--jobs", type=int, default=1, help="rows at a time, each in its own process")
    r.add_argument("--threads", type=int, default=1, help="torch threads per row")
    r.add_argument("--steps", type=int, default=None, help="override every row's step budget")
    sub.add_parser("report", help="write the RESULTS.md section and the curve figure from docs/results/recipes")
    sp = sub.add_parser("ship", help="export a finished row as a shipped model directory")
    sp.add_argument("row")
    sp.add_argument("dest", type=Path)
    sp.add_argument("--name", required=True, help="model name in the manifest (what the service serves)")
    sp.add_argument("--ood-components", default=None,
                    help="e.g. latent_mahalanobis,pixel_mse: better separation (models/mnist vs Fashion-MNIST: AUROC "
                         "0.972 vs 0.946) at the cost of running g on every clustered image (/cluster about 2x slower)")
    sp.add_argument("--prune-modes", action="store_true",
                    help="export only the live modes (h gives them >= 1%% of the training images; no labels)")
    a = ap.parse_args()
    if a.cmd == "ship":
        print(ship(a.row, a.dest, a.name, a.ood_components, a.prune_modes))
        return
    if a.cmd == "report":
        from recipes_report import write_report

        write_report(RESULTS, REPO)
        return
    names = list(ROWS) if a.rows == ["all"] else a.rows
    bad = [n for n in names if n not in ROWS]
    if bad:
        ap.error(f"unknown rows {bad}; choose from {list(ROWS)}")
    if len(names) == 1:
        row = run_row(names[0], a.threads, a.steps)
        print(json.dumps({k: row[k] for k in ("row", "steps", "train_time_s", "labels", "test_onnx")}, indent=2))
        return

    def child(n: str) -> int:  # one process per row: torch threads and memory stay per row
        cmd = [sys.executable, __file__, "run", n, "--threads", str(a.threads)] + \
              (["--steps", str(a.steps)] if a.steps else [])
        log = (RUNS / f"{n}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)

    with ThreadPoolExecutor(a.jobs) as ex:
        for n, rc in zip(names, ex.map(child, names)):
            print(f"{n}: ok" if rc == 0 else f"{n}: failed (exit {rc}), see {RUNS / (n + '.log')}")


if __name__ == "__main__":
    main()
