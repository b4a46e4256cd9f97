"""Small helpers of the reproduction run: paths, git info, JSON files, stats.jsonl, locks, progress logging.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


log = logging.getLogger("reproduce")


def git_info() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001 - no git: record nothing
            return ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty_training": bool(git("status", "--porcelain", "--", "training", "benchmarks"))}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def read_stats(run_dir: Path) -> list[dict]:
    p = run_dir / "stats.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class FileLock:
    """flock on a file: two rows evaluating on the same data set train its classifier only once."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


class ProgressLogger(threading.Thread):
    """Logs a row's progress from its stats.jsonl every `interval` seconds; ends the process if the
    parent scheduler died (so an orphaned worker never keeps writing into a run folder)."""

    def __init__(self, row_id: str, run_dir: Path, budget: int, interval: float, watch_parent: bool):
        super().__init__(daemon=True)
        self.row_id, self.run_dir, self.budget, self.interval = row_id, run_dir, budget, interval
        self.parent = os.getppid() if watch_parent else None
        self.stop = threading.Event()
        self.t0 = time.time()
        self.step0: int | None = None

    def run(self):
        last_log = time.time()
        while not self.stop.wait(min(5.0, self.interval)):
            if self.parent is not None and os.getppid() != self.parent:
                os._exit(3)
            if time.time() - last_log < self.interval:
                continue
            last_log = time.time()
            stats = read_stats(self.run_dir)
            if not stats:
                continue
            s = stats[-1]
            step = int(s.get("step", 0))
            if self.step0 is None:
                self.step0 = step
                self.t0 = time.time()
                continue
            rate = (time.time() - self.t0) / max(1, step - self.step0)
            eta = rate * max(0, self.budget - step)
            best = next((r["best_step"] for r in reversed(stats) if "best_step" in r), None)
            acc = next((r["val_acc"] for r in reversed(stats) if "val_acc" in r), None)
            log.info("[%s] step %d/%d (%.0f%%) val_acc %s best %s loss_d %.3f loss_g %.3f | %.2f s/step, ETA %s",
                     self.row_id, step, self.budget, 100 * step / max(1, self.budget), fmt(acc), fmt(best),
                     s.get("loss_d", float("nan")), s.get("loss_g", float("nan")), rate,
                     dt.timedelta(seconds=int(eta)))


def fmt(v, nd=3) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def resolve(p: str | Path) -> Path:
    """A path recorded in a results file: as written, else relative to the repository."""
    p = Path(p)
    return p if p.is_absolute() or p.exists() else REPO / p


def setup_logging(log_path: Path | None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_reproduce", False):
            root.removeHandler(h)
    formatter = logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path))
    for h in handlers:
        h.setFormatter(formatter)
        h._reproduce = True
        root.addHandler(h)
    root.setLevel(logging.INFO)
    log.setLevel(logging.INFO)
