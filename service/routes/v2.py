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
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import oip
from ..deps import PoolDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..runtime import BATCH_WORKERS
from ..schemas import ErrorBody
from ..stats import EMPTY

router = APIRouter(tags=["open inference protocol v2"])
NETWORKS = ("g", "h", "h1", "h2")
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]
ERR = {400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
META_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist-h", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
    "outputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 50]},
                {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "ood_score", "datatype": "FP32", "shape": [-1]}]}}}}}
SERVER_EX = {200: {"content": {"application/json": {"example": {
    "name": "nemgan", "version": "0.1.0", "extensions": EXTENSIONS}}}}}
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
    return {"name": "nemgan", "version": v, "extensions": EXTENSIONS}


# ------------------------------------------------------------------ extensions: model repository, configuration,
# statistics (what tritonclient's get_model_repository_index, get_model_config and get_inference_statistics call)
def _loaded(pool) -> list:
    """Every loaded runtime: the active versions, then the others kept loaded."""
    out = list(pool.active.values())
    out += [rt for rt in pool.others.values() if rt not in out]
    return out


def _stats(rt, net: str) -> dict:
    return rt.stats.get(net, EMPTY).oip(f"{rt.name}-{net}", rt.version)


@router.post("/v2/repository/index", summary="OIP model repository index", responses={200: {"content": {
    "application/json": {"example": [{"name": "mnist-g", "version": "1", "state": "READY"},
                                     {"name": "mnist-g", "version": "2", "state": "UNAVAILABLE",
                                      "reason": "not loaded: loads on the first request naming this version"}]}}}})
async def repository_index(request: Request, pool: PoolDep, registry: RegistryDep):
    """Every network of every version in the registry, as OIP models `<model>-<network>`: READY when loaded,
    else UNAVAILABLE with the reason. Body (optional): `{"ready": true}` lists the READY ones only."""
    body = await request.body()
    ready_only = False
    if body.strip():
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from None
        if not isinstance(req, dict) or not isinstance(req.get("ready", False), bool):
            raise ApiError(400, 'the body is optional; when sent: {"ready": true|false}')
        ready_only = req.get("ready", False)
    loaded = {(rt.name, rt.version) for rt in _loaded(pool)}
    failed = getattr(pool, "failed", {})
    out = []
    for name in registry.names():
        for version in registry.versions(name):
            ready = (name, version) in loaded
            if ready_only and not ready:
                continue
            for net in NETWORKS:
                item = {"name": f"{name}-{net}", "version": version, "state": "READY" if ready else "UNAVAILABLE"}
                if not ready:
                    why = failed.get((name, version))
                    item["reason"] = (f"cannot be served: {why[1]}" if why else
                                      "not loaded: loads on the first request naming this version")
                out.append(item)
    return out


STATS_EX = {200: {"content": {"application/json": {"example": {"model_stats": [
    {"name": "mnist-h", "version": "1", "last_inference": 1733472000000, "inference_count": 256,
     "execution_count": 4, "inference_stats": {"success": {"count": 32, "ns": 81000000},
                                               "fail": {"count": 0, "ns": 0}, "queue": {"count": 32, "ns": 9000000},
                                               "compute_infer": {"count": 4, "ns": 60000000}},
     "batch_stats": [{"batch_size": 64, "compute_infer": {"count": 4, "ns": 60000000}}]}]}}}}}
CONFIG_EX = {200: {"content": {"application/json": {"example": {
    "name": "mnist-h", "platform": "onnxruntime_onnx", "backend": "onnxruntime", "max_batch_size": 256,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}],
    "output": [{"name": "z", "data_type": "TYPE_FP32", "dims": [50]},
               {"name": "logits", "data_type": "TYPE_FP32", "dims": [10]},
               {"name": "ood_score", "data_type": "TYPE_FP32", "dims": [1], "reshape": {"shape": []}}],
    "dynamic_batching": {"max_queue_delay_microseconds": 2000}}}}}}


@router.get("/v2/models/stats", summary="OIP inference statistics of every loaded model", responses=STATS_EX)
async def all_stats(pool: PoolDep):
    return {"model_stats": [_stats(rt, net) for rt in _loaded(pool) for net in NETWORKS]}


@router.get("/v2/models/{model}/stats", summary="OIP inference statistics (every loaded version)",
            responses={**ERR, **STATS_EX})
@router.get("/v2/models/{model}/versions/{version}/stats", summary="OIP inference statistics",
            responses={**ERR, **STATS_EX})
async def model_stats(model: str, pool: PoolDep, version: str | None = None):
    """Counts of every request through the network's batcher (/v1 and /v2 alike) since the version was loaded:
    success/fail, queue and compute time in ns, per batch size (service/stats.py)."""
    base, net = _split(model)
    if version is None:
        rts = [rt for rt in _loaded(pool) if rt.name == base]
        if not rts:
            rts = [(await pool.get(base, None))]  # 404 for an unknown model
    else:
        rts = [await pool.get(base, version)]
    return {"model_stats": [_stats(rt, net) for rt in rts]}


@router.get("/v2/models/{model}/config", summary="OIP model configuration (active version)",
            responses={**ERR, **CONFIG_EX})
@router.get("/v2/models/{model}/versions/{version}/config", summary="OIP model configuration",
            responses={**ERR, **CONFIG_EX})
async def model_config(model: str, pool: PoolDep, settings: SettingsDep, version: str | None = None):
    """The network as a Triton model configuration: tensors without the batch axis, the request's row cap as
    max_batch_size, the dynamic batcher's settings, the execution provider as the instance kind."""
    rt, net = await _runtime(pool, model, version)
    inputs, outputs = _io(rt, net)

    def tensor(t: dict) -> dict:
        dims = t["shape"][1:]
        out = {"name": t["name"], "data_type": "TYPE_" + t["datatype"], "dims": dims or [1]}
        if not dims:
            out["reshape"] = {"shape": []}
        return out

    cap = settings.max_n if inputs[0]["name"] == "z" else settings.max_images
    cuda = any(p.startswith("CUDA") for p in rt.providers)
    config = {
        "name": model, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [int(rt.version) if rt.version.isdigit() else rt.version]}},
        "max_batch_size": cap, "input": [tensor(t) for t in inputs], "output": [tensor(t) for t in outputs],
        "instance_group": [{"name": f"{model}_0", "kind": "KIND_GPU" if cuda else "KIND_CPU",
                            "count": BATCH_WORKERS}],
        "parameters": {"nemgan_model": {"string_value": rt.name}, "nemgan_network": {"string_value": net},
                       "nemgan_version": {"string_value": rt.version}},
    }
    if settings.batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(settings.max_wait_ms * 1000),
                                      "default_queue_policy": {"max_queue_size": settings.max_queue},
                                      "preferred_batch_size": [settings.max_batch_size]}
    return config


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
