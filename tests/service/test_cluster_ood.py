"""/v1/cluster on strange images: stated float ranges, the OOD score and flag, the input declaration."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from svc_helpers import npy_bytes

NPY = {"content-type": "application/x-npy"}


@pytest.fixture
def train_imgs(tiny_model_dir):
    """uint8 [N,28,28] images of the tiny model's own (dry-run) training distribution."""
    from core.manifest import load_manifest
    from training.calibrate import training_images

    return training_images(load_manifest(tiny_model_dir).data)[:16, 0]


def test_float_input_is_refused_without_a_stated_range(client, train_imgs):
    x01 = train_imgs.astype(np.float32) / 255
    for path in ("/v1/cluster", "/v1/cluster?return_latent=1"):
        r = client.post(path, content=npy_bytes(x01), headers=NPY)
        assert r.status_code == 400, r.text
        assert "input_range" in r.json()["error"] and "0-1" in r.json()["error"]
    r = client.post("/v1/cluster", files=[("files", ("x.npy", npy_bytes(x01), "application/octet-stream"))])
    assert r.status_code == 400 and "input_range" in r.json()["error"]


@pytest.mark.parametrize("rng,scale,offset", [("0-1", 1 / 255, 0), ("0-255", 1.0, 0), ("-1-1", 1 / 127.5, -1)])
def test_float_input_with_its_range_matches_uint8(client, train_imgs, rng, scale, offset):
    want = client.post("/v1/cluster?return_latent=1", content=npy_bytes(train_imgs), headers=NPY).json()["results"]
    xf = train_imgs.astype(np.float32) * np.float32(scale) + np.float32(offset)
    r = client.post(f"/v1/cluster?return_latent=1&input_range={rng}", content=npy_bytes(xf), headers=NPY)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [g["mode"] for g in got] == [w["mode"] for w in want]
    np.testing.assert_allclose([g["latent"] for g in got], [w["latent"] for w in want], atol=1e-3)
    # the same as a form field of a multipart upload
    r = client.post("/v1/cluster", files=[("files", ("x.npy", npy_bytes(xf), "application/octet-stream"))],
                    data={"input_range": rng})
    assert r.status_code == 200 and [g["mode"] for g in r.json()["results"]] == [w["mode"] for w in want]


def test_stated_range_is_checked(client, train_imgs):
    xf = train_imgs.astype(np.float32)  # 0..255 values
    r = client.post("/v1/cluster?input_range=0-1", content=npy_bytes(xf), headers=NPY)
    assert r.status_code == 400 and "outside the stated input_range" in r.json()["error"]
    r = client.post("/v1/cluster?input_range=0-100", content=npy_bytes(xf), headers=NPY)
    assert r.status_code == 422 and "input_range must be one of" in r.json()["error"]


def test_every_result_has_an_ood_score_and_noise_is_flagged(client, train_imgs):
    r = client.post("/v1/cluster", content=npy_bytes(train_imgs), headers=NPY)
    assert r.status_code == 200
    body = r.json()
    # the export default: the latent distance and the image's energy outside the training images' principal components
    assert body["ood"]["fpr"] == 0.05 and body["ood"]["components"] == ["latent_mahalanobis", "pixel_pca"]
    ins = body["results"]
    assert all(isinstance(x["ood_score"], float) and isinstance(x["ood"], bool) for x in ins)
    assert np.mean([x["ood"] for x in ins]) <= 0.25  # in-distribution: ~5% flagged
    noise = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    outs = client.post("/v1/cluster", content=npy_bytes(noise), headers=NPY).json()["results"]
    assert np.mean([x["ood"] for x in outs]) >= 0.9
    assert np.median([x["ood_score"] for x in outs]) > np.median([x["ood_score"] for x in ins])
    # the same scores whatever the batch they are computed in (per-row, vectorised in the batch thread)
    one = client.post("/v1/cluster", content=npy_bytes(noise[:1]), headers=NPY).json()["results"][0]
    assert one["ood_score"] == pytest.approx(outs[0]["ood_score"], rel=1e-4, abs=1e-4)


def test_reconstruct_alias_returns_png(client, train_imgs):
    r = client.post("/v1/cluster?reconstruct=true", content=npy_bytes(train_imgs[:2]), headers=NPY)
    item = r.json()["results"][0]
    assert Image.open(io.BytesIO(base64.b64decode(item["reconstruction"]))).size == (28, 28)
    assert item["reconstruction_mse"] >= 0 and "ood" in item


def test_model_metadata_declares_input_and_ood(client):
    m = client.get("/v1/models/tiny").json()
    assert m["input"]["dtype"] == "uint8" and m["input"]["range"] == [0, 255]
    assert m["input"]["polarity"] == "white-on-black" and m["input"]["height"] == 28
    assert m["ood"]["fpr"] == 0.05 and "threshold" in m["ood"] and "file" not in m["ood"]
    assert client.get("/v1/models").json()[0]["input"]["channels"] == 1
    doc = client.get("/openapi.json").json()
    params = {p["name"] for p in doc["paths"]["/v1/cluster"]["post"]["parameters"]}
    assert {"input_range", "return_reconstruction"} <= params
    assert "ood_score" in doc["components"]["schemas"]["ClusterItem"]["properties"]


def test_uncalibrated_model_answers_without_ood_fields(make_client, settings, tiny_model_dir, tmp_path, train_imgs):
    import json
    import shutil

    from core.manifest import write_manifest

    d = tmp_path / "old" / "tiny"
    shutil.copytree(tiny_model_dir, d)
    data = json.loads((d / "manifest.json").read_text())
    del data["ood"], data["input"]
    (d / "ood.npz").unlink()
    write_manifest(d, data)
    c = make_client(settings.model_copy(update={"model_dirs": [d]}))
    body = c.post("/v1/cluster", content=npy_bytes(train_imgs[:3]), headers=NPY).json()
    assert body["ood"] is None and "ood_score" not in body["results"][0]


def _png(im: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(im).save(b, "PNG")
    return b.getvalue()


def test_pixel_pca_scores_clustered_pngs_as_the_calibration_does(client, tiny_model_dir, train_imgs):
    """The default score (latent distance + pixel_pca) of PNG uploads: the service's figure is the one the
    calibration computes from the same image, latent and logits; strange images score higher."""
    from core.images import U8_TO_MODEL
    from core.manifest import load_manifest
    from core.ood import PIXEL_PCA, OodCalibration
    from training.calibrate import Networks

    cal = OodCalibration.load(load_manifest(tiny_model_dir).data["ood"], tiny_model_dir)
    assert PIXEL_PCA in cal.components and cal.pca_basis.shape[0] == 28 * 28 and not cal.needs_reconstruction
    noise = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    imgs = np.concatenate([train_imgs[:4], noise])
    r = client.post("/v1/cluster", files=[("files", (f"{i}.png", _png(im), "image/png")) for i, im in enumerate(imgs)])
    assert r.status_code == 200, r.text
    got = [x["ood_score"] for x in r.json()["results"]]
    x = U8_TO_MODEL[imgs[:, None]]
    z, logits = Networks(tiny_model_dir).h(x)
    np.testing.assert_allclose(got, cal.score(z, logits, x), rtol=1e-3, atol=1e-3)
    assert min(got[4:]) > max(got[:4])


def test_serving_runs_numpy_blas_on_one_thread(client):
    """ORT owns the cores: the batch thread's matmuls (pixel_pca) on OpenBLAS's own threads fought it
    (benchmarks/ood_cost.py: PNG /v1/cluster at about half the throughput)."""
    from threadpoolctl import threadpool_info

    assert client.get("/v1/models").status_code == 200
    assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")


def test_latent_only_calibration_still_serves(make_client, settings, tiny_model_dir, tmp_path, train_imgs):
    """A model calibrated before pixel_pca (latent_mahalanobis only; ood.npz without the basis) loads and
    scores with the latent distance alone."""
    import json
    import shutil

    from core import ood
    from core.manifest import load_manifest, write_manifest

    d = tmp_path / "old" / "tiny"
    shutil.copytree(tiny_model_dir, d)
    data = json.loads((d / "manifest.json").read_text())
    full = ood.OodCalibration.load(data["ood"], d)
    np.savez(d / "ood.npz", means=full.means, whiten=full.whiten)  # the old file format
    for key in ("log_mean", "log_std"):
        data["ood"][key] = {ood.LATENT: data["ood"][key][ood.LATENT]}
    data["ood"]["components"] = [ood.LATENT]
    write_manifest(d, data)
    c = make_client(settings.model_copy(update={"model_dirs": [d]}))
    body = c.post("/v1/cluster?return_latent=1", content=npy_bytes(train_imgs[:6]), headers=NPY).json()
    assert body["ood"]["components"] == [ood.LATENT]
    cal = ood.OodCalibration.load(load_manifest(d).data["ood"], d)
    z = np.array([x["latent"] for x in body["results"]], np.float32)
    modes = [x["mode"] for x in body["results"]]
    want = (np.log(ood.latent_mahalanobis(z, np.array(modes), cal.means, cal.whiten)) - cal.log_mean[ood.LATENT]) \
        / cal.log_std[ood.LATENT]
    np.testing.assert_allclose([x["ood_score"] for x in body["results"]], want, rtol=1e-3, atol=1e-3)
