"""Prior-learning jobs: POST /v1/priors/learn (202 + Location), GET/DELETE /v1/jobs/{job_id}, POST .../cancel."""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from core.prior_options import H_STEPS, INT_OPTIONS

from .. import metrics as M
from ..deps import AuthDep, JobsDep, PoolDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..jobs.store import JobNotFound
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


def _job_view(doc: dict) -> dict:
    return {k: doc.get(k) for k in JobInfo.model_fields}


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
    form = await request.form(max_files=4, max_fields=50, max_part_size=settings.max_job_upload_bytes)
    try:
        name = form.get("model") or pool.default_name
        if not isinstance(name, str) or not name:
            raise ApiError(404, "no model")
        registry.versions(name)
        version = form.get("version") or registry.active(name)
        manifest = registry.manifest(name, str(version))
        method = form.get("method") or "kl"
        if method not in ("kl", "l1"):
            raise ApiError(422, f"method must be 'kl' or 'l1', got {method!r}")
        activate = str(form.get("activate", "true")).lower() not in ("0", "false", "no", "off")
        params = {"model": name, "version": str(version), "method": method, "activate": activate,
                  **{k: _int(form, k) for k in _INT_OPTS}}
        lab = form.get("labeled")
        if not isinstance(lab, UploadFile):
            raise ApiError(422, "a 'labeled' file is required (zip of class folders or .npz with x, y)")
        unl = form.get("unlabeled")
        if unl is not None and not isinstance(unl, UploadFile):
            raise ApiError(422, "'unlabeled' must be a file")
        lab_bytes = await lab.read()
        unl_bytes = await unl.read() if unl is not None else None
    finally:
        await form.close()
    queue = request.app.state.job_queue  # the jobs' own threads: never those inference needs
    try:
        cap = settings.max_job_upload_bytes
        x_l, y_l = await queue.run(parse_set, lab_bytes, lab.filename, manifest, True, 100_000, cap)
        x_u = None
        if unl_bytes is not None:
            x_u, _y = await queue.run(parse_set, unl_bytes, unl.filename, manifest, False, 100_000, cap)
    except UploadError as e:
        raise ApiError(e.status, str(e)) from None
    if x_u is None and not _default_unlabeled_available(manifest, settings):
        raise ApiError(422, "no 'unlabeled' set uploaded and the model's training data set "
                            f"{manifest.data.get('training', {}).get('dataset')!r} is not available on the server")
    params.update(n_labeled=int(len(x_l)), n_unlabeled=None if x_u is None else int(len(x_u)))
    job_id = jobs.new_id()
    d = jobs.dir(job_id)
    d.mkdir(parents=True)
    await queue.run(_save, d, x_l, y_l, x_u)
    jobs.create(job_id, params)
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


def _save(d, x_l, y_l, x_u) -> None:
    np.savez(d / "labeled.npz", x=x_l, y=y_l)
    if x_u is not None:
        np.savez(d / "unlabeled.npz", x=x_u)


@router.get("/v1/jobs/{job_id}", response_model=JobInfo, responses={
    200: {"content": {"application/json": {"example": JOB_EXAMPLE}}}, 404: {"model": ErrorBody}},
    summary="Job state, progress and, when done, the learned priors, metrics and new version")
async def get_job(job_id: str, request: Request, jobs: JobsDep):
    try:
        doc = jobs.get(job_id)
    except JobNotFound as e:
        raise ApiError(404, str(e)) from None
    if doc["state"] in ("succeeded", "failed", "cancelled"):
        _observe_finished(request.app, doc)
    return _job_view(doc)


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
