#!/usr/bin/env python
"""Reproduce the papers' result tables: train and evaluate every row, then write RESULTS.md and figures.

    python benchmarks/reproduce.py --dry-run                 # smoke test: fake data, 3 steps a row (~1 min)
    python benchmarks/reproduce.py --steps 3000 --jobs 2     # the real run (hours on 2 CPU cores; resumable)
    python benchmarks/reproduce.py --report-only             # rebuild RESULTS.md + figures from results/*.json
    python benchmarks/reproduce.py --list                    # the rows, their configs and the paper's figures

Every row is a declarative entry of ROWS: a TrainConfig override, the paper's reported figures (the only
numbers typed by hand here, each with its table), and the extras it needs (prior learning, Algorithm 2,
the sigma quality/diversity sweep). Per row the script

  1. trains with `training.train.train(cfg, resume=True)` into OUT/runs/<row>/ (skipped when summary.json
     already shows the budget; a stopped run continues from its last.pt),
  2. evaluates best.pt on the test split (training.evaluate: Hungarian ACC / NMI / ARI / purity, FCD,
     generation purity, prior error),
  3. runs the row's extras,
  4. writes OUT/results/<row>.json (metrics, config, budget, train time, device, git commit), or the error.

The code lives in benchmarks/repro/, one concern a file: rows.py (the rows and options), run.py (one row,
the scheduler, shipping), evaluation.py (metrics and extras), report.py + figures.py (RESULTS.md),
util.py (helpers). This file is the command line.

RESULTS.md is built only from those JSON files (and the run folders' stats.jsonl / samples PNGs for the
figures), so `--report-only` rebuilds it at any time, e.g. while the long run is still going.
Stop the run at any point (Ctrl-C / kill); the same command resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the repro package beside this file

from repro.report import build_report, load_results  # noqa: E402
from repro.rows import (DEFAULT_STEPS, PAPER_STEPS, ROWS, SHIP_MIN_ACC, SIGMAS, Options, Row,  # noqa: E402,F401
                        row_config, select_rows)
from repro.run import run_rows, ship_models  # noqa: E402
from repro.util import REPO, log, setup_logging, write_json  # noqa: E402


def _parse_set(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"error: --set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and evaluate every row of the papers' tables (001 Tables 1-2, 003 Table III and "
                    "ablations, 004 MM-GAN) and write RESULTS.md with figures. Resumable: stop at any time, rerun "
                    "the same command to continue.",
        epilog="examples:\n"
               "  python benchmarks/reproduce.py --dry-run                  # smoke test (fake data, 3 steps/row)\n"
               "  nohup python benchmarks/reproduce.py --steps 3000 --jobs 2 > runs/reproduce.out 2>&1 &\n"
               "  python benchmarks/reproduce.py --rows 't1-*,t2-mnist5'    # a subset (ids, globs or table names)\n"
               "  python benchmarks/reproduce.py --report-only              # rebuild RESULTS.md from results/*.json\n")
    p.add_argument("--rows", help="comma-separated row ids, globs (t1-*) or tables (t1, t2, ablation, mmgan); default all")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"training steps per row (default {DEFAULT_STEPS}; the papers: {PAPER_STEPS})")
    p.add_argument("--out", default=None, help="output folder: runs/, results/, reproduce.log "
                                               "(default runs/reproduce; runs/reproduce-dry-run with --dry-run)")
    p.add_argument("--jobs", type=int, default=1, help="rows trained in parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per row process (default: CPU cores / jobs)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto uses a GPU when one is visible; cpu hides GPUs (the run's options stay the same)")
    p.add_argument("--labeled-fraction", type=float, default=0.005,
                   help="labels for the semi-supervised rows (NEMGAN_S/P, Table 2/III); default 0.5%%, the papers use < 1%% "
                        "(changing it needs a new --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field for every row, e.g. --set lr_d=2e-4 (needs a new --out)")
    p.add_argument("--report-only", action="store_true", help="only rebuild RESULTS.md and figures from results/*.json")
    p.add_argument("--dry-run", action="store_true",
                   help="fake data, 3 steps a row, tiny evaluations; the report goes inside --out")
    p.add_argument("--report", default=None, help="report path (default RESULTS.md at the repo root; OUT/RESULTS.md for dry runs)")
    p.add_argument("--fig-dir", default=None, help="figures folder (default docs/results; OUT/figures for dry runs)")
    p.add_argument("--no-ship", action="store_true", help="do not export models/fashion-mnist")
    p.add_argument("--ship-min-acc", type=float, default=SHIP_MIN_ACC, help="test ACC needed to ship (default 0.80)")
    p.add_argument("--force-eval", action="store_true", help="re-evaluate rows that already have results")
    p.add_argument("--log-interval", type=float, default=60.0, help="seconds between progress lines per row")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    return p



def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    rows = select_rows(a.rows)
    if a.list:
        for r in rows:
            print(f"{r.id:18s} {r.source:34s} {r.dataset:20s} {r.model:14s} paper {r.paper}\n"
                  f"{'':18s} overrides {r.overrides}{' +labels' if r.labeled else ''} extras {list(r.extras)}")
        return 0
    out = Path(a.out or ("runs/reproduce-dry-run" if a.dry_run else "runs/reproduce"))
    opts = Options(out=str(out), steps=a.steps, jobs=max(1, a.jobs), device=a.device, dry_run=a.dry_run,
                   labeled_fraction=a.labeled_fraction, seed=a.seed, sets=_parse_set(a.sets),
                   force_eval=a.force_eval, log_interval=a.log_interval)
    opts.threads = a.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    if a.dry_run:
        opts.shrink_for_dry_run()
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    log_path = out / "reproduce.log"
    setup_logging(log_path)
    existing = load_results(out) if (out / "results").is_dir() else []
    inside = a.dry_run or any(r.get("dry_run") for r in existing)
    report = Path(a.report) if a.report else (out / "RESULTS.md" if inside else REPO / "RESULTS.md")
    fig_dir = Path(a.fig_dir) if a.fig_dir else (out / "figures" if inside else REPO / "docs" / "results")
    models_root = out / "models" if inside else REPO / "models"

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.time()
    if not a.report_only:
        log.info("reproduce: %d rows, %d steps each, jobs %d x %d threads, device %s, out %s%s", len(rows),
                 opts.steps, opts.jobs, opts.threads, opts.device, out, " [dry run]" if a.dry_run else "")
        try:
            run_rows(rows, opts, log_path)
        except KeyboardInterrupt:
            log.warning("interrupted after %.0f s; rerun the same command to resume", time.time() - t0)
            return 130
        if not a.no_ship:
            shipped = ship_models(load_results(out), opts, models_root, a.ship_min_acc)
            if shipped:
                write_json(out / "results" / "_shipped.json", shipped)  # type: ignore[arg-type]
    path = build_report(out, report, fig_dir)
    if not inside:  # the per-row JSON the report was built from, committed beside its figures
        rows_dir = REPO / "docs" / "results" / "rows"
        rows_dir.mkdir(parents=True, exist_ok=True)
        for p in (out / "results").glob("*.json"):
            shutil.copyfile(p, rows_dir / p.name)
    results = load_results(out)
    n_ok = sum(r.get("status") == "ok" for r in results)
    log.info("report: %s (%d/%d rows ok, figures in %s) in %.1f s", path, n_ok, len(results), fig_dir, time.time() - t0)
    return 0



if __name__ == "__main__":
    sys.exit(main())
