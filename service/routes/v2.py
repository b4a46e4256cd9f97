"""Open Inference Protocol v2 (KServe / Triton HTTP): server and model metadata, readiness, infer.

Each network of each model is an OIP model named `{model}-{network}` (e.g. `mnist-g`, `mnist-h`):

    g    z [-1, D] FP32                 -> x [-1, C, H, W] FP32 in [-1, 1]
    h    x [-1, C, H, W] FP32 in [-1,1] -> z [-1, D], logits [-1, K], ood_score [-1] (when calibrated)
    h1   x                              -> z
    h2   z                              -> logits

Requests go through the same dynamic batchers as /v1 (so they batch with /v1 traffic and show up in the same
nemgan_* metrics), with JSON tensors or the binary tensor data extension (service/oip.py). Errors are OIP's
`{"error": "..."}`: 400 bad request, 404 unknown model/version, 413 too large, 503 busy. The health paths
`/v2/health/live|ready` are in routes/health.py.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import oip
from ..deps import PoolDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..schemas import ErrorBody

router = APIRouter(tags=["open inference protocol v2"])
NETWORKS = ("g", "h", "h1", "h2")
ERR = {400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
META_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist-h", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
    "outputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 50]},
                {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "ood_score", "datatype": "FP32", "shape": [-1]}]}}}}}
SERVER_EX = {200: {"content": {"application/json": {"example": {
    "name": "nemgan", "version": "0.1.0", "extensions": ["binary_tensor_data"]}}}}}
READY_EX = {200: {"content": {"application/json": {"example": {"name": "mnist-h", "version": "1", "ready": True}}}}}
INFER_EX = {200: {"content": {"application/json": {"example": {
    "id": "1", "model_name": "mnist-g", "model_version": "1",
    "outputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [-1.0, "..."]}]}}}}}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}, "example": {
        "id": "1", "inputs": [{"name": "z", "shape": [1, 50], "datatype": "FP32", "data": [0.0] * 50}],
        "outputs": [{"name": "x"}]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "example": "<JSON header (Inference-Header-Content-Length bytes) + raw tensors>"}}}}


def _split(model: str) -> tuple[str, str]:
    base, sep, net = model.rpartition("-")
    if not sep or not base or net not in NETWORKS:  # "-g" names no model (not the default one)
        raise ApiError(404, f"unknown model {model!r}: OIP models are '<model>-<network>' with network one of "
                            f"{list(NETWORKS)}, e.g. 'mnist-h'")
    return base, net


def _io(rt, net: str) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) tensor metadata of one network, from the model's manifest."""
    im, d, k = rt.image, rt.spec.dim, rt.spec.n_modes
    x = {"name": "x", "datatype": "FP32", "shape": [-1, im.channels, im.height, im.width]}
    z = {"name": "z", "datatype": "FP32", "shape": [-1, d]}
    logits = {"name": "logits", "datatype": "FP32", "shape": [-1, k]}
    if net == "g":
        return [z], [x]
    if net == "h1":
        return [x], [z]
    if net == "h2":
        return [z], [logits]
    outs = [z, logits] + ([{"name": "ood_score", "datatype": "FP32", "shape": [-1]}] if rt.ood is not None else [])
    return [x], outs


async def _runtime(pool, model: str, version: str | None):
    base, net = _split(model)
    return await pool.get(base, version), net


@router.get("/v2", summary="OIP server metadata", responses=SERVER_EX)
async def server_metadata():
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("nemgan")
    except PackageNotFoundError:
        v = "unknown"
    return {"name": "nemgan", "version": v, "extensions": ["binary_tensor_data"]}


@router.get("/v2/models/{model}", summary="OIP model metadata (active version)", responses={**ERR, **META_EX})
@router.get("/v2/models/{model}/versions/{version}", summary="OIP model metadata", responses={**ERR, **META_EX})
async def model_metadata(model: str, pool: PoolDep, registry: RegistryDep, version: str | None = None):
    rt, net = await _runtime(pool, model, version)
    inputs, outputs = _io(rt, net)
    return {"name": model, "versions": registry.versions(rt.name), "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs}


@router.get("/v2/models/{model}/ready", summary="OIP model readiness", responses={**ERR, **READY_EX})
@router.get("/v2/models/{model}/versions/{version}/ready", summary="OIP model readiness", responses={**ERR, **READY_EX})
async def model_ready(model: str, pool: PoolDep, version: str | None = None):
    rt, _ = await _runtime(pool, model, version)
    if rt.retired:
        raise ApiError(503, f"{model} version {rt.version} is being unloaded", headers={"Retry-After": "1"})
    return {"name": model, "version": rt.version, "ready": True}


@router.post("/v2/models/{model}/infer", summary="OIP inference (active version)", openapi_extra=INFER_BODY,
             responses={**ERR, **INFER_EX, 413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
@router.post("/v2/models/{model}/versions/{version}/infer", summary="OIP inference", openapi_extra=INFER_BODY,
             responses={**ERR, **INFER_EX, 413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def infer(model: str, request: Request, pool: PoolDep, settings: SettingsDep, version: str | None = None):
    rt, net = await _runtime(pool, model, version)
    body = await request.body()
    try:
        body = oip.decompress(body, request.headers.get("content-encoding"), settings.max_upload_bytes)
        req = oip.parse_request(body, request.headers.get(oip.HEADER_LENGTH))
    except OverflowError as e:
        raise ApiError(413, str(e)) from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    inputs, outputs = _io(rt, net)
    spec = inputs[0]
    if set(req.inputs) != {spec["name"]}:
        raise ApiError(400, f"{model} takes one input {spec['name']!r} ({spec['datatype']} {spec['shape']}), "
                            f"got {sorted(req.inputs)}")
    x = req.inputs[spec["name"]]
    if x.dtype != oip.DATATYPES[spec["datatype"]] or x.ndim != len(spec["shape"]) or \
            list(x.shape[1:]) != spec["shape"][1:]:
        raise ApiError(400, f"input {spec['name']!r} of {model} must be {spec['datatype']} {spec['shape']} "
                            f"(-1: any batch size), got {oip.datatype(x.dtype)} {list(x.shape)}")
    cap = settings.max_n if spec["name"] == "z" else settings.max_images
    if not 1 <= len(x) <= cap:
        raise ApiError(413 if len(x) > cap else 400, f"batch size {len(x)} outside 1..{cap}")
    if not np.all(np.isfinite(x)):
        raise ApiError(400, f"input {spec['name']!r} contains NaN or infinite values")
    names = [o["name"] for o in outputs]
    wanted = req.outputs if req.outputs is not None else {n: req.binary_output for n in names}
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ApiError(400, f"unknown outputs {unknown} of {model} (it has {names})")
    x = np.ascontiguousarray(x)
    async with rt.lease():
        out = await rt.infer(net, x)
    values = dict(zip(names, out if isinstance(out, tuple) else (out,)))
    bad = [n for n in wanted if not np.isfinite(values[n]).all()]
    if bad:  # finite inputs this large overflow FP32 inside the network: an answer of NaN/inf is no answer
        raise ApiError(400, f"input {spec['name']!r} gives non-finite values in {model}'s output {bad} (FP32 "
                            f"overflow): its values are far outside what the network was trained on"
                            + (" (x: pixels in [-1, 1])" if spec["name"] == "x" else ""))
    (rt.count_generated if net == "g" else rt.count_clustered)(len(x))
    body, head = oip.encode_response(model, rt.version, req.id, [(n, values[n], b) for n, b in wanted.items()])
    if head is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(head)})
