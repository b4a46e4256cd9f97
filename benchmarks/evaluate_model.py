#!/usr/bin/env python
"""Evaluate an exported model directory (or a run folder / .pt checkpoint) and print its metrics.

    python benchmarks/evaluate_model.py models/fashion-mnist
    python benchmarks/evaluate_model.py runs/reproduce/runs/t1-mnist-s --metrics cluster,fcd --json out.json
    python benchmarks/evaluate_model.py models/fashion-mnist --algorithm2 --max-samples 2000

Clustering of h on the chosen split (Hungarian ACC, NMI, ARI, purity) and, by default, FCD, per-mode
generation purity and the prior error, computed with training.evaluate (the metric registry of
training/metrics.py). The data set is the one recorded in the model's training options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_METRICS = "cluster,gen_purity,fcd,prior_error"
# How each metric's keys are labelled in the table; anything else is printed as metric.key.
LABELS = {("cluster", "acc"): "ACC (Hungarian)", ("cluster", "nmi"): "NMI", ("cluster", "ari"): "ARI",
          ("cluster", "purity"): "purity", ("cluster", "n_samples"): "test images",
          ("fcd", "fcd"): "FCD (our classifier's features)", ("gen_purity", "mean"): "generation purity (mean)",
          ("gen_purity", "min"): "generation purity (worst mode)",
          ("gen_purity", "classes_covered"): "classes covered by the modes",
          ("prior_error", "l1"): "prior error L1 (learned vs test frequencies)",
          ("cluster_algorithm2", "acc"): "Algorithm 2 ACC", ("cluster_algorithm2", "nmi"): "Algorithm 2 NMI"}


def flatten(res: dict) -> list[tuple[str, str, object]]:
    """(metric, key, value) rows, the clustering ones first."""
    rows = []
    for metric, val in res.items():
        if isinstance(val, dict):
            rows += [(metric, k, v) for k, v in val.items()]
        elif metric not in ("split",):
            rows.append((metric, "", val))
    order = {"cluster": 0, "cluster_algorithm2": 1}
    return sorted(rows, key=lambda r: order.get(r[0], 2))


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate_model.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="exported model directory (manifest.json), run folder or .pt checkpoint")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma-separated metric names (default {DEFAULT_METRICS}; also quality_diversity)")
    p.add_argument("--algorithm2", action="store_true", help="also cluster with 004 Algorithm 2")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on a random subset of this size")
    p.add_argument("--num-gen", type=int, default=10000, help="generated images for FCD / generation purity")
    p.add_argument("--classifier-steps", type=int, default=2000,
                   help="steps of the real-data classifier (trained once per data set, then cached)")
    p.add_argument("--cache-dir", default="runs/.cache", help="where the real-data classifiers are cached")
    p.add_argument("--data-root", default=None, help="data folder (default ../shared/data or $NEMGAN_DATA_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the plan and phases are still said)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the results to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from training.evaluate import evaluate, load_any
    from training.metrics import list_metrics

    console = Console()
    status = Console(stderr=True)  # the plan and the phases; the table goes to stdout
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in list_metrics()]
    if unknown:
        console.print(f"[red]error:[/red] unknown metric(s) {unknown}; available: {list_metrics()}")
        return 2
    try:
        model = load_any(a.model)
        res = evaluate(model, metrics, split=a.split, data_root=a.data_root, cache_dir=a.cache_dir,
                       num_gen=a.num_gen, algorithm2=a.algorithm2, max_samples=a.max_samples, seed=a.seed,
                       classifier_steps=a.classifier_steps, progress=not a.no_progress,
                       report=lambda line: status.print(line, markup=False, highlight=False))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    cfg = model.cfg
    res = {"model": str(a.model), "dataset": cfg.dataset, "n_modes": model.n_modes,
           "latent_kind": cfg.latent_kind, **res}
    table = Table(title=f"{a.model} on {cfg.dataset} ({a.split} split, {res.get('n_samples')} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, key, val in flatten({k: v for k, v in res.items() if k not in ("model", "dataset", "latent_kind",
                                                                                "n_modes", "n_samples")}):
        table.add_row(LABELS.get((metric, key), f"{metric}.{key}" if key else metric), fmt(val))
    console.print(table)
    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps(res, indent=2, default=float) + "\n")
        console.print(f"wrote {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
