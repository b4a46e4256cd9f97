"""Prior-learning jobs: upload validation, the task as a plain function, the embedded (no Redis) mode and
Redis mode with real Celery worker subprocesses, cancellation, a worker killed mid-job."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from service.jobs.store import JobStore
from service.registry import Registry
from svc_helpers import Server, Worker, base_env, free_port, metric, wait_for

FAST = {"h_steps": "5", "alpha_steps": "20", "seed": "0"}


def labeled_zip(n_per: int = 2, classes=("0", "1", "2"), root: str = "set/") -> bytes:
    b = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(b, "w") as z:
        for c in classes:
            for i in range(n_per):
                im = io.BytesIO()
                Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(im, "PNG")
                z.writestr(f"{root}{c}/{i}.png", im.getvalue())
    return b.getvalue()


def labeled_npz(y=(0, 1, 2, 3), shape=(28, 28)) -> bytes:
    b = io.BytesIO()
    np.savez(b, x=np.zeros((len(y), *shape), np.uint8), y=np.asarray(y))
    return b.getvalue()


def submit(client, files=None, data=None, **kw):
    return client.post("/v1/priors/learn", files=files or {"labeled": ("l.zip", labeled_zip(), "application/zip")},
                       data={**FAST, **(data or {})}, **kw)


@pytest.mark.parametrize("files,data,status", [
    ({"labeled": ("l.zip", labeled_zip(classes=("0", "cat")), "application/zip")}, {}, 422),
    ({"labeled": ("l.zip", labeled_zip(classes=("0", "10")), "application/zip")}, {}, 422),
    ({"labeled": ("l.zip", b"PK\x03\x04junk", "application/zip")}, {}, 400),
    ({"labeled": ("l.zip", b"", "application/zip")}, {}, 400),
    ({"labeled": ("l.bin", b"hello", "application/octet-stream")}, {}, 400),
    ({"labeled": ("l.npz", labeled_npz(y=(0, 11)), "application/octet-stream")}, {}, 422),
    ({"labeled": ("l.npz", labeled_npz(y=(0, -1)), "application/octet-stream")}, {}, 422),
    ({"labeled": ("l.npz", labeled_npz(shape=(5, 5)), "application/octet-stream")}, {}, 400),
    ({"unlabeled": ("u.npy", b"x", "application/octet-stream")}, {}, 422),
    (None, {"method": "l3"}, 422), (None, {"h_steps": "many"}, 422), (None, {"alpha_steps": "0"}, 422),
    (None, {"seed": "-1"}, 422), (None, {"model": "nope"}, 404), (None, {"version": "42"}, 404),
    ({"labeled": ("l.zip", labeled_zip(), "application/zip"),
      "unlabeled": ("u.npy", b"\x93NUMPYbroken", "application/octet-stream")}, {}, 400),
])
def test_bad_learn_requests(client, files, data, status):
    r = submit(client, files=files, data=data)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert JobStore(client.app.state.settings.jobs).ids() == []


def test_learn_needs_multipart_and_job_404s(client):
    assert client.post("/v1/priors/learn", json={"x": 1}).status_code == 415
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs/" + "f" * 32).status_code == 404
    assert client.delete("/v1/jobs/" + "f" * 32).status_code == 404


def test_task_function_directly_publishes_once(client, settings):
    """202 + Location; the task (called as a plain function) publishes v2 and activates it; a second
    delivery of the same job publishes nothing new (idempotent)."""
    from service.jobs.tasks import run_learn_job

    r = submit(client, files={"labeled": ("l.npz", labeled_npz(y=(0, 1, 2, 3)), "application/octet-stream")})
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job_id = r.json()["id"]
    assert client.get(r.headers["location"]).json()["state"] == "pending"
    res = run_learn_job(job_id, settings)
    assert res["version"] == "2" and len(res["priors"]) == 10
    reg = Registry(settings.registry)
    assert reg.active("tiny") == "2" and reg.versions("tiny") == ["1", "2"]
    store = JobStore(settings.jobs)
    store.update(job_id, state="running")  # as if a worker died after the rename, before recording
    assert run_learn_job(job_id, settings)["version"] == "2"
    assert reg.versions("tiny") == ["1", "2"]
    j = client.get(f"/v1/jobs/{job_id}").json()
    assert j["state"] == "succeeded" and j["result"]["version"] == "2" and j["progress"] == 1.0
    assert abs(sum(j["result"]["priors"]) - 1) < 1e-6
    # the staging area is not a version, and manifests record the job
    assert reg.manifest("tiny", "2").data["job"]["id"] == job_id


def test_cancel_pending_job_never_runs(client, settings):
    from service.jobs.tasks import run_learn_job

    job_id = submit(client).json()["id"]
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    assert run_learn_job(job_id, settings) is None
    assert Registry(settings.registry).versions("tiny") == ["1"]
    m = client.get("/metrics").text
    assert 'nemgan_jobs{state="cancelled"} 1.0' in m


def _poll(url: str, job_id: str, until=("succeeded", "failed", "cancelled"), timeout=120.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        j = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=5).json()
        if j["state"] in until:
            return j
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} stuck: {j}")


def _run_stack(tmp_path, tiny_model_dir, **env_extra):
    env = base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_POLL_INTERVAL_S="0.3", **env_extra)
    srv = Server(env, tmp_path / "api.log")
    wrk = Worker(env, tmp_path / "worker.log", cwd=tmp_path)  # started elsewhere than the repo: it must leave
    return env, srv, wrk                                       # nothing there (kombu's ./control)


def _post_learn(url, extra=None):
    return httpx.post(f"{url}/v1/priors/learn", files={"labeled": ("l.zip", labeled_zip(), "application/zip")},
                      data={**FAST, **(extra or {})}, timeout=30)


@pytest.mark.slow
def test_embedded_mode_worker_end_to_end_with_kill(tmp_path, tiny_model_dir):
    """No Redis: filesystem broker, no result store. A worker killed mid-job -> the reaper re-queues the job once
    its heartbeat stops, it runs again on the next worker and publishes exactly one version; the API replica
    serves it without restart."""
    metrics_port = free_port()
    env, srv, wrk = _run_stack(tmp_path, tiny_model_dir, NEMGAN_WORKER_METRICS_PORT=metrics_port,
                               NEMGAN_JOB_STALE_AFTER_S=3)
    try:
        srv.wait_ready()
        wrk.wait_ready()
        job = _post_learn(srv.url, {"h_steps": "4000"}).json()  # long enough to be killed while running
        _poll(srv.url, job["id"], until=("running",))
        wait_for(lambda: httpx.get(f"{srv.url}/v1/jobs/{job['id']}").json()["progress"] > 0, timeout=60,
                 what="the job to be under way (its heartbeat reported progress)")
        wrk.kill()
        assert httpx.get(f"{srv.url}/v1/jobs/{job['id']}").json()["state"] == "running"
        # shorten the rerun: the job's params live in the store (a redelivery runs the same job)
        store = JobStore(tmp_path / "var" / "jobs")
        doc = store.get(job["id"])
        store.update(job["id"], params={**doc["params"], "h_steps": 5})
        wrk = Worker(env, tmp_path / "worker.log", cwd=tmp_path)
        j = _poll(srv.url, job["id"])
        assert j["state"] == "succeeded" and j["attempts"] == 2, j
        reg = Registry(tmp_path / "var" / "registry")
        assert reg.versions("tiny") == ["1", "2"] and reg.active("tiny") == "2"
        staging = tmp_path / "var" / "registry" / "tiny" / ".staging"
        assert not staging.exists() or not any(staging.iterdir())  # the killed attempt's export is gone too
        def serves_v2() -> bool:
            g = httpx.post(f"{srv.url}/v1/generate", json={"n": 1})
            assert g.status_code == 200, g.text
            return g.headers["x-nemgan-version"] == "2"

        wait_for(serves_v2, timeout=10, interval=0.2, what="the API to switch to the published version")
        wm = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'nemgan_worker_jobs_total{state="succeeded"} 1.0' in wm and "nemgan_job_duration_seconds_count 1.0" in wm
        # cancel a running job: it stops and publishes nothing
        job2 = _post_learn(srv.url, {"h_steps": "4000"}).json()
        _poll(srv.url, job2["id"], until=("running",))
        assert httpx.delete(f"{srv.url}/v1/jobs/{job2['id']}").json()["state"] == "cancelled"
        wait_for(lambda: metric(f"http://127.0.0.1:{metrics_port}/metrics", "nemgan_worker_jobs_total", state="cancelled"),
                 what="the worker to stop the cancelled job")
        assert reg.versions("tiny") == ["1", "2"]
        am = httpx.get(f"{srv.url}/metrics").text
        assert 'nemgan_jobs{state="succeeded"} 1.0' in am and 'nemgan_jobs{state="cancelled"} 1.0' in am
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["var"]  # no ./control
    finally:
        wrk.stop()
        srv.stop()


@pytest.mark.slow
def test_redis_mode_worker(tmp_path, tiny_model_dir, redis_url):
    env, srv, wrk = _run_stack(tmp_path, tiny_model_dir, NEMGAN_REDIS_URL=redis_url)
    try:
        srv.wait_ready()
        wrk.wait_ready()
        r = _post_learn(srv.url, {"method": "l1"})
        assert r.status_code == 202
        j = _poll(srv.url, r.json()["id"])
        assert j["state"] == "succeeded" and j["result"]["version"] == "2", j
        import redis

        assert not redis.Redis.from_url(redis_url).keys("celery-task-meta-*")  # the job store holds results
    finally:
        wrk.stop()
        srv.stop()
