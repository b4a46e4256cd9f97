"""Issue 10 fault 6, the rest: a crashed export's .staging/ is cleaned, a read-only registry answers 503 on
activate/rollback, text/plain on /v1/generate is 415 and too many files are 413, as the docs say."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from svc_helpers import REPO, Server, base_env, free_port

from service.jobs.reaper import sweep
from service.jobs.store import JobStore
from service.registry import Registry


def png() -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(b, "PNG")
    return b.getvalue()


@pytest.mark.parametrize("fast_path", [True, False])
def test_generate_wrong_content_type_is_415(make_client, settings, fast_path):
    c = make_client(settings.model_copy(update={"fast_path": fast_path}))
    r = c.post("/v1/generate", content=b'{"n": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"], r.text
    assert c.post("/v1/generate", json={"n": 1}).status_code == 200
    assert c.post("/v1/generate", json={"n": "x"}).status_code == 422  # a bad JSON body stays a 422


@pytest.mark.parametrize("fast_path", [True, False])
def test_too_many_files_is_413(make_client, settings, fast_path):
    c = make_client(settings.model_copy(update={"fast_path": fast_path, "max_upload_bytes": 8 << 20}))
    one = png()
    r = c.post("/v1/cluster", files=[("files", (f"{i}.png", one, "image/png")) for i in range(1000)])
    assert r.status_code == 413 and "too many" in r.json()["error"], r.text


def test_staging_of_a_crashed_export_is_cleaned(tmp_path):
    """A worker killed while exporting leaves <registry>/<name>/.staging/<job>: the reaper's pass (at worker and
    API start, then periodically) removes it once that job is not running, and stale non-job leftovers."""
    store, reg = JobStore(tmp_path / "jobs"), Registry(tmp_path / "registry")
    crashed, running = store.new_id(), store.new_id()
    for j in (crashed, running):
        store.create(j, {})
        store.mark_queued(j)
    store.start(running, stale_after=30)
    store.update(crashed, state="failed")
    for key in (crashed, running, "manual-old", "manual-new"):
        d = reg.staging_dir("tiny", key)
        d.mkdir()
        (d / "g.onnx").write_bytes(b"x" * 1000)
    old = time.time() - 7200
    os.utime(reg.staging_dir("tiny", "manual-old"), (old, old))
    sweep(store, lambda j: None, stale_after=30, retention=3600, registry=reg)
    left = sorted(p.name for p in (tmp_path / "registry" / "tiny" / ".staging").iterdir())
    assert left == sorted([running, "manual-new"]), left


@pytest.mark.slow
def test_read_only_registry_activate_and_rollback_are_503(tmp_path, tiny_model_dir):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount the registry read-only")
    reg_dir = tmp_path / "registry"
    reg = Registry(reg_dir)
    reg.seed(tiny_model_dir)
    staging = reg.staging_dir("tiny", "v2")
    shutil.copytree(tiny_model_dir, staging)
    reg.publish("tiny", staging, activate=True)  # versions 1, 2; history 1 -> 2
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {reg_dir} {reg_dir}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here (needs CAP_SYS_ADMIN): {probe.stderr.decode()[:200]}")
    port = free_port()
    env = base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_REGISTRY_DIR=reg_dir)
    cmd = (f"mount --bind {reg_dir} {reg_dir} && mount -o remount,ro,bind {reg_dir} && exec {sys.executable} -m "
           f"uvicorn --factory service.app:create_app --host 127.0.0.1 --port {port} --log-level warning")
    srv = Server.__new__(Server)
    srv.port, srv.url, srv.log, srv.t0 = port, f"http://127.0.0.1:{port}", tmp_path / "api.log", time.perf_counter()
    srv.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", cmd], cwd=REPO, env=env,
                                stdout=open(srv.log, "wb"), stderr=subprocess.STDOUT)
    try:
        srv.wait_ready()
        for path in ("/v1/models/tiny/versions/1/activate", "/v1/models/tiny/rollback"):
            r = httpx.post(srv.url + path, timeout=10)
            assert r.status_code == 503 and "read-only" in r.json()["error"], (path, r.text)
            assert r.headers.get("retry-after") and str(reg_dir) not in r.json()["error"]
        assert httpx.post(srv.url + "/v1/generate", json={"n": 1}, timeout=10).headers["x-nemgan-version"] == "2"
    finally:
        srv.stop()
