"""The OIP v2 extensions tritonclient calls besides infer (model repository index, model configuration,
inference statistics), against a real server with the shipped models, with NVIDIA's `tritonclient[http]`."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from svc_helpers import REPO, served

httpclient = pytest.importorskip("tritonclient.http", reason="the dev extra installs tritonclient[http]")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODELS = [REPO / "models" / "mnist", REPO / "models" / "fashion-mnist"]
NETS = ("g", "h", "h1", "h2")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with served(tmp_path_factory.mktemp("oipx"), MODELS, NEMGAN_MAX_IMAGES="64") as s:
        yield s


@pytest.fixture(scope="module")
def triton(srv):
    c = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
    yield c
    c.close()


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def test_server_lists_the_extensions(triton):
    ext = triton.get_server_metadata()["extensions"]
    assert {"binary_tensor_data", "model_repository", "model_configuration", "statistics"} <= set(ext)


def test_repository_index(triton, srv):
    index = triton.get_model_repository_index()
    want = {(f"{m}-{n}", "1") for m in ("mnist", "fashion-mnist") for n in NETS}
    assert {(e["name"], e["version"]) for e in index} == want
    assert all(e["state"] == "READY" for e in index)
    # the protocol's optional filter, and a body that is not one
    assert len(httpx.post(srv.url + "/v2/repository/index", json={"ready": True}).json()) == len(want)
    r = httpx.post(srv.url + "/v2/repository/index", json={"ready": "yes"})
    assert r.status_code == 400 and "ready" in r.json()["error"]


def test_model_config(triton):
    h = triton.get_model_config("mnist-h")
    assert h["name"] == "mnist-h" and h["platform"] == "onnxruntime_onnx" and h["max_batch_size"] == 64
    assert h["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}]
    assert [o["name"] for o in h["output"]] == ["z", "logits", "ood_score"]
    assert h["output"][1]["dims"] == [10] and h["output"][2]["reshape"] == {"shape": []}
    assert h["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert h["instance_group"][0]["kind"] == "KIND_CPU"
    g = triton.get_model_config("mnist-g", "1")
    dim = triton.get_model_metadata("mnist-g")["inputs"][0]["shape"][1]
    assert g["input"] == [{"name": "z", "data_type": "TYPE_FP32", "dims": [dim]}] and g["max_batch_size"] == 1024
    assert triton.get_model_config("fashion-mnist-h2")["output"][0]["name"] == "logits"
    for bad in ("nope-h", "mnist-x", "-h"):
        with pytest.raises(InferenceServerException, match="unknown model"):
            triton.get_model_config(bad)
    with pytest.raises(InferenceServerException):
        triton.get_model_config("mnist-h", "9")


def test_inference_statistics_count_every_route(triton, srv):
    before = triton.get_inference_statistics("mnist-h")["model_stats"]
    assert [s["version"] for s in before] == ["1"]
    b0 = before[0]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 28, 28)).astype(np.float32)
    for _ in range(2):  # 2 OIP requests of 3 rows
        t = httpclient.InferInput("x", list(x.shape), "FP32")
        t.set_data_from_numpy(x, binary_data=True)
        triton.infer("mnist-h", [t])
    # one /v1/cluster request of 2 images through the same h batcher, and one whose PNG fails to decode there
    digits = [_png(np.full((28, 28), v, np.uint8)) for v in (0, 255)]
    assert httpx.post(srv.url + "/v1/cluster", files=[("files", (f"{i}.png", d)) for i, d in enumerate(digits)]
                      ).status_code == 200
    broken = digits[0][:40] + b"\x00" * 20 + digits[0][60:]  # header intact, image data corrupt
    assert httpx.post(srv.url + "/v1/cluster", files=[("files", ("b.png", broken))]).status_code == 400
    s = triton.get_inference_statistics("mnist-h", "1")["model_stats"][0]
    st, bt = s["inference_stats"], b0["inference_stats"]
    assert s["name"] == "mnist-h" and s["version"] == "1"
    assert st["success"]["count"] - bt["success"]["count"] == 3
    assert st["fail"]["count"] - bt["fail"]["count"] == 1
    assert s["inference_count"] - b0["inference_count"] == 3 + 3 + 2  # rows the network ran (not the broken one)
    assert 1 <= s["execution_count"] - b0["execution_count"] <= 4
    assert st["queue"]["count"] - bt["queue"]["count"] == 4
    assert st["compute_infer"]["ns"] > bt["compute_infer"]["ns"] and st["success"]["ns"] > bt["success"]["ns"]
    assert s["last_inference"] > 0
    assert sum(b["compute_infer"]["count"] for b in s["batch_stats"]) == s["execution_count"]
    # every loaded network, including ones never called
    every = triton.get_inference_statistics()["model_stats"]
    names = {m["name"] for m in every}
    assert {f"{m}-{n}" for m in ("mnist", "fashion-mnist") for n in NETS} <= names
    g = next(m for m in every if m["name"] == "fashion-mnist-h1")
    assert g["execution_count"] == 0 and g["inference_stats"]["success"]["count"] == 0
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.get_inference_statistics("nope-g")
