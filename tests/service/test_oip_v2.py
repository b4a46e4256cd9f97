"""Open Inference Protocol v2 against a real uvicorn server, with NVIDIA's own `tritonclient[http]` client."""

from __future__ import annotations

import gzip
import json
import signal

import httpx
import numpy as np
import pytest
from svc_helpers import Server, base_env, npy_bytes

httpclient = pytest.importorskip("tritonclient.http", reason="the dev extra installs tritonclient[http]")
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("oip")
    srv = Server(base_env(d / "var", [tiny_model_dir]), d / "api.log")
    srv.wait_ready()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def triton(server):
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def onnx(tiny_model_dir):
    from training.calibrate import Networks

    return Networks(tiny_model_dir)


def _input(name, arr, binary):
    t = httpclient.InferInput(name, list(arr.shape), "FP32")
    t.set_data_from_numpy(arr, binary_data=binary)
    return t


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    m = triton.get_model_metadata("tiny-h")
    assert m["name"] == "tiny-h" and m["versions"] == ["1"] and m["platform"] == "onnxruntime_onnx"
    assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert [o["name"] for o in m["outputs"]] == ["z", "logits", "ood_score"]
    g = triton.get_model_metadata("tiny-g", "1")
    assert g["inputs"][0]["shape"] == [-1, 50] and g["outputs"][0]["name"] == "x"
    assert triton.is_model_ready("tiny-g") and triton.is_model_ready("tiny-h1", "1")
    assert not triton.is_model_ready("tiny-x") and not triton.is_model_ready("nope-g")
    assert not triton.is_model_ready("tiny-g", "9")
    with pytest.raises(InferenceServerException, match="unknown model") as e:
        triton.get_model_metadata("nope-h")
    assert e.value.status() == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_g_and_h_match_onnx_runtime(triton, onnx, binary):
    z = np.random.default_rng(0).standard_normal((5, 50)).astype(np.float32)
    outs = [httpclient.InferRequestedOutput("x", binary_data=binary)]
    r = triton.infer("tiny-g", [_input("z", z, binary)], outputs=outs, request_id="r1")
    x = r.as_numpy("x")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x, onnx.g(z), atol=1e-5)
    assert r.get_response()["id"] == "r1" and r.get_response()["model_version"] == "1"
    r = triton.infer("tiny-h", [_input("x", x, binary)], model_version="1")  # no outputs named: all, binary
    z2, logits = onnx.h(x)
    np.testing.assert_allclose(r.as_numpy("z"), z2, atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("logits"), logits, atol=1e-5)
    assert r.as_numpy("ood_score").shape == (5,)
    h1 = triton.infer("tiny-h1", [_input("x", x, binary)]).as_numpy("z")
    np.testing.assert_allclose(h1, z2, atol=1e-5)
    h2 = triton.infer("tiny-h2", [_input("z", h1, binary)]).as_numpy("logits")
    np.testing.assert_allclose(h2, logits, atol=1e-5)


def test_ood_score_is_the_one_v1_cluster_gives(server, triton):
    u8 = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    v1 = httpx.post(server.url + "/v1/cluster", content=npy_bytes(u8), headers={"content-type": "application/x-npy"})
    x = (u8[:, None].astype(np.float32) / 127.5 - 1).astype(np.float32)
    r = triton.infer("tiny-h", [_input("x", x, True)], outputs=[httpclient.InferRequestedOutput("ood_score")])
    np.testing.assert_allclose(r.as_numpy("ood_score"), [i["ood_score"] for i in v1.json()["results"]], rtol=1e-4)


def test_compressed_request(triton, onnx):
    z = np.zeros((2, 50), np.float32)
    r = triton.infer("tiny-g", [_input("z", z, True)], request_compression_algorithm="gzip")
    np.testing.assert_allclose(r.as_numpy("x"), onnx.g(z), atol=1e-5)


@pytest.mark.parametrize("shape,msg", [([2, 1, 27, 28], "must be FP32 \\[-1, 1, 28, 28\\]"),
                                       ([2, 28, 28], "must be FP32"), ([0, 1, 28, 28], "batch size 0")])
def test_bad_shape_is_400(triton, shape, msg):
    x = np.zeros(shape, np.float32)
    with pytest.raises(InferenceServerException, match=msg) as e:
        triton.infer("tiny-h", [_input("x", x, True)])
    assert e.value.status() == "400"


def test_wrong_input_name_and_unknown_output(triton):
    with pytest.raises(InferenceServerException, match="takes one input 'z'") as e:
        triton.infer("tiny-g", [_input("x", np.zeros((1, 50), np.float32), False)])
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown outputs") as e:
        triton.infer("tiny-g", [_input("z", np.zeros((1, 50), np.float32), False)],
                     outputs=[httpclient.InferRequestedOutput("logits")])
    assert e.value.status() == "400"


def _binary(head: dict, tail: bytes) -> tuple[bytes, dict]:
    """A binary-extension body: JSON header + raw bytes, and the header saying where the JSON ends."""
    h = json.dumps(head).encode()
    return h + tail, {"Inference-Header-Content-Length": str(len(h))}


RAW_BAD = [
    ("not json", b"{", {}, "not valid JSON"),
    ("no inputs", b'{"inputs": []}', {}, "non-empty list 'inputs'"),
    ("bad datatype", json.dumps({"inputs": [{"name": "z", "shape": [1, 50], "datatype": "BYTES", "data": []}]}).encode(),
     {}, "unsupported datatype"),
    ("too few values", json.dumps({"inputs": [{"name": "z", "shape": [1, 50], "datatype": "FP32", "data": [1.0]}]}).encode(),
     {}, "1 values for shape"),
    ("strings as data", json.dumps({"inputs": [{"name": "z", "shape": [1, 1], "datatype": "FP32", "data": ["a"]}]}).encode(),
     {}, "not a list of FP32"),
    ("binary size mismatch", *_binary(
        {"inputs": [{"name": "z", "shape": [1, 50], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
        b"\0" * 8), "binary_data_size 8"),
    ("binary data missing", *_binary(
        {"inputs": [{"name": "z", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
        b"\0" * 4), "4 binary bytes, 8 needed"),
    ("trailing bytes", *_binary({"inputs": [{"name": "z", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}, b"xyz"),
     "belong to no input"),
    ("bad header length", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "outside the body"),
    ("nan", *_binary({"inputs": [{"name": "z", "shape": [1, 50], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 200}}]},
                     np.full(50, np.nan, np.float32).tobytes()), "NaN"),
    ("bad encoding", b"{}", {"Content-Encoding": "br"}, "Content-Encoding"),
]


@pytest.mark.parametrize("name,body,headers,msg", RAW_BAD, ids=[b[0] for b in RAW_BAD])
def test_malformed_requests_are_400_with_an_oip_error(server, name, body, headers, msg):
    r = httpx.post(server.url + "/v2/models/tiny-g/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and msg in r.json()["error"]


def test_gzip_bomb_is_413(server):
    body = gzip.compress(b"{" + b" " * 40_000_000 + b"}")
    r = httpx.post(server.url + "/v2/models/tiny-g/infer", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "cap" in r.json()["error"]


def test_v2_requests_share_the_batcher_metrics(server, triton):
    triton.infer("tiny-g", [_input("z", np.zeros((3, 50), np.float32), True)])
    m = httpx.get(server.url + "/metrics").text
    lines = [l for l in m.splitlines() if l.startswith("nemgan_batch_size_count{") and 'network="g"' in l]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 1
    assert 'route="/v2/models/{model}/infer"' in m
