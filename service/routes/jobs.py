"""Prior-learning jobs: POST /v1/priors/learn (202 + Location), GET/DELETE /v1/jobs/{job_id}, POST .../cancel."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from core.prior_options import H_STEPS, INT_OPTIONS

from .. import metrics as M
from ..deps import AuthDep, JobsDep, PoolDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..params import flag
from ..jobs.store import STATES, JobNotFound, QueueFull
from ..jobs.submit import QueueUnavailable
from ..jobs.uploads import UploadError, parse_set
from ..schemas import ErrorBody, JobInfo

router = APIRouter(tags=["jobs"])
log = logging.getLogger("nemgan.service")

LEARN_OPENAPI = {"requestBody": {"required": True, "content": {"multipart/form-data": {
    "schema": {"type": "object", "required": ["labeled"], "properties": {
        "labeled": {"type": "string", "format": "binary",
                    "description": "zip with one folder per class (mode label or index), or .npz with x, y"},
        "unlabeled": {"type": "string", "format": "binary",
                      "description": "optional zip/.npz/.npy; default: the manifest's training.dataset"},
        "model": {"type": "string"}, "version": {"type": "string"},
        "method": {"type": "string", "enum": ["kl", "l1"], "default": "kl"},
        **{k: {"type": "integer", "default": d, "minimum": lo, "maximum": hi} for k, (d, lo, hi) in INT_OPTIONS.items()},
        "activate": {"type": "boolean", "default": True}}},
    "example": {"labeled": "labels.zip", "method": "kl", "h_steps": H_STEPS, "alpha_steps": 500, "seed": 0}}}}}
JOB_EXAMPLE = {"id": "3f2b...", "state": "succeeded", "progress": 1.0, "message": "published mnist/2",
               "result": {"model": "mnist", "version": "2", "priors": [0.9, 0.1], "metrics": {"labeled_acc": 1.0}}}

_INT_OPTS = INT_OPTIONS  # the defaults `nemgan learn-priors` and the playground use too (core/prior_options.py)


def _int(form, key: str) -> int:
    default, lo, hi = _INT_OPTS[key]
    v = form.get(key)
    if v is None or v == "":
        return default
    try:
        n = int(str(v))
    except ValueError:
        raise ApiError(422, f"{key} must be an integer, got {v!r}") from None
    if not lo <= n <= hi:
        raise ApiError(422, f"{key} must be in {lo}..{hi}, got {n}")
    return n


def _job_view(doc: dict, workers: list | None = None) -> dict:
    out = {k: doc.get(k) for k in JobInfo.model_fields}
    if doc.get("state") == "pending" and workers is not None and not any(w["alive"] for w in workers):
        out["hint"] = "no worker is running: start one with `nemgan worker` (GET /v1/workers lists them)"
    return out


def _queue_full(settings) -> ApiError:
    M.REJECTED.labels("jobs_queue_full").inc()
    return ApiError(429, f"too many jobs are waiting for a worker (the cap is {settings.max_queued_jobs}: "
                         "NEMGAN_MAX_QUEUED_JOBS); submit again later",
                    headers={"Retry-After": str(max(5, int(settings.retry_after_s)))})


def _check_queue_room(jobs, settings) -> None:
    if jobs.counts().get("pending", 0) >= settings.max_queued_jobs:
        raise _queue_full(settings)


def _observe_finished(app, doc: dict) -> None:
    """nemgan_job_duration_seconds in the API: once per job seen finished (since start-up) by a poll."""
    seen: set = app.state.jobs_seen
    if doc["id"] in seen or not doc.get("finished") or not doc.get("started"):
        return
    seen.add(doc["id"])
    if doc["finished"] >= app.state.started_at:
        M.JOB_DURATION.observe(max(0.0, doc["finished"] - doc["started"]))


@router.post("/v1/priors/learn", status_code=202, openapi_extra=LEARN_OPENAPI, responses={
    202: {"description": "job accepted; poll the Location", "content": {"application/json": {"example": {
        "id": "3f2b...", "state": "pending", "location": "/v1/jobs/3f2b..."}}}},
    400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 413: {"model": ErrorBody},
    415: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Learn mode priors from a labeled set (Celery job); publishes and activates a new version")
async def learn(request: Request, _: AuthDep, settings: SettingsDep, registry: RegistryDep, pool: PoolDep,
                jobs: JobsDep):
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise ApiError(415, "send multipart/form-data with a 'labeled' file")
    _check_queue_room(jobs, settings)  # before the body is read: a full queue costs no upload
    # Starlette spools each file part to a temporary file past 1 MiB: the uploads are never held in memory
    form = await request.form(max_files=4, max_fields=50, max_part_size=settings.max_job_upload_bytes)
    try:
        name = form.get("model") or pool.default_name
        if not isinstance(name, str) or not name:
            raise ApiError(404, "no model")
        registry.versions(name)
        if form.get("version"):
            version = str(form.get("version"))
            manifest = await asyncio.to_thread(registry.check, name, version)  # 422 when it cannot be served
        else:
            rt = await pool.get(name, None)  # what is served (503 when nothing is), not whatever is on disk
            version, manifest = rt.version, rt.manifest
        method = form.get("method") or "kl"
        if method not in ("kl", "l1"):
            raise ApiError(422, f"method must be 'kl' or 'l1', got {method!r}")
        activate = flag(form.get("activate"), "activate", default=True)
        params = {"model": name, "version": str(version), "method": method, "activate": activate,
                  **{k: _int(form, k) for k in _INT_OPTS}}
        lab = form.get("labeled")
        if not isinstance(lab, UploadFile):
            raise ApiError(422, "a 'labeled' file is required (zip of class folders or .npz with x, y)")
        unl = form.get("unlabeled")
        if unl is not None and not isinstance(unl, UploadFile):
            raise ApiError(422, "'unlabeled' must be a file")
        if unl is None and not _default_unlabeled_available(manifest, settings):
            raise ApiError(422, "no 'unlabeled' set uploaded and the model's training data set "
                                f"{manifest.data.get('training', {}).get('dataset')!r} is not available on the server")
        queue = request.app.state.job_queue  # the jobs' own threads (2): at most two uploads decoded at once
        job_id = jobs.new_id()
        d = jobs.dir(job_id)
        d.mkdir(parents=True)
        try:
            n_l, n_u = await queue.run(_parse_and_save, d, manifest, settings, lab.file, lab.filename,
                                       *((unl.file, unl.filename) if unl is not None else (None, None)))
        except UploadError as e:
            shutil.rmtree(d, ignore_errors=True)
            hint = (f" (a job's uploads may take {settings.max_job_unpacked_bytes} bytes once unpacked: "
                    "NEMGAN_MAX_JOB_UNPACKED_BYTES)" if e.status == 413 else "")
            raise ApiError(e.status, str(e) + hint) from None
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
    finally:
        await form.close()
    params.update(n_labeled=n_l, n_unlabeled=n_u)
    try:
        jobs.create(job_id, params, max_pending=settings.max_queued_jobs)
    except QueueFull:
        shutil.rmtree(d, ignore_errors=True)
        raise _queue_full(settings) from None
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    try:
        await queue.send(job_id)
    except QueueUnavailable as e:
        log.error("cannot queue job %s: %s", job_id, e.__cause__ or e)
        jobs.update(job_id, state="failed", error="the job queue did not answer; submit the job again later",
                    finished=time.time(), message="failed")
        jobs.drop_uploads(job_id)
        M.REJECTED.labels("broker_unavailable").inc()
        raise ApiError(503, "job queue unavailable: submit the job again later",
                       headers={"Retry-After": str(settings.retry_after_s)}) from None
    jobs.mark_queued(job_id)
    loc = f"/v1/jobs/{job_id}"
    return JSONResponse({"id": job_id, "state": "pending", "location": loc}, status_code=202,
                        headers={"Location": loc})


def _default_unlabeled_available(manifest, settings) -> bool:
    training = manifest.data.get("training") or {}
    if training.get("dry_run"):
        return True
    ds = str(training.get("dataset") or "")
    if not ds:
        return False
    from core.data import dataset_path

    return dataset_path(ds, settings.data_dir).exists()


def _parse_and_save(d, manifest, settings, lab, lab_name, unl, unl_name) -> tuple[int, int | None]:
    """Both uploads read from their spooled files, checked, converted and written in one job thread, so a
    decoded set never waits in memory for its turn to be written. Returns (n labeled, n unlabeled)."""
    cap, room = settings.max_job_upload_bytes, settings.max_job_unpacked_bytes
    x, y = parse_set(lab, lab_name, manifest, True, 100_000, cap, room)
    np.savez(d / "labeled.npz", x=x, y=y)
    n_l, used = len(x), x.nbytes + y.nbytes
    del x, y
    if unl is None:
        return n_l, None
    x, _y = parse_set(unl, unl_name, manifest, False, 100_000, cap, room - used)
    np.savez(d / "unlabeled.npz", x=x)
    return n_l, len(x)


def _workers(settings) -> list[dict]:
    from ..jobs.workers import list_workers

    return list_workers(settings.jobs)


@router.get("/v1/jobs", summary="Jobs newest first (filter by state; pages of at most 200: pass `next` as before)",
            responses={200: {"content": {"application/json": {"example": {
                "jobs": [{**JOB_EXAMPLE, "state": "pending", "result": None,
                          "hint": "no worker is running: start one with `nemgan worker`"}],
                "next": None, "workers_alive": 0}}}}, 422: {"model": ErrorBody}})
async def list_jobs(jobs: JobsDep, settings: SettingsDep, state: str | None = None, limit: int = 50,
                    before: float | None = None):
    if state is not None and state not in STATES:
        raise ApiError(422, f"state must be one of {', '.join(STATES)}, got {state!r}")
    if not 1 <= limit <= 200:
        raise ApiError(422, f"limit must be in 1..200, got {limit}")
    docs, nxt = await asyncio.to_thread(jobs.page, state, limit, before)
    workers = _workers(settings)
    return {"jobs": [_job_view(d, workers) for d in docs], "next": nxt,
            "workers_alive": sum(w["alive"] for w in workers)}


@router.get("/v1/workers", summary="Workers seen in the last day (alive: beat within 3 intervals)",
            responses={200: {"content": {"application/json": {"example": {"alive": 1, "workers": [
                {"id": "gpu-node-1-4242", "host": "gpu-node-1", "pid": 4242, "alive": True, "age_s": 1.2}]}}}}})
async def list_workers_route(settings: SettingsDep):
    workers = _workers(settings)
    return {"alive": sum(w["alive"] for w in workers), "workers": workers}


@router.get("/v1/jobs/{job_id}", response_model=JobInfo, responses={
    200: {"content": {"application/json": {"example": JOB_EXAMPLE}}}, 404: {"model": ErrorBody}},
    summary="Job state, progress and, when done, the learned priors, metrics and new version")
async def get_job(job_id: str, request: Request, jobs: JobsDep, settings: SettingsDep):
    try:
        doc = jobs.get(job_id)
    except JobNotFound as e:
        raise ApiError(404, str(e)) from None
    if doc["state"] in ("succeeded", "failed", "cancelled"):
        _observe_finished(request.app, doc)
    return _job_view(doc, _workers(settings) if doc["state"] == "pending" else None)


async def _cancel(job_id: str, jobs) -> dict:
    try:
        doc = jobs.cancel(job_id)
    except JobNotFound as e:
        raise ApiError(404, str(e)) from None
    return _job_view(doc)


CANCEL_EX = {200: {"content": {"application/json": {"example": {"id": "3f2b...", "state": "cancelled",
                                                              "progress": 0.4, "message": "cancelled"}}}}}


@router.delete("/v1/jobs/{job_id}", response_model=JobInfo, responses={**CANCEL_EX, 401: {"model": ErrorBody},
                                                                       404: {"model": ErrorBody}},
               summary="Cancel a job (a running job stops at its next step and publishes nothing)")
async def delete_job(job_id: str, _: AuthDep, jobs: JobsDep):
    return await _cancel(job_id, jobs)


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobInfo, responses={**CANCEL_EX, 401: {"model": ErrorBody},
                                                                           404: {"model": ErrorBody}},
             summary="Cancel a job (same as DELETE)")
async def cancel_job(job_id: str, _: AuthDep, jobs: JobsDep):
    return await _cancel(job_id, jobs)
