"""Health: OIP v2 paths and the k8s-style aliases."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..errors import error_response

router = APIRouter(tags=["operations"])
READY_RESPONSES = {200: {"content": {"application/json": {"example": {"ready": True}}}},
                   503: {"content": {"application/json": {"example": {"error": "not ready"}}}}}


def _ready(request: Request):
    pool = getattr(request.app.state, "pool", None)
    if pool is None or not pool.ready or getattr(request.app.state, "draining", False):
        return error_response(503, "not ready", headers={"Retry-After": "1"})
    down = pool.unavailable()
    if down:  # a model of the registry that nothing serves: this replica cannot answer for it
        return error_response(503, "not ready: " + "; ".join(f"model {n!r} cannot be served" for n in sorted(down)),
                              detail=down, headers={"Retry-After": "30"})
    out = {"ready": True, "models": {n: rt.version for n, rt in pool.active.items()}}
    if pool.problems:
        out["problems"] = pool.problems
    return out


LIVE_RESPONSES = {200: {"content": {"application/json": {"example": {"live": True}}}}}


# One handler per check, served on the Open Inference Protocol path and the k8s-style alias.
@router.get("/v2/health/live", summary="OIP liveness", responses=LIVE_RESPONSES)
@router.get("/healthz", summary="Liveness (alias)", responses=LIVE_RESPONSES)
async def live():
    return {"live": True}


@router.get("/v2/health/ready", summary="OIP readiness (models loaded and warmed up)", responses=READY_RESPONSES)
@router.get("/readyz", summary="Readiness (alias)", responses=READY_RESPONSES)
async def ready(request: Request):
    return _ready(request)
