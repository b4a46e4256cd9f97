"""The prior-learning job as a plain function (tests call it directly; the Celery task wraps it).

Runs in the worker (torch lives here): retrain h on the labeled set, learn alpha on the unlabeled set,
export the model into the registry's staging area, then publish it as the next version by one rename
(and activate it). Idempotent per job id.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..registry import Registry
from ..settings import Settings
from .store import JobCancelled, JobStore

log = logging.getLogger("nemgan.worker")


def _observe(state: str, seconds: float | None) -> None:
    from .. import metrics as M

    M.WORKER_JOBS.labels(state).inc()
    if seconds is not None:
        M.JOB_DURATION.observe(seconds)


def _unlabeled(model, job_dir: Path, settings: Settings) -> np.ndarray:
    p = job_dir / "unlabeled.npz"
    if p.is_file():
        with np.load(p, allow_pickle=False) as f:
            return f["x"]
    from training.train import load_training_data

    cfg = model.cfg
    cfg.data_root = str(settings.data_dir)
    return load_training_data(cfg, "train").x


def run_learn_job(job_id: str, settings: Settings | None = None,
                  progress_hook: Callable[[float, str], None] | None = None) -> dict | None:
    settings = settings or Settings()
    store, registry = JobStore(settings.jobs), Registry(settings.registry)
    doc = store.get(job_id)
    if doc["state"] in ("succeeded", "cancelled"):
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
        doc = store.start(job_id)
    except JobCancelled:
        return None
    t0 = time.time()
    deadline = float(doc["started"]) + settings.job_time_limit_s
    last = {"check": 0.0, "write": 0.0, "stop": False}

    def should_stop() -> bool:
        now = time.time()
        if now > deadline:
            return True
        if now - last["check"] > 0.5:
            last["check"] = now
            try:
                last["stop"] = store.get(job_id)["state"] == "cancelled"
            except Exception:
                pass
        return last["stop"]

    def progress(frac: float, msg: str) -> None:
        now = time.time()
        if now - last["write"] < 0.5 and frac < 1.0:
            return
        last["write"] = now
        try:
            store.update(job_id, progress=round(0.9 * float(frac), 4), message=msg, heartbeat=now)
        except JobCancelled:
            last["stop"] = True
        if progress_hook:
            progress_hook(0.9 * float(frac), msg)

    try:
        from training.export import export_model, load_exported
        from training.priors import Cancelled, learn_priors

        job_dir = store.dir(job_id)
        base_dir = registry.version_dir(name, p["version"])
        model = load_exported(base_dir)
        with np.load(job_dir / "labeled.npz", allow_pickle=False) as f:
            x_l, y_l = f["x"], f["y"]
        progress(0.0, "loading unlabeled data")
        x_u = _unlabeled(model, job_dir, settings)
        try:
            res = learn_priors(model, x_l, y_l, x_u, method=p["method"], h_steps=int(p["h_steps"]),
                               alpha_steps=int(p["alpha_steps"]), batch_size=int(p.get("batch_size", 64)),
                               seed=int(p["seed"]), progress=progress, should_stop=should_stop)
        except Cancelled:
            if time.time() > deadline:
                raise TimeoutError(f"job exceeded its time limit of {settings.job_time_limit_s:.0f}s") from None
            raise JobCancelled(job_id) from None
        if should_stop():
            raise JobCancelled(job_id)
        store.update(job_id, progress=0.92, message="exporting", heartbeat=time.time())
        staging = registry.staging_dir(name, job_id)
        shutil.rmtree(staging, ignore_errors=True)
        base_manifest = registry.manifest(name, p["version"])
        metrics = {**(base_manifest.data.get("metrics") or {}), "priors_learning": res.metrics}
        export_model(model, staging, name=name, version="staging", metrics=metrics,
                     supervision=base_manifest.data.get("supervision"), dataset=base_manifest.data.get("dataset"))
        if should_stop():
            shutil.rmtree(staging, ignore_errors=True)
            raise JobCancelled(job_id)
        version, created = registry.publish(name, staging, job_id=job_id, activate=bool(p.get("activate", True)),
                                            extra={"parent_version": p["version"], "method": p["method"],
                                                   "metrics": res.metrics})
        result = {"model": name, "version": version, "parent_version": p["version"], "priors": res.priors.tolist(),
                  "metrics": res.metrics, "activated": bool(p.get("activate", True))}
        store.update(job_id, state="succeeded", progress=1.0, result=result, finished=time.time(),
                     message=f"published {name}/{version}")
        _observe("succeeded", time.time() - t0)
        return result
    except JobCancelled:
        _observe("cancelled", time.time() - t0)
        log.info("job %s cancelled", job_id)
        return None
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        log.exception("job %s failed", job_id)
        try:
            store.update(job_id, state="failed", error=msg, finished=time.time(), message="failed")
        except JobCancelled:
            pass
        _observe("failed", time.time() - t0)
        return None


def recover_orphans(app, settings: Settings) -> list[str]:
    """Requeue jobs left 'running' by a worker that died (its message may be gone with it)."""
    store = JobStore(settings.jobs)
    out = []
    for job_id in store.orphans(settings.job_stale_after_s):
        try:
            store.update(job_id, state="pending", message="requeued after a worker was lost")
        except JobCancelled:
            continue
        from .celery_app import TASK_NAME

        app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=settings.queue_name)
        out.append(job_id)
        log.warning("requeued orphaned job %s", job_id)
    return out
