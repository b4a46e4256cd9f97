"""The prior-learning job as a plain function (tests call it directly; the Celery task wraps it).

Runs in the worker (torch lives here): retrain h on the labeled set, learn alpha on the unlabeled set,
export the model into the registry's staging area, then publish it as the next version by one rename
(and activate it). Idempotent per job id; a job another worker is running is left alone.

While it runs, a heartbeat thread writes the job's phase, progress and heartbeat every second, whatever the
phase (h retraining, alpha fitting, export, publish): pollers see it move, and the reaper sees it alive.
The time limit (NEMGAN_JOB_TIME_LIMIT_S) is enforced here: checked before every step and between phases.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from ..registry import Registry
from ..settings import Settings
from .store import JobBusy, JobCancelled, JobLost, JobNotFound, JobStore

log = logging.getLogger("nemgan.worker")

_PATH = re.compile(r"(?<![\w.])(?:/[^\s/'\"():,]+)+/?")
_HOSTPORT = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://)?(?:[\w.-]+@)?[\w.-]+:\d{2,5}\b(?:/\S*)?", re.IGNORECASE)


def public_error(e: BaseException) -> str:
    """An exception as users may see it: no absolute server paths (file names kept), no host:port."""
    msg = _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], f"{type(e).__name__}: {e}")
    return _HOSTPORT.sub("<server>", msg)


def _observe(state: str, seconds: float | None) -> None:
    from .. import metrics as M

    M.WORKER_JOBS.labels(state).inc()
    if seconds is not None:
        M.JOB_DURATION.observe(seconds)


class JobTimeout(Exception):
    pass


def _phase_name(message: str) -> str:
    """'retraining h 14/400' -> 'retraining h'; 'fitting alpha: mode distribution ...' -> 'fitting alpha'."""
    return re.split(r"[:\d(]", message, maxsplit=1)[0].strip()


class _Heartbeat(threading.Thread):
    """Writes the current phase + progress + heartbeat into the job store every `interval` seconds."""

    def __init__(self, store: JobStore, job_id: str, worker: dict, interval: float = 1.0):
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.store, self.job_id, self.worker, self.interval = store, job_id, worker, interval
        self.lost = False  # re-queued to another worker: stop, and write nothing more
        self.progress, self.message, self.phase_t0 = 0.0, "started", time.time()
        self.phases: list[dict] = [{"phase": "started", "at": self.phase_t0}]
        self.cancelled = False
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def phase(self, progress: float, message: str) -> None:
        """A new phase: written at once (and recorded in the job's `phases`), then every interval with the
        time spent in it."""
        with self._lock:
            self.progress, self.message, self.phase_t0 = progress, message, time.time()
            self.phases.append({"phase": _phase_name(message), "at": self.phase_t0})
        self.write()

    def step(self, progress: float, message: str) -> None:
        """A step inside a phase (the message carries its own counter): written by the next beat, or at
        once when it starts a new phase."""
        if _phase_name(message) != self.phases[-1]["phase"]:
            return self.phase(progress, message)
        with self._lock:
            self.progress, self.message = progress, message

    def write(self) -> None:
        with self._lock:
            progress, msg, el, phases = self.progress, self.message, time.time() - self.phase_t0, list(self.phases)
        if el >= 1.0 and not re.search(r"\d+/\d+", msg):
            msg = f"{msg} ({el:.0f} s)"
        try:
            self.store.beat(self.job_id, self.worker, progress=round(progress, 4), message=msg,
                            heartbeat=time.time(), phases=phases)
        except JobLost:
            self.cancelled = self.lost = True
        except (JobCancelled, JobNotFound):
            self.cancelled = True
        except Exception as e:  # a full disk must not kill the job; the reaper decides
            log.warning("job %s heartbeat: %s", self.job_id, e)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.write()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _unlabeled(job_dir: Path) -> np.ndarray | None:
    """The uploaded unlabeled set; None: the pipeline uses the model's training data."""
    p = job_dir / "unlabeled.npz"
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as f:
        return f["x"]


def run_learn_job(job_id: str, settings: Settings | None = None) -> dict | None:
    """The job's result when it succeeded (now or before), else None (cancelled, failed, or busy elsewhere)."""
    settings = settings or Settings()
    store, registry = JobStore(settings.jobs), Registry(settings.registry)
    doc = store.get(job_id)
    if doc["state"] in ("succeeded", "cancelled", "failed"):
        return doc.get("result")
    p = doc["params"]
    name = p["model"]
    done = registry.find_job_version(name, job_id)
    if done is not None:  # published by an earlier delivery that died before recording it
        m = registry.manifest(name, done)
        result = {"model": name, "version": done, "priors": m.priors.tolist(),
                  "metrics": (m.data.get("job") or {}).get("metrics"), "activated": p.get("activate", True)}
        store.update(job_id, state="succeeded", progress=1.0, result=result, finished=time.time(), message="done")
        return result
    try:
        doc = store.start(job_id, settings.job_stale_after_s)
    except JobCancelled:
        return None
    except JobBusy:
        log.info("job %s is running on another worker; this delivery does nothing", job_id)
        return None
    if doc["state"] != "running":
        return doc.get("result")
    t0 = time.time()
    deadline = float(doc["started"]) + settings.job_time_limit_s
    beat = _Heartbeat(store, job_id, doc["worker"])
    beat.start()
    staging = registry.staging_dir(name, job_id)

    def check() -> None:
        if beat.cancelled:
            raise JobCancelled(job_id)
        if time.time() > deadline:
            raise JobTimeout(f"the job exceeded its time limit of {settings.job_time_limit_s:.0f} s")

    def should_stop() -> bool:
        return beat.cancelled or time.time() > deadline

    try:
        from training.prior_learning import learn_and_export
        from training.priors import Cancelled

        job_dir = store.dir(job_id)
        with np.load(job_dir / "labeled.npz", allow_pickle=False) as f:
            x_l, y_l = f["x"], f["y"]
        x_u = _unlabeled(job_dir)

        def phase(name_: str) -> None:  # the shared pipeline's phases -> this job's progress and limits
            if name_ == "load":
                beat.phase(0.0, "loading the model and the data")
            else:
                check()
            if name_ == "export":
                beat.phase(0.92, "exporting the model")

        shutil.rmtree(staging, ignore_errors=True)
        registry.check(name, p["version"])  # the parent version's files are what its manifest says (sha256)
        try:
            res = learn_and_export(registry.version_dir(name, p["version"]), staging, x_l, y_l, x_u,
                                   version="staging", method=p["method"], h_steps=int(p["h_steps"]),
                                   alpha_steps=int(p["alpha_steps"]), batch_size=int(p.get("batch_size", 64)),
                                   seed=int(p["seed"]), data_root=settings.data_dir,
                                   progress=lambda f, msg: beat.step(0.9 * float(f), msg),
                                   should_stop=should_stop, phase=phase).result
        except Cancelled:
            check()
            raise JobCancelled(job_id) from None
        check()
        beat.phase(0.97, "publishing the new version")
        version, _created = registry.publish(name, staging, job_id=job_id, activate=bool(p.get("activate", True)),
                                            extra={"parent_version": p["version"], "method": p["method"],
                                                   "metrics": res.metrics})
        result = {"model": name, "version": version, "parent_version": p["version"], "priors": res.priors.tolist(),
                  "metrics": res.metrics, "activated": bool(p.get("activate", True))}
        beat.stop()
        if beat.lost:  # the worker that now owns the job records it (it finds this version published)
            log.warning("job %s was re-queued while this worker published %s/%s", job_id, name, version)
            return None
        store.update(job_id, state="succeeded", progress=1.0, result=result, finished=time.time(),
                     message=f"published {name}/{version}")
        _observe("succeeded", time.time() - t0)
        return result
    except JobCancelled:
        if beat.lost:
            log.warning("job %s was re-queued (its heartbeat was late): this worker stops", job_id)
            return None
        _observe("cancelled", time.time() - t0)
        log.info("job %s cancelled", job_id)
        return None
    except Exception as e:
        log.exception("job %s failed", job_id)
        beat.stop()
        if beat.lost:
            return None
        try:
            store.update(job_id, state="failed", error=public_error(e), finished=time.time(), message="failed")
        except (JobCancelled, JobNotFound):
            pass
        _observe("failed", time.time() - t0)
        return None
    finally:
        beat.stop()
        if not beat.lost:  # a lost job's staging folder and uploads now belong to the worker running it
            shutil.rmtree(staging, ignore_errors=True)
            store.drop_uploads(job_id)
