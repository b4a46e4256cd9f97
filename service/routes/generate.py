"""POST /v1/generate"""

from __future__ import annotations

import math
import secrets

import numpy as np
import orjson
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import Response

from training.manifest import model_to_uint8, sample_latents
from training.grid import make_grid

from .. import metrics as M
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
          413: {"model": ErrorBody}, 422: {"model": ErrorBody, "description": "invalid request (bad n, sigma, mode)"},
          503: {"model": ErrorBody, "description": "overloaded or not ready (Retry-After)"}}


@router.post(
    "/v1/generate", response_model=GenerateResponse, responses={
        **ERRORS, 200: {"description": "images and their modes; headers X-Nemgan-Model/-Version/-Seed/-Modes",
                        "content": {"image/png": {}, "application/zip": {}, "application/x-npz": {}}}},
    summary="Generate images (mode by index/label, or drawn from the priors)")
async def generate(req: Annotated[GenerateRequest, Body(openapi_examples=EXAMPLES)], pool: PoolDep, settings: SettingsDep):
    if req.n > settings.max_n:
        raise ApiError(422, f"n={req.n} exceeds the cap of {settings.max_n}")
    rt = await pool.get(req.model, None if req.version is None else str(req.version))
    async with rt.lease():
        mode = req.mode
        if isinstance(mode, str) and mode not in rt.mode_labels and mode.lstrip("-").isdigit():
            mode = int(mode)
        try:
            mode = rt.manifest.resolve_mode(mode)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        if not math.isfinite(req.sigma):
            raise ApiError(422, "sigma must be finite")
        seed = req.seed if req.seed is not None else secrets.randbits(63)
        z, modes = sample_latents(rt.spec, req.n, mode, req.sigma, seed)
        x = await rt.infer("g", z)
    M.IMAGES_GENERATED.labels(rt.name).inc(req.n)
    imgs = model_to_uint8(x)
    headers = {"X-Nemgan-Model": rt.name, "X-Nemgan-Version": rt.version, "X-Nemgan-Seed": str(seed),
               "X-Nemgan-Modes": ",".join(map(str, modes.tolist()))}
    if req.format == "npz":
        return Response(npz_bytes(images=imgs, modes=modes), media_type="application/x-npz", headers=headers)
    if req.format == "grid":
        nrow = max(1, int(math.ceil(math.sqrt(req.n))))
        grid = make_grid(imgs, nrow)
        grid = grid[None] if grid.ndim == 2 else grid.transpose(2, 0, 1)
        return Response(png_bytes(grid), media_type="image/png", headers=headers)
    if req.format == "png":
        if req.n == 1:
            return Response(png_bytes(imgs[0]), media_type="image/png", headers=headers)
        return Response(zip_of_pngs(imgs, modes, rt.mode_labels), media_type="application/zip", headers=headers)
    labels = rt.mode_labels
    body = {"model": rt.name, "version": rt.version, "seed": seed, "n": req.n, "modes": modes.tolist(),
            "mode_labels": [labels[int(m)] for m in modes], "images": [b64png(im) for im in imgs]}
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)
