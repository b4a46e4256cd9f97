"""Issue 18, cases 6-8: the job queue and its disk are bounded (queued-job cap, per-job stored-size cap checked
from the declared shapes, uploads deleted at cancel and finish, uploads never held whole in the API's memory),
a queued job whose broker message is gone is sent again, jobs can be listed, and the API knows whether a
worker is running. Real app, real job store, real redis-server, real uvicorn and Celery worker processes."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from svc_helpers import Server, Worker, base_env

from service.jobs.reaper import sweep
from service.jobs.store import JobStore
from service.jobs.workers import WorkerBeat

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FAST = {"h_steps": "2", "alpha_steps": "5", "seed": "0"}


def npz(n: int = 4, compressed: bool = False) -> bytes:
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, x=np.zeros((n, 28, 28), np.uint8), y=np.arange(n) % 10)
    return b.getvalue()


def submit(c, body: bytes | None = None, **data):
    return c.post("/v1/priors/learn", files={"labeled": ("l.npz", body or npz(), "application/octet-stream")},
                  data={**FAST, **data})


def wait_for(cond, timeout: float, what: str, step: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)  # polling a condition against a deadline (the state lives in another process)
    raise AssertionError(f"not within {timeout}s: {what}")


# ------------------------------------------------------------------------------------------------ 6
def test_queued_job_cap_answers_429_with_retry_after_and_writes_nothing(make_client, settings):
    c = make_client(settings.model_copy(update={"max_queued_jobs": 2}))
    assert submit(c).status_code == 202 and submit(c).status_code == 202
    r = submit(c)
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1 and "NEMGAN_MAX_QUEUED_JOBS" in r.json()["error"]
    assert len(JobStore(settings.jobs).ids()) == 2
    # a cancelled job frees its place
    first = c.get("/v1/jobs").json()["jobs"][-1]["id"]
    c.delete(f"/v1/jobs/{first}")
    assert submit(c).status_code == 202


def test_the_queued_job_cap_holds_under_concurrent_submits(tmp_path):
    store = JobStore(tmp_path / "jobs")
    from service.jobs.store import QueueFull

    ok, full = [], []
    barrier = threading.Barrier(8)

    def one(_):
        job_id = store.new_id()
        barrier.wait()
        try:
            store.create(job_id, {}, max_pending=3)
            ok.append(job_id)
        except QueueFull:
            full.append(job_id)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(8)))
    assert len(ok) == 3 and len(full) == 5 and store.counts()["pending"] == 3


def test_a_small_deflated_upload_that_unpacks_huge_is_refused_before_writing(make_client, settings):
    c = make_client(settings.model_copy(update={"max_job_unpacked_bytes": 1_000_000}))
    body = npz(20_000, compressed=True)  # 15.7 MB of pixels in a few KB
    assert len(body) < 100_000
    r = submit(c, body)
    assert r.status_code == 413 and "NEMGAN_MAX_JOB_UNPACKED_BYTES" in r.json()["error"], r.text
    assert JobStore(settings.jobs).ids() == []
    # the labeled set counts against the same budget as the unlabeled one
    r = c.post("/v1/priors/learn", data=FAST, files={
        "labeled": ("l.npz", npz(1000), "application/octet-stream"),
        "unlabeled": ("u.npz", npz(400, compressed=True), "application/octet-stream")})
    assert r.status_code == 413, r.text
    assert submit(c, npz(1000)).status_code == 202  # 784 kB: under the cap


def test_uploads_are_deleted_at_cancel(client, settings):
    job_id = submit(client).json()["id"]
    store = JobStore(settings.jobs)
    assert (store.dir(job_id) / "labeled.npz").is_file()
    assert client.delete(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert not store.has_uploads(job_id)


def test_the_reaper_drops_the_uploads_of_finished_jobs(tmp_path):
    store = JobStore(tmp_path / "jobs")
    ids = []
    for state in ("failed", "succeeded", "cancelled", "running", "pending"):
        i = store.new_id()
        store.create(i, {})
        (store.dir(i) / "labeled.npz").write_bytes(b"x" * 100)
        store.update(i, state=state, finished=time.time(), heartbeat=time.time(), queued=time.time())
        ids.append(i)
    out = sweep(store, lambda _i: None, stale_after=30, retention=3600)
    assert sorted(out["uploads dropped"]) == sorted(ids[:3])
    assert [store.has_uploads(i) for i in ids] == [False, False, False, True, True]


@pytest.mark.slow
def test_concurrent_large_submits_keep_the_api_memory_bounded(tmp_path, tiny_model_dir):
    """Six concurrent 15.7 MB uploads: the API reads them from Starlette's spooled files and converts them in
    chunks on its two job threads. It held each whole upload in memory and its float copy before."""
    env = base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_MAX_JOB_UPLOAD_BYTES=str(64 << 20))
    srv = Server(env, tmp_path / "api.log")
    try:
        srv.wait_ready()
        body = npz(20_000)

        def rss(field: str) -> int:
            for ln in open(f"/proc/{srv.proc.pid}/status"):
                if ln.startswith(field + ":"):
                    return int(ln.split()[1]) * 1024
            raise AssertionError(field)

        httpx.post(f"{srv.url}/v1/priors/learn", files={"labeled": ("l.npz", npz(), "application/octet-stream")},
                   data=FAST, timeout=60)  # the first submit imports what the job path needs
        base = rss("VmRSS")

        def one(_):
            return httpx.post(f"{srv.url}/v1/priors/learn", files={"labeled": ("l.npz", body, "x/y")},
                              data=FAST, timeout=120).status_code

        with ThreadPoolExecutor(6) as ex:
            codes = list(ex.map(one, range(6)))
        assert codes == [202] * 6
        grew = rss("VmHWM") - base
        assert grew < 160 << 20, f"the API's peak memory grew by {grew >> 20} MiB for 6 x 15.7 MB uploads"
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------ 7
def test_the_reaper_resends_a_job_whose_message_the_broker_lost_then_fails_it(tmp_path):
    store = JobStore(tmp_path / "jobs")
    lost, held, young = store.new_id(), store.new_id(), store.new_id()
    for i, age in ((lost, 200), (held, 200), (young, 5)):
        store.create(i, {})
        store.update(i, queued=time.time() - age)
    sent = []
    out = sweep(store, sent.append, 30, 3600, present=lambda: {held}, lost_after=120)
    assert out["lost"] == [lost] and sent == [lost]
    d = store.get(lost)
    assert d["state"] == "pending" and d["queued"] and d["lost"] == 1
    for n in (2, 3):  # lost again and again: sent again, then failed with the reason
        store.update(lost, queued=time.time() - 200)
        sweep(store, sent.append, 30, 3600, present=lambda: {held}, lost_after=120)
        assert store.get(lost)["lost"] == n
    store.update(lost, queued=time.time() - 200)
    out = sweep(store, sent.append, 30, 3600, present=lambda: {held}, lost_after=120)
    assert lost in out["failed"] and "lost this job's message" in store.get(lost)["error"]
    assert store.get(held)["state"] == "pending" and "lost" not in store.get(held)
    # a broker that cannot be asked is not taken as empty
    store.update(held, queued=time.time() - 200)
    assert sweep(store, sent.append, 30, 3600, present=lambda: None, lost_after=120)["lost"] == []


@pytest.mark.slow
def test_redis_replaced_by_an_empty_instance_the_job_is_resent_and_runs(tmp_path, tiny_model_dir, redis_url):
    """Case 7 and 8 end to end: a job queued with no worker says so; Redis loses every key (an empty instance
    took its place); the API's reaper sees the job's message gone and sends it again; a worker started then
    shows in /v1/workers and runs it."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own on the session's redis-server
    r = redis.Redis.from_url(url)
    r.flushdb()
    env = base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_REDIS_URL=url, NEMGAN_JOB_LOST_AFTER_S="2",
                   NEMGAN_JOB_STALE_AFTER_S="6", NEMGAN_WORKER_BEAT_S="1")
    srv = Server(env, tmp_path / "api.log")
    wrk = None
    try:
        srv.wait_ready()
        job = httpx.post(f"{srv.url}/v1/priors/learn", files={"labeled": ("l.npz", npz(), "application/octet-stream")},
                         data=FAST, timeout=30).json()["id"]
        j = httpx.get(f"{srv.url}/v1/jobs/{job}").json()
        assert j["state"] == "pending" and "no worker is running" in j["hint"]
        assert httpx.get(f"{srv.url}/v1/workers").json()["alive"] == 0
        assert r.llen("nemgan") == 1
        r.flushdb()  # the new, empty Redis
        wait_for(lambda: r.llen("nemgan") == 1, 30, "the job's message sent again")
        assert httpx.get(f"{srv.url}/v1/jobs/{job}").json()["state"] == "pending"
        listed = httpx.get(f"{srv.url}/v1/jobs", params={"state": "pending"}).json()
        assert [x["id"] for x in listed["jobs"]] == [job] and listed["workers_alive"] == 0
        wrk = Worker(env, tmp_path / "worker.log")
        wrk.wait_ready()
        wait_for(lambda: httpx.get(f"{srv.url}/v1/workers").json()["alive"] == 1, 10, "the worker's presence")
        assert "nemgan_workers 1.0" in httpx.get(f"{srv.url}/metrics").text
        done = wait_for(lambda: (lambda d: d if d["state"] in ("succeeded", "failed") else None)(
            httpx.get(f"{srv.url}/v1/jobs/{job}").json()), 180, "the job to finish", step=0.5)
        assert done["state"] == "succeeded", done
        assert done.get("hint") is None
        wrk.stop()
        assert httpx.get(f"{srv.url}/v1/workers").json()["alive"] == 0  # it removed its presence at shutdown
    finally:
        if wrk is not None:
            wrk.stop()
        srv.stop()


# ------------------------------------------------------------------------------------------------ 8
def test_job_list_newest_first_filtered_and_paged(client, settings):
    store = JobStore(settings.jobs)
    ids = []
    for k, state in enumerate(["succeeded", "failed", "pending", "succeeded", "cancelled"]):
        i = store.new_id()
        store.create(i, {"k": k})
        store.update(i, state=state, created=1000.0 + k)
        ids.append(i)
    r = client.get("/v1/jobs").json()
    assert [j["id"] for j in r["jobs"]] == ids[::-1] and r["next"] is None
    assert [j["id"] for j in client.get("/v1/jobs?state=succeeded").json()["jobs"]] == [ids[3], ids[0]]
    page = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]] and page["next"] == 1003.0
    page = client.get("/v1/jobs", params={"limit": 2, "before": page["next"]}).json()
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    for bad in ("?state=done", "?limit=0", "?limit=1000", "?limit=x"):
        r = client.get("/v1/jobs" + bad)
        assert r.status_code == 422 and "error" in r.json(), bad


def test_a_pending_job_says_when_no_worker_is_running(client, settings):
    job_id = submit(client).json()["id"]
    j = client.get(f"/v1/jobs/{job_id}").json()
    assert "no worker is running" in j["hint"]
    beat = WorkerBeat(settings.jobs, interval=30)
    beat.beat()  # a worker on another host announced itself in the shared job store
    try:
        assert client.get(f"/v1/jobs/{job_id}").json()["hint"] is None
        w = client.get("/v1/workers").json()
        assert w["alive"] == 1 and w["workers"][0]["pid"] == beat.pid
        assert "nemgan_workers 1.0" in client.get("/metrics").text
    finally:
        beat.stop()
    assert client.get("/v1/workers").json()["alive"] == 0
