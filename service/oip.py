"""Open Inference Protocol (KServe v2) tensors over HTTP: JSON tensors and the binary tensor data extension.

A request body is a JSON object, optionally followed by raw tensor bytes; the `Inference-Header-Content-Length`
header then says how long the JSON part is. Each input carries its data either in JSON (`data`: a flat or
nested row-major list) or as `parameters.binary_data_size` bytes taken, in input order, from what follows the
JSON (little-endian, row-major, no padding). Outputs come back the same way: in JSON, or binary when the
request asks (`outputs[i].parameters.binary_data`, or `parameters.binary_data_output` for all of them).

ValueError (-> 400) for anything malformed, with a message that says what. numpy + orjson only.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

HEADER_LENGTH = "inference-header-content-length"

# OIP datatype <-> numpy (little-endian, as the binary extension requires). BYTES is not a tensor we serve.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_BY_KIND = {(v.kind, v.itemsize): k for k, v in DATATYPES.items()}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    # requested outputs: name -> binary?; None = every output, binary if `binary_data_output`
    outputs: dict[str, bool] | None
    binary_output: bool


def decompress(body: bytes, encoding: str | None, cap: int) -> bytes:
    """A gzip / deflate request body (tritonclient's request_compression_algorithm), at most `cap` bytes out."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "deflate"):
        raise ValueError(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, cap + 1)
    except zlib.error as e:
        raise ValueError(f"cannot decompress the {enc} body: {e}") from None
    if len(out) > cap or d.unconsumed_tail:
        raise OverflowError(f"decompressed body exceeds the cap of {cap} bytes")
    return out


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ValueError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise ValueError(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = orjson.loads(head)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"the inference request is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise ValueError("the inference request must be a JSON object")
    params = _params(req, "request")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ValueError("the inference request needs a non-empty list 'inputs'")
    inputs, off = {}, 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ValueError(f"inputs[{i}] must be an object with a string 'name'")
        name = t["name"]
        if name in inputs:
            raise ValueError(f"input {name!r} is given twice")
        shape, dtype = _shape(t, name), _dtype(t, name)
        count = math.prod(shape)
        size = _params(t, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"input {name!r}: binary_data_size must be a non-negative integer")
            if size != count * dtype.itemsize:
                raise ValueError(f"input {name!r}: binary_data_size {size} != {count} elements of {t['datatype']} "
                                 f"({count * dtype.itemsize} bytes) for shape {shape}")
            if off + size > len(binary):
                raise ValueError(f"input {name!r}: the body holds {len(binary) - off} binary bytes, {size} needed")
            arr = np.frombuffer(binary[off:off + size], dtype).reshape(shape)
            off += size
        elif "data" in t:
            try:
                arr = np.asarray(t["data"], dtype=dtype)
            except (ValueError, TypeError, OverflowError) as e:
                raise ValueError(f"input {name!r}: data is not a list of {t['datatype']} values: {e}") from None
            if arr.size != count:
                raise ValueError(f"input {name!r}: {arr.size} values for shape {shape} ({count} needed)")
            arr = arr.reshape(shape)
        else:
            raise ValueError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        inputs[name] = arr
    if off != len(binary):
        raise ValueError(f"{len(binary) - off} bytes after the JSON header belong to no input")
    outputs = None
    if "outputs" in req:
        if not isinstance(req["outputs"], list):
            raise ValueError("'outputs' must be a list")
        outputs = {}
        for i, o in enumerate(req["outputs"]):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ValueError(f"outputs[{i}] must be an object with a string 'name'")
            outputs[o["name"]] = _bool(_params(o, f"output {o['name']!r}"), "binary_data", f"output {o['name']!r}")
    rid = req.get("id")
    return InferRequest(None if rid is None else str(rid), inputs, outputs,
                        _bool(params, "binary_data_output", "request"))


def encode_response(model: str, version: str, rid: str | None, outputs: list[tuple[str, np.ndarray, bool]]
                    ) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when all outputs are JSON). outputs: (name, array, binary?)."""
    tensors, blobs = [], []
    for name, arr, binary in outputs:
        arr = np.ascontiguousarray(arr)
        t = {"name": name, "datatype": datatype(arr.dtype), "shape": list(arr.shape)}
        if binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            t["data"] = arr.reshape(-1)
        tensors.append(t)
    body = {"model_name": model, "model_version": version, "outputs": tensors}
    if rid is not None:
        body["id"] = rid
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def datatype(dtype: np.dtype) -> str:
    d = np.dtype(dtype)
    try:
        return _BY_KIND[(d.kind, d.itemsize)]
    except KeyError:
        raise ValueError(f"no OIP datatype for {d}") from None


def _params(obj: dict, where: str) -> dict:
    p = obj.get("parameters", {})
    if not isinstance(p, dict):
        raise ValueError(f"{where}: 'parameters' must be an object")
    return p


def _bool(params: dict, key: str, where: str) -> bool:
    """A boolean parameter: JSON true/false only (a string "false" is not false)."""
    v = params.get(key, False)
    if not isinstance(v, bool):
        raise ValueError(f"{where}: parameters.{key} must be true or false, got {v!r}")
    return v


def _shape(t: dict, name: str) -> list[int]:
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return shape


def _dtype(t: dict, name: str) -> np.dtype:
    dt = t.get("datatype")
    if dt not in DATATYPES:
        raise ValueError(f"input {name!r}: unsupported datatype {dt!r} (one of {sorted(DATATYPES)})")
    return DATATYPES[dt]
