"""POST /v1/generate"""

from __future__ import annotations

import asyncio
import math
import secrets

import numpy as np
import orjson
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from core.grid import make_grid
from core.images import model_to_uint8
from core.latent import sample_latents

from ..deps import PoolDep, SettingsDep
from ..encoding import b64png, npz_bytes, png_bytes, zip_of_pngs
from ..errors import ApiError
from ..schemas import ErrorBody, GenerateRequest, GenerateResponse

router = APIRouter(tags=["inference"])

EXAMPLES = {
    "grid": {"summary": "16 images of mode 3 as a PNG grid", "value": {"mode": 3, "n": 16, "seed": 42, "format": "grid"}},
    "priors": {"summary": "modes drawn from the priors, JSON", "value": {"n": 4, "seed": 7, "format": "json"}},
    "label": {"summary": "by label and version, npz", "value": {"model": "mnist", "version": "1", "mode": "7",
                                                                "n": 256, "sigma": 0.5, "format": "npz"}},
}

ERRORS = {404: {"model": ErrorBody, "description": "unknown model or version"},
          413: {"model": ErrorBody}, 415: {"model": ErrorBody, "description": "body not sent as application/json"},
          422: {"model": ErrorBody, "description": "invalid request (bad n, sigma, mode)"},
          503: {"model": ErrorBody, "description": "overloaded or not ready (Retry-After)"}}


@router.post(
    "/v1/generate", response_model=GenerateResponse, responses={
        **ERRORS, 200: {"description": "images and their modes; headers X-Nemgan-Model/-Version/-Seed/-Modes",
                        "content": {"image/png": {}, "application/zip": {}, "application/x-npz": {}}}},
    summary="Generate images (mode by index/label, or drawn from the priors)")
async def generate(req: Annotated[GenerateRequest, Body(openapi_examples=EXAMPLES)], pool: PoolDep, settings: SettingsDep,
                   _json: Annotated[None, Depends(require_json)]):
    # Served by service/fastpath.py (pure ASGI in front of the router) when the body validates; this route
    # documents the endpoint and produces FastAPI's own 422s for invalid bodies.
    return await handle_generate(pool, settings, req)


def json_content_type_error(content_type: str) -> ApiError | None:
    """415 for a body declared as anything but JSON (no Content-Type at all is read as JSON)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        return ApiError(415, f"unsupported content type {ctype}: send the request as application/json")
    return None


async def require_json(request: Request) -> None:
    err = json_content_type_error(request.headers.get("content-type") or "")
    if err is not None:
        raise err


async def handle_generate(pool, settings, req: GenerateRequest) -> Response:
    if req.n > settings.max_n:
        raise ApiError(422, f"n={req.n} exceeds the cap of {settings.max_n}")
    rt = await pool.get(req.model, None if req.version is None else str(req.version))
    async with rt.lease():
        try:
            mode = rt.manifest.resolve_mode(req.mode)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        if not math.isfinite(req.sigma):
            raise ApiError(422, "sigma must be finite")
        seed = req.seed if req.seed is not None else secrets.randbits(63)
        z, modes = sample_latents(rt.spec, req.n, mode, req.sigma, seed)
        x = await rt.infer("g", z)
    rt.count_generated(req.n)
    headers = {**rt.headers, "X-Nemgan-Seed": str(seed), "X-Nemgan-Modes": ",".join(map(str, modes.tolist()))}
    if req.n >= 64:  # encoding a big batch (uint8, npz/PNG) off the event loop
        body, media_type = await asyncio.to_thread(_encode, x, modes, req, rt.mode_labels, rt.name, rt.version, seed)
    else:
        body, media_type = _encode(x, modes, req, rt.mode_labels, rt.name, rt.version, seed)
    return Response(body, media_type=media_type, headers=headers)


def _encode(x: np.ndarray, modes: np.ndarray, req: GenerateRequest, labels: list[str], name: str, version: str,
            seed: int) -> tuple[bytes, str]:
    imgs = model_to_uint8(x)
    if req.format == "npz":
        return npz_bytes(images=imgs, modes=modes), "application/x-npz"
    if req.format == "grid":
        nrow = max(1, int(math.ceil(math.sqrt(req.n))))
        grid = make_grid(imgs, nrow)
        grid = grid[None] if grid.ndim == 2 else grid.transpose(2, 0, 1)
        return png_bytes(grid), "image/png"
    if req.format == "png":
        if req.n == 1:
            return png_bytes(imgs[0]), "image/png"
        return zip_of_pngs(imgs, modes, labels), "application/zip"
    body = {"model": name, "version": version, "seed": seed, "n": req.n, "modes": modes.tolist(),
            "mode_labels": [labels[int(m)] for m in modes], "images": [b64png(im) for im in imgs]}
    return orjson.dumps(body), "application/json"
