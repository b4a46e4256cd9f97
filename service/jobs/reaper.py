"""The reaper: one periodic pass over the job store, run by every worker and by the API (any of them may be
the only one alive; the store's locks make concurrent passes safe).

- A running job whose heartbeat is older than NEMGAN_JOB_STALE_AFTER_S (its worker died, on whatever host)
  goes back to pending and is sent again, exactly once (JobStore.requeue_if_stale is an atomic claim).
- A pending job that was requeued but whose send failed is sent again.
- A pending job whose submit never reached the broker (the API died, or the queue did not answer) is failed.
- A queued job whose message the broker no longer holds (Redis replaced by an empty instance, a restart
  without persistence) is sent again once it was queued NEMGAN_JOB_LOST_AFTER_S ago (failed with the reason
  after 3 such re-sends); the broker is asked only when such a job exists.
- A finished job's uploads are deleted (a cancel or a failure on any host; the worker drops them itself).
- Finished jobs older than NEMGAN_JOB_RETENTION_S are deleted with their folder (uploads included).
- What a crashed export left in the registry's .staging/ is removed (the first pass runs at start).
- The per-state counts are rebuilt, so a crash between a state write and its count does not last.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable

from ..registry import Registry
from .store import FINAL, ID_RE, JobNotFound, JobStore

log = logging.getLogger("nemgan.jobs")

# A submit that has not reached the broker after this long never will (the API bounds its send to seconds).
UNQUEUED_GRACE_S = 60.0
# A requeued job whose send failed is sent again after this long (one reaper claims each send).
RESEND_AFTER_S = 10.0
# A staging folder no job owns (a manual export, a half-copied seed) older than this is a crash's leftover.
STAGING_STALE_S = 3600.0


def sweep(store: JobStore, send: Callable[[str], None], stale_after: float, retention: float,
          registry: Registry | None = None, now: float | None = None,
          present: Callable[[], set[str] | None] | None = None, lost_after: float = 120.0) -> dict[str, list[str]]:
    now = time.time() if now is None else now
    out: dict[str, list[str]] = {"requeued": [], "resent": [], "failed": [], "deleted": [], "staging": [],
                                 "lost": [], "uploads dropped": []}
    maybe_lost = []
    for doc in store.all():
        job_id, state = doc["id"], doc["state"]
        try:
            if state == "running" and now - float(doc.get("heartbeat") or doc["updated"]) > stale_after:
                if store.requeue_if_stale(job_id, stale_after):
                    out["requeued"].append(job_id)
                    _send(store, send, job_id)
            elif state == "pending" and doc.get("queued"):
                if present is not None and now - float(doc["queued"]) > lost_after:
                    maybe_lost.append(job_id)
            elif state == "pending" and not doc.get("queued"):
                if doc.get("requeues"):
                    if store.claim_resend(job_id, RESEND_AFTER_S):
                        out["resent"].append(job_id)
                        _send(store, send, job_id)
                elif store.fail_if_unqueued(job_id, UNQUEUED_GRACE_S):
                    out["failed"].append(job_id)
                    store.drop_uploads(job_id)
            elif state in FINAL and now - float(doc.get("finished") or doc["updated"]) > retention:
                store.delete(job_id)
                out["deleted"].append(job_id)
            elif state in FINAL and store.drop_uploads(job_id):
                out["uploads dropped"].append(job_id)
        except JobNotFound:
            continue
    if maybe_lost:
        held = present()  # one look at the broker per pass, only when a job has waited that long
        for job_id in [] if held is None else [j for j in maybe_lost if j not in held]:
            try:
                what = store.claim_lost(job_id, lost_after)
            except JobNotFound:
                continue
            if what == "resend":
                out["lost"].append(job_id)
                _send(store, send, job_id)
            elif what == "failed":
                out["failed"].append(job_id)
                store.drop_uploads(job_id)
    store.recount()
    if registry is not None:
        out["staging"] = clean_staging(store, registry, now)
    for what, ids in out.items():
        for job_id in ids:
            log.warning("reaper: %s job %s", what, job_id)
    return out


def clean_staging(store: JobStore, registry: Registry, now: float) -> list[str]:
    """Remove what a crashed export left in <registry>/<name>/.staging/: a job's folder once that job is not
    running, anything else (a manual export, a half-copied seed) after STAGING_STALE_S."""
    out = []
    for staging in registry.root.glob("*/.staging"):
        for d in staging.iterdir():
            try:
                if ID_RE.match(d.name):
                    try:
                        busy = store.get(d.name)["state"] == "running"
                    except JobNotFound:
                        busy = False
                else:
                    busy = now - d.stat().st_mtime < STAGING_STALE_S
            except OSError:
                continue
            if not busy:
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink(missing_ok=True)
                out.append(f"{staging.parent.name}/{d.name}")
    return out


def _send(store: JobStore, send: Callable[[str], None], job_id: str) -> None:
    try:
        send(job_id)
    except Exception as e:  # stays pending + unqueued: the next pass sends it again
        log.error("reaper: cannot queue job %s: %s", job_id, type(e).__name__)
        return
    store.mark_queued(job_id)


class Reaper(threading.Thread):
    """Runs `sweep` every `interval` seconds in a daemon thread (the worker and the API each start one)."""

    def __init__(self, store: JobStore, send: Callable[[str], None], stale_after: float, retention: float,
                 registry: Registry | None = None, interval: float | None = None,
                 present: Callable[[], set[str] | None] | None = None, lost_after: float = 120.0):
        super().__init__(daemon=True, name="nemgan-reaper")
        self.args = (store, send, stale_after, retention, registry)
        self.kwargs = {"present": present, "lost_after": lost_after}
        self.interval = interval or max(1.0, min(15.0, stale_after / 3, lost_after / 4))
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep(*self.args, **self.kwargs)
            except Exception as e:
                log.error("reaper pass failed: %s", e)
            if self._halt.wait(self.interval):
                return

    def stop(self) -> None:
        self._halt.set()
