"""POST /v1/cluster: images (any size/colour), .npy/.npz batches, latent/reconstruction flags, bad inputs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from svc_helpers import npy_bytes


def png(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode).save(b, format=fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def imgs():
    rng = np.random.default_rng(0)
    return (rng.random((4, 28, 28)) * 255).astype(np.uint8)


def test_multipart_images_any_size_and_colour(client, imgs):
    files = [("files", ("a.png", png(imgs[0]), "image/png")),
             ("files", ("b.jpg", png(np.stack([imgs[1]] * 3, -1), fmt="JPEG"), "image/jpeg")),
             ("files", ("c.png", png(np.zeros((64, 40, 3), np.uint8)), "image/png"))]
    r = client.post("/v1/cluster", files=files)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 3 and r.json()["model"] == "tiny"
    for item in res:
        assert 0 <= item["mode"] < 10 and item["label"] == str(item["mode"])
        assert abs(sum(item["probabilities"]) - 1) < 1e-4 and "latent" not in item


def test_npy_raw_body_matches_png_and_flags(client, imgs):
    r1 = client.post("/v1/cluster?return_latent=true&return_reconstruction=1", content=npy_bytes(imgs),
                     headers={"content-type": "application/x-npy"})
    assert r1.status_code == 200, r1.text
    res = r1.json()["results"]
    assert len(res[0]["latent"]) == 50 and res[0]["reconstruction_mse"] >= 0
    assert Image.open(io.BytesIO(base64.b64decode(res[0]["reconstruction"]))).size == (28, 28)
    r2 = client.post("/v1/cluster", files=[("files", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(imgs)],
                     data={"return_latent": "true"})
    np.testing.assert_allclose([x["probabilities"] for x in r2.json()["results"]],
                               [x["probabilities"] for x in res], atol=1e-5)
    assert r2.json()["results"][0]["latent"] is not None


def test_npz_multipart_and_octet_stream(client, imgs):
    b = io.BytesIO()
    np.savez(b, x=imgs[:, None].astype(np.float32) / 127.5 - 1)
    r = client.post("/v1/cluster", files=[("files", ("batch.npz", b.getvalue(), "application/octet-stream"))],
                    data={"input_range": "-1-1"})
    assert r.status_code == 200 and len(r.json()["results"]) == 4
    r = client.post("/v1/cluster", content=npy_bytes(imgs[:, :, :, None]), headers={"content-type":
                                                                                     "application/octet-stream"})
    assert r.status_code == 200 and len(r.json()["results"]) == 4


BAD = [
    ("empty png", lambda i: {"files": [("files", ("a.png", b"", "image/png"))]}, 400),
    ("corrupt png", lambda i: {"files": [("files", ("a.png", b"\x89PNG\r\n\x1a\nxx", "image/png"))]}, 400),
    ("text as image", lambda i: {"files": [("files", ("a.png", b"hello", "image/png"))]}, 400),
    ("too many images", lambda i: {"files": [("files", (f"{k}.png", png(i[0]), "image/png")) for k in range(17)]}, 413),
    ("no files", lambda i: {"data": {"return_latent": "1"}, "files": [("x", ("", b"", "text/plain"))]}, 400),
    ("images and npy", lambda i: {"files": [("files", ("a.png", png(i[0]), "image/png")),
                                            ("files", ("b.npy", npy_bytes(i), "application/x-npy"))]}, 400),
    ("bad flag", lambda i: {"files": [("files", ("a.png", png(i[0]), "image/png"))], "data": {"return_latent": "maybe"}}, 422),
]


@pytest.mark.parametrize("name,kw,status", BAD, ids=[b[0] for b in BAD])
def test_bad_multipart(client, imgs, name, kw, status):
    r = client.post("/v1/cluster", **kw(imgs))
    assert r.status_code == status, r.text
    assert "error" in r.json() and "Traceback" not in r.text


BAD_ARRAYS = [
    ("wrong shape", np.zeros((2, 27, 28), np.uint8), 400),
    ("wrong channels", np.zeros((2, 3, 28, 28), np.uint8), 400),
    ("1-d", np.zeros(5, np.uint8), 400),
    ("float out of range", np.full((2, 28, 28), 7.0, np.float32), 400),
    ("nan", np.full((2, 28, 28), np.nan, np.float32), 400),
    ("negative ints", np.full((2, 28, 28), -3, np.int32), 400),
    ("strings", np.array(["a", "b"]), 400),
    ("empty", np.zeros((0, 28, 28), np.uint8), 400),
    ("over cap", np.zeros((17, 28, 28), np.uint8), 413),
]


@pytest.mark.parametrize("name,arr,status", BAD_ARRAYS, ids=[b[0] for b in BAD_ARRAYS])
def test_bad_arrays(client, name, arr, status):
    r = client.post("/v1/cluster", content=npy_bytes(arr), headers={"content-type": "application/x-npy"})
    assert r.status_code == status, r.text
    assert "error" in r.json()


@pytest.mark.parametrize("body,ctype,status", [
    (b"garbage", "application/x-npy", 400), (b"", "application/octet-stream", 400),
    (b"PK\x03\x04broken", "application/octet-stream", 400), (b"{}", "application/json", 415),
    (b"x", "text/plain", 415), (b"--b\r\nbroken", "multipart/form-data; boundary=b", 400),
])
def test_bad_bodies(client, body, ctype, status):
    r = client.post("/v1/cluster", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert "error" in r.json()


def test_object_array_refused(client):
    b = io.BytesIO()
    np.save(b, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = client.post("/v1/cluster", content=b.getvalue(), headers={"content-type": "application/x-npy"})
    assert r.status_code == 400 and "error" in r.json()


def test_unknown_model_version_and_upload_cap(client, imgs):
    r = client.post("/v1/cluster?model=nope", content=npy_bytes(imgs), headers={"content-type": "application/x-npy"})
    assert r.status_code == 404
    r = client.post("/v1/cluster?version=7", content=npy_bytes(imgs), headers={"content-type": "application/x-npy"})
    assert r.status_code == 404
    big = np.zeros((300, 28, 28), np.uint8)  # 235 kB > the 200 kB cap of the test settings
    r = client.post("/v1/cluster", content=npy_bytes(big), headers={"content-type": "application/x-npy"})
    assert r.status_code == 413 and "error" in r.json()
    r = client.post("/v1/cluster", files=[("files", ("b.npy", npy_bytes(big), "application/x-npy"))])
    assert r.status_code == 413
