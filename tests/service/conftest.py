"""Service test fixtures: real redis-server, real uvicorn and Celery worker subprocesses (no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from svc_helpers import free_port  # noqa: E402,F401


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def settings(tmp_path, tiny_model_dir):
    from service.settings import Settings

    return Settings(var_dir=tmp_path / "var", model_dirs=[tiny_model_dir], intra_op_threads=1, max_n=64,
                    max_images=16, max_upload_bytes=200_000, worker_metrics_port=0)


@pytest.fixture
def make_client(tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app

    clients = []

    def make(settings):
        c = TestClient(create_app(settings))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client, settings):
    return make_client(settings)
