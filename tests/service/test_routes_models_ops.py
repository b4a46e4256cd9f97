"""Models (list, versions, activate, rollback, hot swap by polling), auth, health, metrics, OpenAPI."""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest

from service.registry import Registry


def _second_version(settings, tiny_model_dir):
    """Publish a copy of the tiny model with other priors as version 2 (not active)."""
    from core.latent import LatentSpec
    from core.manifest import load_manifest, write_manifest

    reg = Registry(settings.registry)
    staging = reg.staging_dir("tiny", "manual")
    shutil.copytree(tiny_model_dir, staging)
    spec = LatentSpec.load(staging / "latent.npz")
    pri = np.zeros(10)
    pri[7] = 1.0
    spec.with_priors(pri).save(staging / "latent.npz")
    data = load_manifest(staging).data
    data["latent"]["priors"] = pri.tolist()
    write_manifest(staging, data)
    return reg.publish("tiny", staging, activate=False)


def test_models_activate_rollback(client, settings, tiny_model_dir):
    assert client.get("/v1/models").json()[0]["name"] == "tiny"
    assert _second_version(settings, tiny_model_dir) == ("2", True)
    d = client.get("/v1/models/tiny").json()
    assert d["versions"] == ["1", "2"] and d["active_version"] == "1"
    r = client.post("/v1/models/tiny/versions/2/activate")
    assert r.status_code == 200 and r.json()["active_version"] == "2"
    g = client.post("/v1/generate", json={"n": 20, "seed": 1, "format": "npz"})
    assert g.headers["x-nemgan-version"] == "2" and set(np.load(io.BytesIO(g.content))["modes"].tolist()) == {7}
    # an explicit old version is still served
    assert client.post("/v1/generate", json={"n": 1, "version": "1"}).headers["x-nemgan-version"] == "1"
    r = client.post("/v1/models/tiny/rollback")
    assert r.status_code == 200 and r.json()["active_version"] == "1"
    assert client.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "1"
    assert client.post("/v1/models/tiny/rollback").status_code == 409
    assert client.post("/v1/models/tiny/versions/9/activate").status_code == 404
    assert client.post("/v1/models/nope/versions/1/activate").status_code == 404
    assert client.post("/v1/models/nope/rollback").status_code == 404
    assert client.get("/v1/models/nope").status_code == 404
    m = client.get("/metrics").text
    assert 'nemgan_model_info{name="tiny",version="1"} 1.0' in m and 'version="2"' not in m.split("nemgan_model_info")[-1]


def test_replica_follows_active_pointer_by_polling(make_client, settings, tiny_model_dir):
    c = make_client(settings.model_copy(update={"poll_interval_s": 0.2}))
    _second_version(settings, tiny_model_dir)
    Registry(settings.registry).activate("tiny", "2")  # another replica / the worker did this
    for _ in range(50):
        if c.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "2":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the replica did not pick up the new active version")


def test_api_key_protects_mutations(make_client, settings):
    c = make_client(settings.model_copy(update={"api_key": "s3cret"}))
    for method, path in [("post", "/v1/models/tiny/versions/1/activate"), ("post", "/v1/models/tiny/rollback"),
                         ("delete", "/v1/jobs/" + "0" * 32), ("post", "/v1/jobs/" + "0" * 32 + "/cancel"),
                         ("post", "/v1/priors/learn")]:
        r = getattr(c, method)(path)
        assert r.status_code == 401 and "error" in r.json(), (path, r.text)
        r = getattr(c, method)(path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    r = c.post("/v1/models/tiny/versions/1/activate", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    assert c.post("/v1/generate", json={"n": 1}).status_code == 200  # reads stay open


def test_health_metrics_openapi(client):
    for p in ("/v2/health/live", "/healthz"):
        assert client.get(p).status_code == 200
    for p in ("/v2/health/ready", "/readyz"):
        assert client.get(p).json()["ready"] is True
    client.post("/v1/generate", json={"n": 3})
    client.post("/v1/generate", json={"n": 0})
    client.get("/v1/jobs/" + "a" * 32)
    client.get("/no/such/path")
    m = client.get("/metrics").text
    for name in ["nemgan_requests_total", "nemgan_request_duration_seconds_bucket", "nemgan_inference_duration_seconds",
                 "nemgan_batch_size", "nemgan_queue_depth", "nemgan_queue_wait_seconds", "nemgan_images_generated_total",
                 "nemgan_jobs", "nemgan_model_info", "nemgan_ready 1.0", "nemgan_rejected_requests_total",
                 "nemgan_images_clustered_total", "nemgan_job_duration_seconds"]:
        assert name in m, name
    assert 'route="/v1/jobs/{job_id}"' in m and "a" * 32 not in m and 'route="unmatched"' in m
    assert 'nemgan_inference_duration_seconds_count{model="tiny",network="g"}' in m
    assert 'nemgan_requests_total{method="POST",route="/v1/generate",status="422"}' in m
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            text = str(op)
            assert "example" in text, f"{method} {path} has no example"
