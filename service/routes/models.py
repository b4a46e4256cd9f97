"""Model registry endpoints: list, versions, activate, rollback."""

from __future__ import annotations

import contextlib
import errno

from fastapi import APIRouter

from ..deps import AuthDep, PoolDep, RegistryDep
from ..errors import ApiError
from ..schemas import ErrorBody, ModelDetail, ModelSummary, ModelVersion

router = APIRouter(tags=["models"])
ERR = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}}
WRITE_ERR = {**ERR, 503: {"model": ErrorBody, "description": "the registry cannot be written here (read-only)"}}
SUMMARY_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist", "active_version": "2", "versions": ["1", "2"], "n_modes": 10}}}}}
DETAIL_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist", "active_version": "2", "versions": ["1", "2"], "history": ["1", "2"],
    "details": [{"version": "2", "active": True, "loaded": True, "priors": [0.1] * 10, "job": {"id": "3f2b..."}}]}}}}}


@contextlib.contextmanager
def _writable():
    """A registry this process cannot write (a read-only volume, a full disk, no permission) -> 503, naming
    the cause but no path; the active version stays as it was."""
    try:
        yield
    except OSError as e:
        cause = "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "not writable"
        raise ApiError(503, f"cannot change the active version: the model registry is {cause} on this server "
                            f"({e.strerror or type(e).__name__})", headers={"Retry-After": "60"}) from None


def _summary(registry, name: str) -> dict:
    active = registry.active(name)
    out = {"name": name, "active_version": active, "versions": registry.versions(name)}
    if active:
        m = registry.manifest(name, active)
        out.update(n_modes=m.n_modes, mode_labels=m.mode_labels, image=m.data.get("image"), input=m.data.get("input"),
                   ood={k: v for k, v in m.data["ood"].items() if k != "file"} if "ood" in m.data else None)
    return out


@router.get("/v1/models", response_model=list[ModelSummary], summary="Models and their active versions",
            responses={200: {"content": {"application/json": {"example": [
                {"name": "mnist", "active_version": "2", "versions": ["1", "2"], "n_modes": 10}]}}}})
async def list_models(registry: RegistryDep):
    return [_summary(registry, n) for n in registry.names()]


@router.get("/v1/models/{name}", response_model=ModelDetail, responses={**ERR, **DETAIL_EX},
            summary="A model's versions (priors, metrics, the job that made each)")
async def get_model(name: str, registry: RegistryDep, pool: PoolDep):
    out = _summary(registry, name)
    out["history"] = registry.history(name)
    loaded = {(rt.name, rt.version) for rt in [*pool.active.values(), *pool.others.values()]}
    details = []
    for v in out["versions"]:
        m = registry.manifest(name, v)
        details.append(ModelVersion(version=v, active=v == out["active_version"], loaded=(name, v) in loaded,
                                    created=m.data.get("created"), priors=m.priors.tolist(),
                                    metrics=m.data.get("metrics") or None, job=m.data.get("job")))
    out["details"] = details
    return out


@router.post("/v1/models/{name}/versions/{version}/activate", response_model=ModelSummary,
             responses={**WRITE_ERR, **SUMMARY_EX},
             summary="Make a version active (all replicas follow within the poll interval)")
async def activate(name: str, version: str, registry: RegistryDep, pool: PoolDep, _: AuthDep):
    with _writable():
        registry.activate(name, version)
    await pool.refresh()
    return _summary(registry, name)


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
    return _summary(registry, name)
