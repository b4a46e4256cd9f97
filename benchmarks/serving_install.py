"""Time the README's serving install in a throwaway virtual environment and check that it serves.

    python benchmarks/serving_install.py            # writes docs/results/serving_install.json

Steps (each timed): `python -m venv`, `pip install --no-cache-dir -e ".[serving]"` (everything downloaded, as
on a new machine), then `nemgan serve` on a free port until /v2/health/ready answers 200; it also records
that torch is absent from the environment, the environment's size on disk, and that /healthz, the
playground (/) and the offline /docs answer 200.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except Exception:
        return 0


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def measure(work: Path) -> dict:
    venv = work / "venv"
    py, nemgan = venv / "bin" / "python", venv / "bin" / "nemgan"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t_venv = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check", "-e",
                    f"{REPO}[serving]"], check=True)
    t_pip = time.perf_counter() - t0
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode == 0

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    env["NEMGAN_VAR_DIR"] = str(work / "var")
    log = open(work / "serve.log", "wb")
    t0 = time.perf_counter()
    srv = subprocess.Popen([str(nemgan), "serve", "--port", str(port), "--log-level", "warning"], cwd=work, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = None
        while time.perf_counter() - t0 < 120 and srv.poll() is None:
            if _get(url + "/v2/health/ready") == 200:
                ready = time.perf_counter() - t0
                break
            time.sleep(0.1)
        status = {p: _get(url + p) for p in ("/v2/health/ready", "/healthz", "/", "/docs",
                                             "/docs-assets/swagger-ui-bundle.js")}
    finally:
        srv.terminate()
        srv.wait(30)
    return {"venv_s": round(t_venv, 1), "pip_install_s": round(t_pip, 1), "total_install_s": round(t_venv + t_pip, 1),
            "venv_mb": round(_du(venv) / 2**20), "torch_installed": has_torch, "serve_ready_s":
            None if ready is None else round(ready, 2), "http_status": status,
            "python": platform.python_version(), "command": 'pip install --no-cache-dir -e ".[serving]"',
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "serving_install.json")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nemgan-serving-install-"))
    try:
        res = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    ok = not res["torch_installed"] and res["serve_ready_s"] is not None and all(
        v == 200 for v in res["http_status"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
