"""Helpers shared by the service tests: real uvicorn / Celery worker subprocesses."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.data import default_data_root

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05, what: str = "the condition"):
    """Poll pred() until it returns something truthy (returned) or `timeout` s pass (TimeoutError naming `what`).

    How the tests wait for an event (a job running, requests held in a batcher, a port closed) instead of
    sleeping a guessed time: as fast as the event on an idle machine, as patient as the deadline on a busy one."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def metric(url: str, name: str, **labels) -> float | None:
    """One sample of a Prometheus text endpoint (url ends in /metrics or is the service's root), or None."""
    import httpx

    text = httpx.get(url if url.endswith("/metrics") else url + "/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")) or (not want and line.startswith(name + "{}")):
            return float(line.rsplit(" ", 1)[1])
    return None


def npy_bytes(x: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, x)
    return b.getvalue()


def base_env(var_dir: Path, model_dirs: list[Path], **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    env.update(PYTHONPATH=str(REPO), NEMGAN_VAR_DIR=str(var_dir), NEMGAN_MODEL_DIRS=",".join(map(str, model_dirs)),
               NEMGAN_INTRA_OP_THREADS="1", OMP_NUM_THREADS="1", NEMGAN_WORKER_METRICS_PORT="0",
               NEMGAN_DATA_DIR=str(default_data_root()))
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Server:
    """A real uvicorn subprocess running service.app:create_app (settings from the env)."""

    def __init__(self, env: dict, log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--timeout-graceful-shutdown", "20", "--log-level", "warning"],
            cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> float:
        import httpx

        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Worker:
    """A real Celery worker subprocess (solo pool)."""

    def __init__(self, env: dict, log: Path, cwd: Path = REPO):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "service.jobs.worker"], cwd=cwd, env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if "ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def served(folder: Path, model_dirs: list[Path], **env):
    """A real server (uvicorn, as `nemgan serve` runs it) on the given models, ready, stopped on exit."""
    s = Server(base_env(folder / "var", model_dirs, **env), folder / "api.log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
