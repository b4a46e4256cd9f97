"""POST /v1/cluster"""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from core.errors import TooLarge
from core.images import decode_images, model_to_uint8
from core.png import png_header
from core.inputs import RANGE_HINT, RANGES, parse_range

from ..deps import PoolDep, SettingsDep
from ..encoding import Part, b64png, load_array, parse_multipart
from ..errors import ApiError
from ..params import flag
from ..schemas import ClusterResponse, ErrorBody

router = APIRouter(tags=["inference"])

ARRAY_TYPES = ("application/octet-stream", "application/x-npy", "application/x-npz", "application/npy")

OPENAPI = {
    "parameters": [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "version", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "return_latent", "in": "query", "required": False, "schema": {"type": "boolean", "default": False}},
        {"name": "return_reconstruction", "in": "query", "required": False,
         "schema": {"type": "boolean", "default": False},
         "description": "g(h1(x)) per image as a base64 PNG (alias: reconstruct)"},
        {"name": "input_range", "in": "query", "required": False,
         "schema": {"type": "string", "enum": sorted(RANGES)},
         "description": "Pixel range of a float .npy/.npz upload (required for float arrays: " + RANGE_HINT + ")"},
    ],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "PNG/JPEG/... images (any size or colour), or one .npy/.npz batch"},
            "return_latent": {"type": "boolean"}, "return_reconstruction": {"type": "boolean"},
            "input_range": {"type": "string", "enum": sorted(RANGES)}}},
            "example": {"files": ["three.png", "five.png"], "return_reconstruction": True}},
        "application/x-npy": {"schema": {"type": "string", "format": "binary"},
                              "example": "<np.save of uint8 [N,28,28], or float32 [N,1,28,28] with ?input_range=0-1>"},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "example": "<.npy or .npz (key 'x') bytes>"},
    }},
}


def _is_array_upload(p: Part) -> bool:
    name = (p.filename or "").lower()
    return name.endswith((".npy", ".npz")) or (p.content_type or "").split(";")[0].strip().lower() in ARRAY_TYPES


@router.post("/v1/cluster", response_model=ClusterResponse, openapi_extra=OPENAPI, responses={
    400: {"model": ErrorBody, "description": "corrupt/empty image, bad array, or a float array without input_range"},
    404: {"model": ErrorBody},
    413: {"model": ErrorBody, "description": "body over the upload cap or too many images"},
    415: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="Cluster images: mode, label, probabilities, out-of-distribution score and flag; optionally latent "
            "h1(x) and reconstruction g(h1(x))")
async def cluster(request: Request, pool: PoolDep, settings: SettingsDep):
    """Images are PNG/JPEG (any size or colour: converted and resized as the model's manifest says) or one
    .npy/.npz batch: uint8 pixels 0..255, or floats with `input_range` stated (0-1, 0-255 or -1-1; a float
    array without it is refused, 400). What the model expects (range, polarity, size) is in
    `GET /v1/models/{name}` under `input`.

    Every result carries `ood_score` (0 = a typical training image; larger = less like the training data)
    and `ood` (score above the model's threshold, calibrated at export to flag `ood.fpr` of held-out
    training images, 5% by default): a confident label on an image flagged `ood` is not to be trusted.
    """
    # Served by service/fastpath.py (a pure-ASGI handler in front of the router); this route documents the
    # endpoint in OpenAPI and serves it when the fast path is bypassed.
    return await handle_cluster(pool, settings, request.query_params, request.headers.get("content-type") or "",
                                await request.body())


async def handle_cluster(pool, settings, q, content_type: str, body: bytes) -> Response:
    """The whole endpoint on an already-read body (the caller enforces the upload cap)."""
    rt = await pool.get(q.get("model") or None, q.get("version") or None)
    want_latent = flag(q.get("return_latent"), "return_latent")
    want_recon = flag(q.get("return_reconstruction"), "return_reconstruction") or flag(q.get("reconstruct"),
                                                                                          "reconstruct")
    in_range = _range(q.get("input_range"))
    ctype = content_type.split(";")[0].strip().lower()
    spec = rt.image
    if ctype == "multipart/form-data":
        try:
            parts = parse_multipart(body, content_type, max_parts=settings.max_images + 100)
        except TooLarge:
            raise ApiError(413, f"too many files: the cap is {settings.max_images} images a request") from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        uploads = [p for p in parts if p.is_file]
        fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if not p.is_file}
        want_latent = want_latent or flag(fields.get("return_latent"), "return_latent")
        want_recon = (want_recon or flag(fields.get("return_reconstruction"), "return_reconstruction")
                      or flag(fields.get("reconstruct"), "reconstruct"))
        in_range = in_range or _range(fields.get("input_range"))
        if not uploads:
            raise ApiError(400, "no files in the multipart body (send images or one .npy/.npz as files)")
        if len(uploads) > settings.max_images:
            raise ApiError(413, f"too many images: cap is {settings.max_images}")
        arrays = [u for u in uploads if _is_array_upload(u)]
        if arrays:
            if len(uploads) != 1:
                raise ApiError(400, "send either images or exactly one .npy/.npz file")
            x = await _array(arrays[0].data, spec, in_range, settings.max_images)
        else:
            x = [u.data for u in uploads]  # small PNGs stay encoded: decoded in the batch thread
            if want_recon or not _small_pngs(x, spec):  # (the reconstruction error needs the pixels here)
                x = await _images(x, spec)
    elif ctype in ARRAY_TYPES:
        x = await _array(body, spec, in_range, settings.max_images)
    else:
        raise ApiError(415, f"unsupported content type {ctype or '(none)'}: use multipart/form-data with image "
                            "files, or a .npy/.npz body as application/octet-stream or application/x-npy")
    if len(x) == 0:
        raise ApiError(400, "no images in the upload")
    if len(x) > settings.max_images:
        raise ApiError(413, f"too many images: {len(x)} > cap {settings.max_images}")

    async with rt.lease():
        # score (OOD) and probs (softmax) are computed in the batch thread, and small PNGs decoded there
        if isinstance(x, list):
            try:
                z, logits, score, probs = await rt.infer("h", x, len(x), partial(decode_images, spec=spec))
            except TooLarge as e:
                raise ApiError(413, str(e)) from None
            except ValueError as e:  # a corrupt image (decode_images names it)
                raise ApiError(400, str(e)) from None
        else:
            z, logits, score, probs = await rt.infer("h", x)
        recon = await rt.infer("g", z) if want_recon else None
    rt.count_clustered(len(z))
    modes = probs.argmax(1).tolist()
    labels = rt.mode_labels
    ood = rt.ood
    if ood is not None:
        scores, flags = score.tolist(), (score > ood.threshold).tolist()
    if want_recon:
        mse = ((recon - x) ** 2).reshape(len(x), -1).mean(1).tolist()
        recon_u8 = model_to_uint8(recon)
    results = []
    for i, m in enumerate(modes):
        item = {"index": i, "mode": m, "label": labels[m], "probabilities": probs[i]}
        if ood is not None:
            item["ood_score"], item["ood"] = scores[i], flags[i]
        if want_latent:
            item["latent"] = z[i]
        if want_recon:
            item["reconstruction"] = b64png(recon_u8[i])
            item["reconstruction_mse"] = mse[i]
        results.append(item)
    body = {"model": rt.name, "version": rt.version, "mode_labels": labels, "results": results,
            "ood": None if ood is None else {"threshold": ood.threshold, "fpr": ood.fpr,
                                             "components": list(ood.components)}}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=rt.headers)


async def _array(data: bytes, spec, in_range, max_rows: int) -> np.ndarray:
    """A plain .npy is a view of the body (inline); anything else unpacks, off the event loop, after its
    declared shapes were checked against max_rows (core/npy.py)."""
    try:
        if data[:6] == b"\x93NUMPY" and len(data) < 1 << 20:
            return load_array(data, spec, input_range=in_range, max_rows=max_rows)
        return await asyncio.to_thread(load_array, data, spec, input_range=in_range, max_rows=max_rows)
    except TooLarge as e:
        raise ApiError(413, str(e)) from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def _range(value):
    try:
        return parse_range(value)
    except ValueError as e:
        raise ApiError(422, str(e)) from None


def _small_pngs(blobs: list[bytes], spec) -> bool:
    """PNGs whose headers declare at most 4x the model's pixels: cheap to decode in the batch thread (larger
    images are decoded in a thread of their own, so they never hold up the other requests of a batch)."""
    cap = 4 * spec.width * spec.height
    for b in blobs:
        size = png_header(b)
        if size is None or size[0] * size[1] > cap:
            return False
    return True


async def _images(blobs: list[bytes], spec) -> np.ndarray:
    """Decoded off the event loop: even a small PNG may declare a large image (its size is checked from the
    header first, core.images.MAX_PIXELS -> 413)."""
    try:
        return await asyncio.to_thread(decode_images, blobs, spec)
    except TooLarge as e:
        raise ApiError(413, str(e)) from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None
