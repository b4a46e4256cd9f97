"""The job store: the one source of truth for job state (torch-free; Celery keeps no results).

    <jobs>/<id>/job.json        state, progress, message, params, result, timestamps (atomic replace)
    <jobs>/<id>/labeled.npz     the uploaded labeled set, normalised to x uint8 NCHW + y int64
    <jobs>/<id>/unlabeled.npz   optional unlabeled set
    <jobs>/<id>/.lock           flock: API (cancel), worker (progress) and reapers never lose each other's writes
    <jobs>/.counts.json         jobs per state, changed with every state change (what /metrics reads)
    <jobs>/.lock                flock around state changes + the counts file

States: pending | running | succeeded | failed | cancelled. A cancelled job stays cancelled: the worker's
progress updates check the state under the lock and stop. A running job writes a heartbeat every second;
`requeue_if_stale` (the reaper, on any host) turns a running job whose heartbeat stopped back into pending
under the job's lock, so of several reapers exactly one wins, and `start` refuses a job that another worker
is running (a redelivered message never runs a job twice at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..registry import atomic_write_json

UPLOADS = ("labeled.npz", "unlabeled.npz")
STATES = ("pending", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
ID_RE = re.compile(r"^[0-9a-f]{32}$")


class JobNotFound(LookupError):
    pass


class QueueFull(Exception):
    """As many jobs wait for a worker as the cap allows (NEMGAN_MAX_QUEUED_JOBS)."""


class JobCancelled(Exception):
    pass


class JobBusy(Exception):
    """The job is running on a live worker (its heartbeat is fresh)."""


class JobLost(JobCancelled):
    """This worker no longer owns the job: the reaper re-queued it (its heartbeat was late) or it finished."""


@contextmanager
def _flock(path: Path):
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class JobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._counts_path = self.root / ".counts.json"

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
        with _flock(d / ".lock"):
            if not (d / "job.json").is_file():  # deleted by retention while we waited
                raise JobNotFound(f"unknown job {job_id!r}")
            yield d

    # ------------------------------------------------------------------ state changes (counts follow)
    def _write(self, d: Path, doc: dict, old_state: str | None) -> None:
        """Write job.json; when the state changes, move it between the per-state counts in the same lock."""
        if old_state == doc["state"]:
            atomic_write_json(d / "job.json", doc)
            return
        with _flock(self.root / ".lock"):
            atomic_write_json(d / "job.json", doc)
            counts = self._read_counts()
            if old_state is not None:
                counts[old_state] = max(0, counts.get(old_state, 0) - 1)
            counts[doc["state"]] = counts.get(doc["state"], 0) + 1
            atomic_write_json(self._counts_path, counts)

    def create(self, job_id: str, params: dict, max_pending: int | None = None) -> dict:
        """A new pending job. With `max_pending`, QueueFull when that many jobs already wait (checked and
        counted under the store's lock, so concurrent submits on every replica never pass the cap together)."""
        d = self.dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        now = time.time()
        doc = {"id": job_id, "state": "pending", "progress": 0.0, "message": "submitting", "params": params,
               "created": now, "updated": now, "queued": None, "started": None, "finished": None, "attempts": 0,
               "result": None, "error": None, "worker": None}
        with _flock(d / ".lock"):
            if max_pending is None:
                self._write(d, doc, None)
                return doc
            with _flock(self.root / ".lock"):
                counts = self._read_counts() if self._counts_path.exists() else self._scan_counts()
                if counts.get("pending", 0) >= max_pending:
                    raise QueueFull(f"{counts.get('pending', 0)} jobs are waiting")
                atomic_write_json(d / "job.json", doc)
                counts["pending"] = counts.get("pending", 0) + 1
                atomic_write_json(self._counts_path, counts)
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
            old = doc["state"]
            if old == "cancelled" and not allow_after_cancel:
                raise JobCancelled(job_id)
            doc.update(fields)
            doc["updated"] = time.time()
            self._write(d, doc, old)
            return doc

    def mark_queued(self, job_id: str) -> dict:
        """The broker took the job's message (the message only changes while the job still waits)."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            doc["queued"] = time.time()
            if doc["state"] == "pending":
                doc["message"] = "queued"
            self._write(d, doc, doc["state"])
            return doc

    def start(self, job_id: str, stale_after: float) -> dict:
        """Claim the job for this worker (a new attempt). Raises JobCancelled for cancelled jobs and JobBusy
        while another worker runs it (heartbeat younger than stale_after); a finished job is returned as is."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            old = doc["state"]
            if old == "cancelled":
                raise JobCancelled(job_id)
            if old in FINAL:
                return doc
            now = time.time()
            if old == "running" and now - float(doc.get("heartbeat") or doc["updated"]) <= stale_after:
                raise JobBusy(job_id)
            doc.update(state="running", started=doc.get("started") or now, updated=now, heartbeat=now,
                       attempts=int(doc.get("attempts", 0)) + 1, message="started", error=None,
                       worker={"host": socket.gethostname(), "pid": os.getpid()})
            self._write(d, doc, old)
            return doc

    def beat(self, job_id: str, worker: dict, **fields) -> dict:
        """A running job's heartbeat/progress, from the worker that owns it: JobCancelled when cancelled,
        JobLost when it is no longer running under `worker` (re-queued elsewhere), so that worker stops."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            if doc["state"] == "cancelled":
                raise JobCancelled(job_id)
            if doc["state"] != "running" or doc.get("worker") != worker:
                raise JobLost(job_id)
            doc.update(fields)
            doc["updated"] = time.time()
            self._write(d, doc, "running")
            return doc

    def cancel(self, job_id: str) -> dict:
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            old = doc["state"]
            if old in FINAL:
                return doc
            now = time.time()
            doc.update(state="cancelled", finished=now, updated=now, message="cancelled")
            self._write(d, doc, old)
        if old != "running":  # a running job's worker reads them, and drops them when it stops
            self.drop_uploads(job_id)
        return doc

    def requeue_if_stale(self, job_id: str, stale_after: float) -> bool:
        """running + heartbeat older than stale_after -> pending (True). Atomic: one caller wins."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            now = time.time()
            if doc["state"] != "running" or now - float(doc.get("heartbeat") or doc["updated"]) <= stale_after:
                return False
            doc.update(state="pending", updated=now, queued=None, sending=now, requeues=int(doc.get("requeues", 0)) + 1,
                       message="requeued: its worker stopped sending heartbeats")
            self._write(d, doc, "running")
            return True

    def claim_resend(self, job_id: str, older_than: float) -> bool:
        """A requeued job whose send did not go through (pending, not queued, last send older than older_than):
        claim the next send (True) for one caller only."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            now = time.time()
            if doc["state"] != "pending" or doc.get("queued") or not doc.get("requeues") \
                    or now - float(doc.get("sending") or 0) <= older_than:
                return False
            doc.update(sending=now, updated=now)
            self._write(d, doc, "pending")
            return True

    def claim_lost(self, job_id: str, lost_after: float, max_resends: int = 3) -> str | None:
        """A queued job whose broker message is gone (checked by the caller): claim its re-send ("resend") for
        one caller only, or fail it with the reason once it was re-sent `max_resends` times ("failed");
        None when it is no longer such a job (started, cancelled, queued again meanwhile)."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            now = time.time()
            if doc["state"] != "pending" or not doc.get("queued") or now - float(doc["queued"]) <= lost_after:
                return None
            n = int(doc.get("lost", 0))
            if n >= max_resends:
                doc.update(state="failed", updated=now, finished=now, message="failed",
                           error=f"the job queue lost this job's message {n + 1} times (a broker restarted without "
                                 "its data?); submit it again")
                self._write(d, doc, "pending")
                return "failed"
            doc.update(queued=None, sending=now, updated=now, lost=n + 1, requeues=int(doc.get("requeues", 0)) + 1,
                       message="re-sent: the job queue had lost its message")
            self._write(d, doc, "pending")
            return "resend"

    def fail_if_unqueued(self, job_id: str, older_than: float) -> bool:
        """pending, never handed to the broker, created more than older_than ago -> failed (True)."""
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            now = time.time()
            if doc["state"] != "pending" or doc.get("queued") or now - float(doc["created"]) <= older_than:
                return False
            doc.update(state="failed", updated=now, finished=now, message="failed",
                       error="the job could not be queued (the job queue did not answer); submit it again")
            self._write(d, doc, "pending")
            return True

    def delete(self, job_id: str) -> None:
        with self._locked(job_id) as d:
            doc = self.get(job_id)
            with _flock(self.root / ".lock"):
                (d / "job.json").unlink()
                counts = self._read_counts()
                counts[doc["state"]] = max(0, counts.get(doc["state"], 0) - 1)
                atomic_write_json(self._counts_path, counts)
        shutil.rmtree(d, ignore_errors=True)

    def drop_uploads(self, job_id: str) -> bool:
        """A finished job's uploads are no use to anyone: free the space at once. True when any was there."""
        found = False
        for name in UPLOADS:
            try:
                (self.dir(job_id) / name).unlink()
                found = True
            except FileNotFoundError:
                pass
        return found

    def has_uploads(self, job_id: str) -> bool:
        return any((self.dir(job_id) / name).exists() for name in UPLOADS)

    # ------------------------------------------------------------------ reading
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

    def _read_counts(self) -> dict[str, int]:
        try:
            c = json.loads(self._counts_path.read_text())
        except (FileNotFoundError, ValueError):
            return dict.fromkeys(STATES, 0)
        return {s: int(c.get(s, 0)) for s in STATES}

    def counts(self) -> dict[str, int]:
        """Jobs per state: one small file, kept by every state change (not a scan of the jobs)."""
        if not self._counts_path.exists():
            return self.recount()
        return self._read_counts()

    def _scan_counts(self) -> dict[str, int]:
        c = dict.fromkeys(STATES, 0)
        for doc in self.all():
            c[doc["state"]] = c.get(doc["state"], 0) + 1
        return c

    def recount(self) -> dict[str, int]:
        """Rebuild the counts from the jobs themselves (after a crash between a write and its count)."""
        with _flock(self.root / ".lock"):
            c = self._scan_counts()
            atomic_write_json(self._counts_path, c)
            return c

    def page(self, state: str | None = None, limit: int = 50, before: float | None = None) -> tuple[list, float | None]:
        """Jobs newest first (by creation), optionally of one state and created before `before` (the cursor):
        at most `limit`, and the cursor of the next page (None at the end). The store holds what retention
        and the queue cap leave, so one pass over it is cheap."""
        docs = [d for d in self.all() if (state is None or d["state"] == state)
                and (before is None or float(d["created"]) < before)]
        docs.sort(key=lambda d: float(d["created"]), reverse=True)
        more = len(docs) > limit
        docs = docs[:limit]
        return docs, (float(docs[-1]["created"]) if more and docs else None)
