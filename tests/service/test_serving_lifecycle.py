"""What a deployment does to a running service: serve the shipped models/, hot-swap the active version while
requests are in flight, evict old versions while a request still uses one. Real uvicorn processes."""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from svc_helpers import REPO, Server, base_env, metric, wait_for

from service.registry import Registry
from service.runtime import MAX_LOADED_VERSIONS

SHIPPED = sorted(p for p in (REPO / "models").iterdir() if (p / "manifest.json").is_file())


def publish_copies(registry_dir, tiny_model_dir, n: int) -> list[str]:
    """Versions 2..n+1 of the tiny model (copies), none activated."""
    reg = Registry(registry_dir)
    reg.seed(tiny_model_dir)
    out = []
    for i in range(n):
        staging = reg.staging_dir("tiny", f"copy{i}")
        shutil.copytree(tiny_model_dir, staging)
        out.append(reg.publish("tiny", staging, activate=False)[0])
    return out


def test_serves_the_shipped_models(tmp_path):
    """models/ as shipped: both load, and the MNIST model's generated digits come back as their own mode."""
    assert {p.name for p in SHIPPED} >= {"mnist", "fashion-mnist"}
    srv = Server(base_env(tmp_path / "var", SHIPPED), tmp_path / "api.log")
    try:
        srv.wait_ready(60)
        models = {m["name"]: m for m in httpx.get(f"{srv.url}/v1/models").json()}
        assert set(models) >= {"mnist", "fashion-mnist"}
        ok, total = 0, 0
        for mode in range(10):
            g = httpx.post(f"{srv.url}/v1/generate", json={"model": "mnist", "mode": mode, "n": 16, "seed": mode,
                                                             "format": "npz"}, timeout=30)
            assert g.status_code == 200, g.text
            imgs = np.load(io.BytesIO(g.content))["images"]
            b = io.BytesIO()
            np.save(b, imgs)
            c = httpx.post(f"{srv.url}/v1/cluster?model=mnist", content=b.getvalue(),
                           headers={"content-type": "application/x-npy"}, timeout=30)
            assert c.status_code == 200, c.text
            labels = [r["label"] for r in c.json()["results"]]
            ok += sum(label == models["mnist"]["mode_labels"][mode] for label in labels)
            total += len(labels)
        print(f"\nshipped mnist: {ok}/{total} generated images clustered back to their mode")
        assert ok / total >= 0.9
        f = httpx.post(f"{srv.url}/v1/generate", json={"model": "fashion-mnist", "n": 4, "format": "png"}, timeout=30)
        assert f.status_code == 200 and f.headers["content-type"] == "application/zip"
    finally:
        srv.stop()


@pytest.mark.slow
def test_hot_swap_with_requests_in_flight(tmp_path, tiny_model_dir):
    """Requests held in the batcher (a 4 s window: room on a busy machine; the test waits for the queue depth,
    not a guessed time) while v2 is activated: every one answers 200 from the
    version it started on; requests after the swap get v2; nothing fails."""
    var = tmp_path / "var"
    publish_copies(var / "registry", tiny_model_dir, 1)
    srv = Server(base_env(var, [tiny_model_dir], NEMGAN_MAX_WAIT_MS="4000", NEMGAN_ADAPTIVE_WAIT="false",
                          NEMGAN_POLL_INTERVAL_S="0.3"), tmp_path / "api.log")

    def gen(i):
        r = httpx.post(f"{srv.url}/v1/generate", json={"n": 4, "seed": i, "format": "npz"}, timeout=30)
        return r.status_code, r.headers.get("x-nemgan-version")

    try:
        srv.wait_ready()
        with ThreadPoolExecutor(8) as ex:
            before = [ex.submit(gen, i) for i in range(8)]
            wait_for(lambda: (metric(srv.url, "nemgan_queue_depth", model="tiny", network="g") or 0) >= 8,
                     what="8 requests waiting in version 1's batcher")
            a = httpx.post(f"{srv.url}/v1/models/tiny/versions/2/activate", timeout=30)
            assert a.status_code == 200 and a.json()["active_version"] == "2"
            after = [ex.submit(gen, 100 + i) for i in range(8)]
            before, after = [f.result() for f in before], [f.result() for f in after]
        assert before == [(200, "1")] * 8, before
        assert after == [(200, "2")] * 8, after
    finally:
        srv.stop()


@pytest.mark.slow
def test_version_eviction_keeps_a_bound_and_finishes_in_flight_requests(tmp_path, tiny_model_dir):
    var = tmp_path / "var"
    n = MAX_LOADED_VERSIONS + 2
    versions = publish_copies(var / "registry", tiny_model_dir, n)  # "2".."n+1"; "1" stays active
    srv = Server(base_env(var, [tiny_model_dir], NEMGAN_MAX_WAIT_MS="4000", NEMGAN_ADAPTIVE_WAIT="false"),
                 tmp_path / "api.log")

    def gen(v):
        r = httpx.post(f"{srv.url}/v1/generate", json={"n": 2, "version": v}, timeout=60)
        return r.status_code, r.headers.get("x-nemgan-version")

    try:
        srv.wait_ready()
        with ThreadPoolExecutor(n + 1) as ex:
            first = ex.submit(gen, versions[0])  # held in version 2's batcher for 4 s ...
            wait_for(lambda: (metric(srv.url, "nemgan_queue_depth", model="tiny", network="g") or 0) >= 1,
                     what="the request waiting in version 2's batcher")
            rest = [ex.submit(gen, v) for v in versions[1:]]  # ... while loading the others evicts version 2
            assert first.result() == (200, versions[0])
            assert [f.result() for f in rest] == [(200, v) for v in versions[1:]]
        detail = httpx.get(f"{srv.url}/v1/models/tiny").json()["details"]
        loaded = sorted((d["version"] for d in detail if d["loaded"]), key=int)
        assert len(loaded) == 1 + MAX_LOADED_VERSIONS and "1" in loaded, loaded
        assert versions[0] not in loaded  # the least recently used went first
        assert gen(versions[0]) == (200, versions[0])  # an evicted version loads again on demand
        log = (tmp_path / "api.log").read_text()
        assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
    finally:
        srv.stop()
