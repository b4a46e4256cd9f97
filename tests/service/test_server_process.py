"""Real uvicorn subprocesses: cold start, dynamic batching across concurrent requests, SIGTERM drain; and
the API process never importing torch."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading

import httpx
import numpy as np

from svc_helpers import REPO, Server, base_env, metric, npy_bytes, wait_for


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_are_batched(tmp_path, tiny_model_dir):
    srv = Server(base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_MAX_WAIT_MS="50"), tmp_path / "api.log")
    try:
        cold = srv.wait_ready()
        assert cold < 15
        x = (np.random.default_rng(0).random((8, 28, 28)) * 255).astype(np.uint8)

        async def main():
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
                rs = await asyncio.gather(*(c.post("/v1/cluster", content=npy_bytes(x),
                                                   headers={"content-type": "application/x-npy"}) for _ in range(16)))
                assert all(r.status_code == 200 for r in rs)
                return (await c.get("/metrics")).text

        m = asyncio.run(main())
        calls = _metric(m, "nemgan_batch_size_count", model="tiny", network="h")
        rows = _metric(m, "nemgan_batch_size_sum", model="tiny", network="h")
        assert rows == 8 * 16  # every row of every request went through the batcher, once
        assert calls < 16, f"{calls} ONNX calls for 16 requests: not batched"
        assert _metric(m, "nemgan_queue_wait_seconds_count", model="tiny", network="h") == 16
        assert _metric(m, "nemgan_images_clustered_total", model="tiny") == 128
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful exit


def test_sigterm_finishes_inflight_requests(tmp_path, tiny_model_dir):
    # a 4 s batching window keeps a request in flight long enough to send SIGTERM during it
    srv = Server(base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_MAX_WAIT_MS="4000",
                          NEMGAN_ADAPTIVE_WAIT="false"), tmp_path / "api.log")
    srv.wait_ready()
    results = []

    def call():
        r = httpx.post(srv.url + "/v1/generate", json={"n": 4, "seed": 1}, timeout=30)
        results.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: (metric(srv.url, "nemgan_queue_depth", model="tiny", network="g") or 0) >= 3,
             what="the 3 requests waiting in the batcher")
    srv.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            httpx.post(srv.url + "/v1/generate", json={"n": 1}, timeout=2)
        except httpx.HTTPError:
            return True
        return False

    wait_for(refused, timeout=10, what="no new connections once draining")
    for t in threads:
        t.join(30)
    assert results == [200, 200, 200]
    assert srv.proc.wait(30) in (0, -signal.SIGTERM)


NO_TORCH = r"""
import io, sys
import cli
assert not {"fastapi", "celery", "onnxruntime", "torch"} & set(sys.modules), "the nemgan CLI is not light"
import numpy as np
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings())) as c:
    assert c.post("/v1/generate", json={"n": 2, "format": "png"}).status_code == 200
    b = io.BytesIO(); np.save(b, np.zeros((2, 28, 28), np.uint8))
    assert c.post("/v1/cluster?return_reconstruction=1", content=b.getvalue(),
                  headers={"content-type": "application/x-npy"}).status_code == 200
    b = io.BytesIO(); np.savez(b, x=np.zeros((4, 28, 28), np.uint8), y=np.arange(4))
    r = c.post("/v1/priors/learn", files={"labeled": ("l.npz", b.getvalue())})
    assert r.status_code == 202, r.text
    assert c.get(r.headers["location"]).status_code == 200
    assert c.get("/v1/models/tiny").status_code == 200 and c.get("/metrics").status_code == 200
assert "torch" not in sys.modules, "the API process imported torch"
print("NO_TORCH_OK")
"""


def test_api_process_never_imports_torch(tmp_path, tiny_model_dir):
    env = base_env(tmp_path / "var", [tiny_model_dir])
    out = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert "NO_TORCH_OK" in out.stdout, out.stdout + out.stderr
