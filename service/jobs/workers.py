"""Worker presence: every `nemgan worker` writes `<jobs>/.workers/<host>-<pid>.json` every
NEMGAN_WORKER_BEAT_S seconds (the job store's shared volume, so any API replica sees every worker, with or
without Redis). A worker whose beat is older than 3 intervals is gone; its file is removed a day later.
The API reads them for GET /v1/workers, nemgan_workers and the "no worker is running" hint on queued jobs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

from ..registry import atomic_write_json

log = logging.getLogger("nemgan.worker")

DIR = ".workers"
MISSED = 3  # beats a worker may miss before it counts as gone
FORGET_S = 24 * 3600.0


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)[:100] or "host"


class WorkerBeat(threading.Thread):
    def __init__(self, jobs_root: str | Path, interval: float, info: dict | None = None):
        super().__init__(daemon=True, name="nemgan-worker-beat")
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.path = Path(jobs_root) / DIR / f"{_safe(self.host)}-{self.pid}.json"
        self.interval = float(interval)
        self.doc = {"id": self.path.stem, "host": self.host, "pid": self.pid, "started": time.time(),
                    "interval": self.interval, **(info or {})}
        self._halt = threading.Event()

    def beat(self) -> None:
        try:
            atomic_write_json(self.path, {**self.doc, "heartbeat": time.time()})
        except OSError as e:  # a full or read-only volume must not stop the worker
            log.warning("worker presence: %s", e)

    def run(self) -> None:
        self.beat()
        while not self._halt.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._halt.set()
        self.path.unlink(missing_ok=True)


def list_workers(jobs_root: str | Path, now: float | None = None) -> list[dict]:
    """Every worker that beat in the last day: its doc plus `alive` and `age_s`, newest beat first."""
    now = time.time() if now is None else now
    d = Path(jobs_root) / DIR
    out = []
    try:
        files = list(d.glob("*.json"))
    except OSError:
        return out
    for p in files:
        try:
            doc = json.loads(p.read_text())
            age = now - float(doc["heartbeat"])
            interval = float(doc.get("interval") or 5.0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if age > FORGET_S:
            p.unlink(missing_ok=True)
            continue
        out.append({**doc, "alive": age <= MISSED * interval, "age_s": round(max(0.0, age), 1)})
    out.sort(key=lambda w: w["age_s"])
    return out
