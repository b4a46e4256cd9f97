"""benchmarks/gpu_run.sh, the prepared GPU run: its syntax, and a CPU dry run of every step that needs no GPU
(tests skip with their reasons, a 2-step speed measurement, serve_bench skipped for want of the CUDA
provider, a 3-step training run and its evaluation), within the device tool's limits on returned files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_run.sh"


def test_syntax():
    bash = shutil.which("bash")
    assert bash
    r = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_rejects_unknown_options():
    r = subprocess.run(["bash", str(SCRIPT), "--gpus=8"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr


def test_dry_run_on_cpu(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out))
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--budget-s=300"], capture_output=True, text=True,
                       env=env, timeout=400, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["dry_run"] is True
    st = res["status"]
    assert st["tests_rc"] == "0" and st["speed_eager_rc"] == "0" and st["train_rc"] == "0"
    # Without a GPU every GPU test skips and says why; the provider-fallback test runs.
    gpu_tests = [t for t in res["tests"] if "fallback" not in t["test"]]
    assert gpu_tests and all(t["outcome"] == "skipped" and t["reason"] for t in gpu_tests)
    assert any(t["outcome"] == "passed" for t in res["tests"])
    (speed,) = res["train_speed"]
    assert speed["device"] == "cpu" and speed["steps_per_s"] > 0 and speed["steps"] == 2
    assert "CUDAExecutionProvider" in st["serve_bench"]
    assert res["training"]["steps"] == 3 and (out / "best.pt").is_file()
    # What the device tool returns: <= 8 files, <= 16 MiB each, plain names.
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() and f.stat().st_size <= 16 * 2**20 for f in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) for f in files)
    parts = sorted(out.glob("last.pt.*"))
    last = b"".join(p.read_bytes() for p in parts) if parts else (out / "last.pt").read_bytes()
    assert last[:2] == b"PK"  # a torch zip checkpoint, whole again
