"""POST /v1/generate through the real app (TestClient runs the lifespan: ONNX sessions, warm-up)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image


def test_json_format_modes_and_headers(client):
    r = client.post("/v1/generate", json={"n": 5, "seed": 3, "format": "json"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny" and body["version"] == "1" and body["n"] == 5 and body["seed"] == 3
    assert len(body["images"]) == 5 and len(body["modes"]) == 5
    assert r.headers["x-nemgan-model"] == "tiny" and r.headers["x-nemgan-version"] == "1"
    assert r.headers["x-nemgan-modes"] == ",".join(map(str, body["modes"]))
    import base64

    im = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert im.size == (28, 28)


@pytest.mark.parametrize("fmt", ["png", "grid", "npz", "json"])
def test_same_seed_identical_bytes(client, fmt):
    req = {"n": 3, "seed": 11, "format": fmt, "sigma": 0.7}
    a, b = client.post("/v1/generate", json=req), client.post("/v1/generate", json=req)
    assert a.status_code == 200 and a.content == b.content
    c = client.post("/v1/generate", json={**req, "seed": 12})
    assert c.content != a.content


def test_formats(client):
    r = client.post("/v1/generate", json={"n": 1, "seed": 1, "format": "png"})
    assert r.headers["content-type"] == "image/png" and Image.open(io.BytesIO(r.content)).size == (28, 28)
    r = client.post("/v1/generate", json={"n": 3, "seed": 1, "format": "png"})
    assert r.headers["content-type"] == "application/zip"
    assert len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 3
    r = client.post("/v1/generate", json={"n": 4, "seed": 1, "format": "grid"})
    assert Image.open(io.BytesIO(r.content)).size == (2 * 30 + 2, 2 * 30 + 2)
    r = client.post("/v1/generate", json={"n": 4, "seed": 1, "format": "npz"})
    f = np.load(io.BytesIO(r.content))
    assert f["images"].shape == (4, 1, 28, 28) and f["images"].dtype == np.uint8 and f["modes"].shape == (4,)


def test_mode_by_index_and_label_and_version(client):
    r = client.post("/v1/generate", json={"n": 3, "mode": 4, "seed": 0, "format": "npz"})
    assert np.load(io.BytesIO(r.content))["modes"].tolist() == [4, 4, 4]
    r2 = client.post("/v1/generate", json={"n": 3, "mode": "4", "seed": 0, "format": "npz", "model": "tiny",
                                           "version": "1"})
    assert r2.content == r.content
    r3 = client.post("/v1/generate", json={"n": 2, "seed": 0, "sigma": 0, "mode": 2, "format": "npz", "version": 1})
    imgs = np.load(io.BytesIO(r3.content))["images"]
    np.testing.assert_array_equal(imgs[0], imgs[1])  # sigma 0 = the mode centre


@pytest.mark.parametrize("body,status", [
    ({"n": 0}, 422), ({"n": 65}, 422), ({"n": -1}, 422), ({"n": "3"}, 422), ({"n": 1.5}, 422),
    ({"sigma": -0.1}, 422), ({"sigma": "big"}, 422), ({"mode": 10}, 422), ({"mode": -1}, 422),
    ({"mode": "cat"}, 422), ({"mode": True}, 422), ({"mode": [1]}, 422), ({"seed": -5}, 422), ({"seed": "x"}, 422),
    ({"format": "gif"}, 422), ({"extra": 1}, 422), ({"model": "nope"}, 404), ({"version": "99"}, 404),
    ({"version": "../1"}, 404), ({"model": 3}, 422),
])
def test_bad_json_inputs(client, body, status):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == status, r.text
    assert "error" in r.json() and "Traceback" not in r.text


@pytest.mark.parametrize("raw", [b'{"n": 2, "sigma": NaN}', b'{"n": 2, "sigma": Infinity}',
                                 b'{"n": 2, "sigma": -Infinity}', b"{not json", b"", b"[]", b"null", b'"x"'])
def test_bad_raw_bodies(client, raw):
    r = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "error" in r.json()


def test_body_over_cap_is_413(client):
    big = b'{"n": 1, "pad": "' + b"x" * 300_000 + b'"}'
    r = client.post("/v1/generate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()

    def chunks():  # no Content-Length: the streamed size is what trips the cap
        for _ in range(30):
            yield b"x" * 10_000

    r = client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()
