"""The job store: one directory per job under the shared jobs directory (torch-free).

    <jobs>/<id>/job.json        state, progress, message, params, result, timestamps (atomic replace)
    <jobs>/<id>/labeled.npz     the uploaded labeled set, normalised to x uint8 NCHW + y int64
    <jobs>/<id>/unlabeled.npz   optional unlabeled set
    <jobs>/<id>/.lock           flock: API (cancel) and worker (progress) never lose each other's writes

States: pending | running | succeeded | failed | cancelled. A cancelled job stays cancelled: the worker's
progress updates check the state under the lock and stop.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..registry import atomic_write_json

STATES = ("pending", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
ID_RE = re.compile(r"^[0-9a-f]{32}$")


class JobNotFound(LookupError):
    pass


class JobCancelled(Exception):
    pass


class JobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def dir(self, job_id: str) -> Path:
        if not ID_RE.match(job_id or ""):
            raise JobNotFound(f"unknown job {job_id!r}")
        return self.root / job_id

    @contextmanager
    def _locked(self, job_id: str):
        d = self.dir(job_id)
        if not d.is_dir():
            raise JobNotFound(f"unknown job {job_id!r}")
        with open(d / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def create(self, job_id: str, params: dict) -> dict:
        d = self.dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        now = time.time()
        doc = {"id": job_id, "state": "pending", "progress": 0.0, "message": "queued", "params": params,
               "created": now, "updated": now, "started": None, "finished": None, "attempts": 0,
               "result": None, "error": None, "worker": None}
        atomic_write_json(d / "job.json", doc)
        return doc

    def get(self, job_id: str) -> dict:
        p = self.dir(job_id) / "job.json"
        for _ in range(3):
            try:
                return json.loads(p.read_text())
            except FileNotFoundError:
                raise JobNotFound(f"unknown job {job_id!r}") from None
            except ValueError:
                time.sleep(0.01)
        raise JobNotFound(f"job {job_id!r} is unreadable")

    def update(self, job_id: str, allow_after_cancel: bool = False, **fields) -> dict:
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            if doc["state"] == "cancelled" and not allow_after_cancel:
                raise JobCancelled(job_id)
            doc.update(fields)
            doc["updated"] = time.time()
            atomic_write_json(d / "job.json", doc)
            return doc

    def start(self, job_id: str) -> dict:
        """Mark running (a new attempt). Raises JobCancelled for cancelled jobs."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            if doc["state"] == "cancelled":
                raise JobCancelled(job_id)
            now = time.time()
            doc.update(state="running", started=doc.get("started") or now, updated=now, heartbeat=now,
                       attempts=int(doc.get("attempts", 0)) + 1, message="started", error=None,
                       worker={"host": socket.gethostname(), "pid": os.getpid()})
            atomic_write_json(d / "job.json", doc)
            return doc

    def cancel(self, job_id: str) -> dict:
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            if doc["state"] in FINAL:
                return doc
            now = time.time()
            doc.update(state="cancelled", finished=now, updated=now, message="cancelled")
            atomic_write_json(d / "job.json", doc)
            return doc

    def ids(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if ID_RE.match(p.name) and (p / "job.json").is_file()]

    def all(self) -> list[dict]:
        out = []
        for i in self.ids():
            try:
                out.append(self.get(i))
            except JobNotFound:
                continue
        return out

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATES, 0)
        for doc in self.all():
            c[doc["state"]] = c.get(doc["state"], 0) + 1
        return c

    def orphans(self, stale_after: float) -> list[str]:
        """Running jobs whose worker died: same host and pid gone, or heartbeat older than stale_after."""
        out, host, now = [], socket.gethostname(), time.time()
        for doc in self.all():
            if doc["state"] != "running":
                continue
            w = doc.get("worker") or {}
            dead = False
            if w.get("host") == host and w.get("pid"):
                try:
                    os.kill(int(w["pid"]), 0)
                except ProcessLookupError:
                    dead = True
                except PermissionError:
                    pass
            if dead or now - float(doc.get("heartbeat") or doc["updated"]) > stale_after:
                out.append(doc["id"])
        return out
