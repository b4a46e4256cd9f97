"""A colour model served end to end: a 32x32 RGB model exported from a short dry run, through the real app
(generate PNG / grid / npz, cluster a colour upload with its OOD score and reconstruction, OIP v2 shapes, the
playground's model list), and `nemgan sample` on it."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from svc_helpers import npy_bytes


@pytest.fixture
def rgb_client(make_client, tmp_path, tiny_rgb_model_dir):
    from service.settings import Settings

    return make_client(Settings(var_dir=tmp_path / "var", model_dirs=[tiny_rgb_model_dir], intra_op_threads=1,
                                max_n=64, max_images=16, max_upload_bytes=400_000, worker_metrics_port=0))


def png(a: np.ndarray, fmt="PNG") -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, format=fmt)
    return b.getvalue()


def test_generate_colour_png_grid_npz(rgb_client):
    r = rgb_client.post("/v1/generate", json={"n": 1, "seed": 1, "format": "png"})
    assert r.status_code == 200, r.text
    im = Image.open(io.BytesIO(r.content))
    assert im.mode == "RGB" and im.size == (32, 32)
    r = rgb_client.post("/v1/generate", json={"n": 4, "seed": 1, "format": "grid"})
    grid = Image.open(io.BytesIO(r.content))
    assert grid.mode == "RGB" and grid.size == (2 * 34 + 2, 2 * 34 + 2)
    r = rgb_client.post("/v1/generate", json={"n": 3, "seed": 1, "format": "npz", "mode": 2})
    f = np.load(io.BytesIO(r.content))
    assert f["images"].shape == (3, 3, 32, 32) and f["images"].dtype == np.uint8 and f["modes"].tolist() == [2] * 3
    # the PNG is the npz's first image, channel for channel
    one = rgb_client.post("/v1/generate", json={"n": 1, "seed": 5, "format": "png"}).content
    arr = np.load(io.BytesIO(rgb_client.post("/v1/generate", json={"n": 1, "seed": 5, "format": "npz"}).content))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(one))).transpose(2, 0, 1), arr["images"][0])
    body = rgb_client.post("/v1/generate", json={"n": 2, "seed": 1, "format": "json"}).json()
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).mode == "RGB"


def test_cluster_colour_uploads(rgb_client):
    rng = np.random.default_rng(0)
    colour = (rng.random((50, 40, 3)) * 255).astype(np.uint8)  # another size: resized as the manifest says
    files = [("files", ("a.png", png(colour), "image/png")),
             ("files", ("b.jpg", png(colour, "JPEG"), "image/jpeg")),
             ("files", ("c.png", png(colour[..., 0]), "image/png"))]  # a grey upload becomes RGB
    r = rgb_client.post("/v1/cluster?return_reconstruction=true&return_latent=true", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-rgb" and len(body["results"]) == 3 and body["ood"] is not None
    for item in body["results"]:
        assert 0 <= item["mode"] < 4 and abs(sum(item["probabilities"]) - 1) < 1e-4
        assert np.isfinite(item["ood_score"]) and isinstance(item["ood"], bool) and len(item["latent"]) == 50
        rec = Image.open(io.BytesIO(base64.b64decode(item["reconstruction"])))
        assert rec.mode == "RGB" and rec.size == (32, 32)
    # a uint8 array upload in either layout gives what the same pixels as PNG give
    u8 = (rng.random((2, 32, 32, 3)) * 255).astype(np.uint8)
    a = rgb_client.post("/v1/cluster", content=npy_bytes(u8), headers={"content-type": "application/x-npy"})
    b = rgb_client.post("/v1/cluster", content=npy_bytes(u8.transpose(0, 3, 1, 2)),
                        headers={"content-type": "application/x-npy"})
    c = rgb_client.post("/v1/cluster", files=[("files", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(u8)])
    assert a.status_code == b.status_code == c.status_code == 200, (a.text, b.text, c.text)
    pa, pb, pc = ([it["probabilities"] for it in r.json()["results"]] for r in (a, b, c))
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    np.testing.assert_allclose(pa, pc, atol=1e-5)
    grey = np.zeros((2, 32, 32), np.uint8)  # a grey array does not fit a colour model: 400 naming the shape
    r = rgb_client.post("/v1/cluster", content=npy_bytes(grey), headers={"content-type": "application/x-npy"})
    assert r.status_code == 400 and "3,32,32" in r.text.replace(" ", "")


def test_oip_v2_shapes(rgb_client):
    meta = rgb_client.get("/v2/models/tiny-rgb-h").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    g = rgb_client.get("/v2/models/tiny-rgb-g").json()
    assert g["outputs"][0]["shape"] == [-1, 3, 32, 32]
    z = np.zeros((2, 50), np.float32)
    r = rgb_client.post("/v2/models/tiny-rgb-g/infer", json={"inputs": [
        {"name": "z", "shape": [2, 50], "datatype": "FP32", "data": z.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 3, 32, 32] and len(out["data"]) == 2 * 3 * 32 * 32
    x = np.asarray(out["data"], np.float32).reshape(2, 3, 32, 32)
    r = rgb_client.post("/v2/models/tiny-rgb-h/infer", json={"inputs": [
        {"name": "x", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["logits"]["shape"] == [2, 4] and outs["z"]["shape"] == [2, 50]
    r = rgb_client.post("/v2/models/tiny-rgb-h/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1024}]})
    assert r.status_code == 400


def test_playground_lists_the_colour_model(rgb_client):
    """The page draws what /v1/models, /v1/models/{name}, /v1/generate and /v1/cluster return (tested above)."""
    assert rgb_client.get("/").status_code == 200
    assert [m["name"] for m in rgb_client.get("/v1/models").json()] == ["tiny-rgb"]
    detail = json.dumps(rgb_client.get("/v1/models/tiny-rgb").json())
    assert '"channels": 3' in detail and '"height": 32' in detail


def test_nemgan_sample_colour(tiny_rgb_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["sample", str(tiny_rgb_model_dir), "--out", str(tmp_path / "s.npz"), "--n", "5",
                                   "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npz")["images"].shape == (5, 3, 32, 32)
    res = CliRunner().invoke(app, ["sample", str(tiny_rgb_model_dir), "--out", str(tmp_path / "g.png"),
                                   "--mode", "all", "--n", "3"])
    assert res.exit_code == 0, res.output
    g = Image.open(tmp_path / "g.png")
    assert g.mode == "RGB" and g.size == (3 * 34 + 2, 4 * 34 + 2)  # one row per mode
