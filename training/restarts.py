"""Restarts: train the same recipe from N seeds and keep the run a label-free criterion picks.

Unsupervised clustering has bad draws: a seed can merge two classes and split a third, and nothing in the
run folder's labels may be used to notice (unsupervised means no labels in model selection either). Each
restart is a complete run folder `restart-<i>/` (seed = the configured seed + i, resumable on its own);
the pick reads only the held-out I(image; mode) of h on *unlabeled* images (`val_mi`) at the step each
run's best.pt was saved, never `val_acc`. The chosen best.pt is copied to the top folder,
so `nemgan export`, `nemgan eval` and `--resume` treat the folder like any run folder, and `restarts.json`
records every restart (seed, criterion, score, step, folder) and which one was kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from .config import TrainConfig


def pick(records: list[dict[str, Any]]) -> int:
    """Index of the restart whose best.pt has the highest held-out I(image; mode) of h on unlabeled images
    (`val_mi`; ties: the earlier restart). Only `val_mi` is read: no label reaches the choice."""
    return max(range(len(records)), key=lambda i: (records[i]["val_mi"], -i))


def best_row(run_dir: Path, step: int) -> dict[str, Any]:
    """The stats.jsonl evaluation row of the step best.pt was saved at."""
    for line in (run_dir / "stats.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("step") == step and "val_mi" in row:
            return row
    raise ValueError(f"{run_dir}/stats.jsonl has no evaluation row for step {step}")


def train_restarts(cfg: TrainConfig, n: int, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train n restarts of cfg into cfg.out_dir/restart-<i>/ and keep the one `pick` chooses."""
    from .train import train

    if n < 1:
        raise ValueError("restarts must be >= 1")
    if cfg.select_by != "mi":
        raise ValueError("restarts keep a model chosen without labels: select_by val_acc reads held-out labels")
    top = Path(cfg.out_dir)
    top.mkdir(parents=True, exist_ok=True)
    cfg.save(top / "options.json")
    records = []
    for i in range(n):
        sub = dataclasses.replace(cfg, seed=cfg.seed + i, out_dir=str(top / f"restart-{i}"))
        summary = train(sub, resume=resume, progress=progress)
        best = summary["best"]
        records.append({"restart": i, "seed": sub.seed, "out_dir": sub.out_dir, "step": best["step"],
                        "val_mi": best_row(Path(sub.out_dir), best["step"])["val_mi"],
                        "selected_by": best["by"], "train_time_s": summary["train_time_s"]})
    chosen = pick(records)
    shutil.copyfile(Path(records[chosen]["out_dir"]) / "best.pt", top / "best.pt")
    result = {"restarts": records, "chosen": chosen, "seed": records[chosen]["seed"],
              "rule": "highest val_mi of best.pt: I(image; mode) of h on held-out unlabeled images; "
                      "no label is read",
              "train_time_s": round(sum(r["train_time_s"] for r in records), 1), "out_dir": str(top)}
    (top / "restarts.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
