"""Model registry endpoints: list, versions, activate (checked first), rollback, upload a version, delete one.

One unusable version folder never breaks the listing: it is listed with `valid: false` and its reason."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core.errors import ManifestError

from ..deps import AuthDep, PoolDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..registry import NAME_RE, RegistryError, VersionUnusable, check_model_dir
from ..schemas import ErrorBody, ModelDetail, ModelSummary, ModelVersion

router = APIRouter(tags=["models"])
ERR = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}}
WRITE_ERR = {**ERR, 422: {"model": ErrorBody, "description": "the version cannot be served (the reason)"},
             503: {"model": ErrorBody, "description": "the registry cannot be written here (read-only)"}}
SUMMARY_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist", "active_version": "2", "versions": ["1", "2"], "n_modes": 10}}}}}
DETAIL_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist", "active_version": "2", "versions": ["1", "2"], "history": ["1", "2"],
    "details": [{"version": "2", "active": True, "loaded": True, "priors": [0.1] * 10, "job": {"id": "3f2b..."}}]}}}}}


@contextlib.contextmanager
def _writable():
    """A registry this process cannot write (a read-only volume, a full disk, no permission) -> 503, naming
    the cause but no path; the active version and the versions stay as they were."""
    try:
        yield
    except OSError as e:
        cause = "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "not writable"
        raise ApiError(503, f"cannot change the model registry: it is {cause} on this server "
                            f"({e.strerror or type(e).__name__})", headers={"Retry-After": "60"}) from None


def _summary(registry, pool, name: str) -> dict:
    ptr = registry.pointer(name)
    active = registry.active(name)
    out = {"name": name, "active_version": active, "versions": registry.versions(name)}
    rt = pool.active.get(name) if pool is not None else None
    out["serving_version"] = rt.version if rt is not None else None
    problem = pool.problems.get(name) if pool is not None else None
    if problem is None and ptr["problem"]:
        problem = {"kind": "pointer", "wanted": ptr["version"], "serving": out["serving_version"],
                   "reason": f"active.json: {ptr['problem']}"}
    out["problem"] = problem
    m = rt.manifest if rt is not None else None
    if m is None and active:
        try:
            m = registry.check(name, active, digests=False)
        except (RegistryError, ManifestError):
            m = None
    if m is not None:
        out.update(n_modes=m.n_modes, mode_labels=m.mode_labels, image=m.data.get("image"), input=m.data.get("input"),
                   ood={k: v for k, v in m.data["ood"].items() if k != "file"} if "ood" in m.data else None)
    return out


@router.get("/v1/models", response_model=list[ModelSummary], summary="Models and their active versions",
            responses={200: {"content": {"application/json": {"example": [
                {"name": "mnist", "active_version": "2", "serving_version": "2", "versions": ["1", "2"],
                 "n_modes": 10, "problem": None}]}}}})
async def list_models(registry: RegistryDep, pool: PoolDep):
    out = []
    for n in registry.names():
        try:
            out.append(_summary(registry, pool, n))
        except RegistryError:  # removed while listing
            continue
    return out


@router.get("/v1/models/{name}", response_model=ModelDetail, responses={**ERR, **DETAIL_EX},
            summary="A model's versions (priors, metrics, the job that made each; unusable ones with the reason)")
async def get_model(name: str, registry: RegistryDep, pool: PoolDep):
    out = _summary(registry, pool, name)
    out["history"] = registry.history(name)
    loaded = {(rt.name, rt.version) for rt in [*pool.active.values(), *pool.others.values()]}
    details = []
    for v in out["versions"]:
        base = {"version": v, "active": v == out["active_version"], "loaded": (name, v) in loaded}
        failed = pool.failed.get((name, v))
        try:
            m = registry.check(name, v, digests=False)  # the digests are checked when a version is loaded
            priors = m.priors.tolist()
        except VersionUnusable as e:
            details.append(ModelVersion(**base, valid=False, error=e.reason))
            continue
        except (RegistryError, ManifestError, ValueError, TypeError, KeyError) as e:
            details.append(ModelVersion(**base, valid=False, error=f"invalid manifest.json: {type(e).__name__}"))
            continue
        details.append(ModelVersion(**base, created=m.data.get("created"), priors=priors,
                                    metrics=m.data.get("metrics") or None, job=m.data.get("job"),
                                    valid=failed is None, error=failed[1] if failed else None))
    out["details"] = details
    return out


@router.post("/v1/models/{name}/versions/{version}/activate", response_model=ModelSummary,
             responses={**WRITE_ERR, **SUMMARY_EX},
             summary="Make a version active (all replicas follow within the poll interval)")
async def activate(name: str, version: str, registry: RegistryDep, pool: PoolDep, _: AuthDep):
    # checked and loaded (digests, manifest, ONNX) before the pointer moves: 422 with the reason otherwise
    await pool.preload(name, version)
    with _writable():
        await asyncio.to_thread(registry.activate, name, version)
    await pool.refresh()
    return _summary(registry, pool, name)


@router.post("/v1/models/{name}/rollback", response_model=ModelSummary, responses={**WRITE_ERR, **SUMMARY_EX, 409: {"model": ErrorBody}},
             summary="Re-activate the version that was active before the current one")
async def rollback(name: str, registry: RegistryDep, pool: PoolDep, _: AuthDep):
    from ..registry import RegistryError

    registry.versions(name)  # 404 for unknown names
    try:
        with _writable():
            registry.rollback(name)
    except RegistryError as e:
        raise ApiError(409, str(e)) from None
    await pool.refresh()
    return _summary(registry, pool, name)


UPLOAD_OPENAPI = {"requestBody": {"required": True, "description": "a model directory (what `nemgan export` "
                  "writes) as .tar, .tar.gz or .zip; one top folder is allowed", "content": {
                      "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                      "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                      "application/zip": {"schema": {"type": "string", "format": "binary"}}}}}
UPLOAD_EX = {201: {"content": {"application/json": {"example": {
    "name": "mnist", "version": "3", "activated": False, "location": "/v1/models/mnist"}}}}}


async def _receive(request: Request, path, cap: int) -> int:
    """The body streamed to `path` (never held in memory), at most `cap` bytes (413 past it)."""
    n = 0
    with open(path, "xb") as f:
        async for chunk in request.stream():
            n += len(chunk)
            if n > cap:
                raise ApiError(413, f"the archive is over the cap of {cap} bytes (NEMGAN_MAX_MODEL_UPLOAD_BYTES)")
            f.write(chunk)
    if n == 0:
        raise ApiError(400, "send the model directory as a .tar, .tar.gz or .zip body")
    return n


def _verify_upload(model_dir, name: str, settings) -> None:
    """An uploaded directory must pass what any version passes before it may be served: manifest, digests,
    ONNX Runtime opening its graphs (and a warm-up run)."""
    from ..runtime import ModelRuntime

    check_model_dir(model_dir, name, "upload", identity=False)
    try:
        rt = ModelRuntime(model_dir, settings)
        rt.warmup()
    except Exception as e:
        from ..registry import public_reason

        raise VersionUnusable(name, "upload", public_reason(e, model_dir, "upload")) from None
    rt.sessions.clear()


@router.post("/v1/models/{name}/versions", status_code=201, openapi_extra=UPLOAD_OPENAPI,
             responses={**WRITE_ERR, **UPLOAD_EX, 400: {"model": ErrorBody}, 413: {"model": ErrorBody}},
             summary="Register a new version from an uploaded model directory (checked like any version)")
async def upload_version(name: str, request: Request, registry: RegistryDep, pool: PoolDep, settings: SettingsDep,
                         _: AuthDep, activate: bool = False):
    from ..model_upload import ArchiveError, extract_model, remove

    if not NAME_RE.match(name):
        raise ApiError(422, f"invalid model name {name!r}: letters, digits, '.', '_' and '-' (up to 128)")
    cap = settings.max_model_upload_bytes
    work = registry.root / ".uploads" / uuid.uuid4().hex
    try:
        with _writable():
            work.mkdir(parents=True)
            await _receive(request, work / "archive", cap)
        try:
            with _writable():
                model_dir = await asyncio.to_thread(extract_model, work / "archive", work / "model", cap)
        except ArchiveError as e:
            raise ApiError(e.status, f"refused: {e}") from None
        await asyncio.to_thread(_verify_upload, model_dir, name, settings)
        (work / "archive").unlink()
        with _writable():
            version, _ = await asyncio.to_thread(registry.publish, name, model_dir, None, False)
    finally:
        await asyncio.to_thread(remove, work)
    activated = False
    if activate:
        await pool.preload(name, version)
        with _writable():
            await asyncio.to_thread(registry.activate, name, version)
        activated = True
    await pool.refresh()
    loc = f"/v1/models/{name}"
    return JSONResponse({"name": name, "version": version, "activated": activated, "location": loc},
                        status_code=201, headers={"Location": loc})


@router.delete("/v1/models/{name}/versions/{version}", response_model=ModelSummary,
               responses={**WRITE_ERR, **SUMMARY_EX, 409: {"model": ErrorBody}},
               summary="Delete a version that is not active (nor served here)")
async def delete_version(name: str, version: str, registry: RegistryDep, pool: PoolDep, _: AuthDep):
    rt = pool.active.get(name)
    with _writable():
        await asyncio.to_thread(registry.delete, name, version, {rt.version} if rt is not None else set())
    pool.drop(name, version)
    return _summary(registry, pool, name)
