"""The reaper: one periodic pass over the job store, run by every worker and by the API (any of them may be
the only one alive; the store's locks make concurrent passes safe).

- A running job whose heartbeat is older than NEMGAN_JOB_STALE_AFTER_S (its worker died, on whatever host)
  goes back to pending and is sent again, exactly once (JobStore.requeue_if_stale is an atomic claim).
- A pending job that was requeued but whose send failed is sent again.
- A pending job whose submit never reached the broker (the API died, or the queue did not answer) is failed.
- Finished jobs older than NEMGAN_JOB_RETENTION_S are deleted with their folder (uploads included).
- The per-state counts are rebuilt, so a crash between a state write and its count does not last.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .store import FINAL, JobNotFound, JobStore

log = logging.getLogger("nemgan.jobs")

# A submit that has not reached the broker after this long never will (the API bounds its send to seconds).
UNQUEUED_GRACE_S = 60.0


def sweep(store: JobStore, send: Callable[[str], None], stale_after: float, retention: float,
          now: float | None = None) -> dict[str, list[str]]:
    now = time.time() if now is None else now
    out: dict[str, list[str]] = {"requeued": [], "resent": [], "failed": [], "deleted": []}
    for doc in store.all():
        job_id, state = doc["id"], doc["state"]
        try:
            if state == "running" and now - float(doc.get("heartbeat") or doc["updated"]) > stale_after:
                if store.requeue_if_stale(job_id, stale_after):
                    out["requeued"].append(job_id)
                    _send(store, send, job_id)
            elif state == "pending" and not doc.get("queued"):
                if doc.get("requeues"):
                    out["resent"].append(job_id)
                    _send(store, send, job_id)
                elif store.fail_if_unqueued(job_id, UNQUEUED_GRACE_S):
                    out["failed"].append(job_id)
            elif state in FINAL and now - float(doc.get("finished") or doc["updated"]) > retention:
                store.delete(job_id)
                out["deleted"].append(job_id)
        except JobNotFound:
            continue
    store.recount()
    for what, ids in out.items():
        for job_id in ids:
            log.warning("reaper: %s job %s", what, job_id)
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
                 interval: float | None = None):
        super().__init__(daemon=True, name="nemgan-reaper")
        self.args = (store, send, stale_after, retention)
        self.interval = interval or max(1.0, min(15.0, stale_after / 3))
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep(*self.args)
            except Exception as e:
                log.error("reaper pass failed: %s", e)
            if self._halt.wait(self.interval):
                return

    def stop(self) -> None:
        self._halt.set()
