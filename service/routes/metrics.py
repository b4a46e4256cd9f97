"""GET /metrics (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .. import metrics as M

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {
    "text/plain": {"example": 'nemgan_requests_total{route="/v1/generate",method="POST",status="200"} 12.0'}}}})
async def metrics():
    M.update_gpu_memory_if_present()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
