"""`nemgan models list|show|activate|rollback|push|delete --url` against a real `uvicorn` service (torch blocked in
the CLI: it is a plain HTTP client), and `nemgan serve -m <not a model>` refusing at once (issue 18)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_blocker import run_without_torch

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from svc_helpers import Server, base_env  # noqa: E402

NEMGAN = "import sys; sys.argv[0] = 'nemgan'; import cli; cli.app()"


def nemgan(*args, **kw):
    return run_without_torch(NEMGAN, *map(str, args), **kw)


@pytest.fixture
def service(tmp_path, tiny_model_dir):
    env = base_env(tmp_path / "var", [tiny_model_dir], NEMGAN_API_KEY="s3cret", NEMGAN_POLL_INTERVAL_S="0.5")
    srv = Server(env, tmp_path / "api.log")
    try:
        srv.wait_ready(60)
        yield srv
    finally:
        srv.stop()


def test_models_commands_against_a_running_service(service, tiny_model_dir, tmp_path):
    url = ("--url", service.url)
    key = {"env": {"NEMGAN_API_KEY": "s3cret"}}
    r = nemgan("models", "list", *url)
    assert r.returncode == 0 and r.stdout.strip() == "tiny: active 1 (versions 1)", r.stdout + r.stderr
    # changes need the key: refused with the service's reason, exit 1
    r = nemgan("models", "push", "tiny", tiny_model_dir, *url)
    assert r.returncode == 1 and "401" in r.stderr and "API key" in r.stderr
    r = nemgan("models", "push", "tiny", tiny_model_dir, *url, **key)
    assert r.returncode == 0 and "registered version 2" in r.stdout, r.stderr
    r = nemgan("models", "activate", "tiny", "2", *url, **key)
    assert r.returncode == 0 and "active 2" in r.stdout, r.stderr
    shown = json.loads(nemgan("models", "show", "tiny", *url).stdout)
    assert shown["active_version"] == "2" and shown["history"] == ["1", "2"]
    r = nemgan("models", "delete", "tiny", "2", *url, **key)
    assert r.returncode == 1 and "409" in r.stderr and "active" in r.stderr
    r = nemgan("models", "rollback", "tiny", *url, **key)
    assert r.returncode == 0 and "active 1" in r.stdout, r.stderr
    r = nemgan("models", "delete", "tiny", "2", *url, **key)
    assert r.returncode == 0 and "deleted version 2" in r.stdout, r.stderr
    # a broken directory is refused by the service, with the reason
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "h.onnx").write_bytes(b"\0" * 10)
    r = nemgan("models", "push", "tiny", bad, "--activate", *url, **key)
    assert r.returncode == 1 and "422" in r.stderr and "sha256 mismatch for h.onnx" in r.stderr
    r = nemgan("models", "activate", "tiny", "9", *url, **key)
    assert r.returncode == 1 and "404" in r.stderr
    listed = json.loads(nemgan("models", "list", "--json", *url).stdout)
    assert listed[0]["versions"] == ["1"] and listed[0]["serving_version"] == "1"


def test_models_commands_say_when_the_service_is_not_there():
    r = nemgan("models", "list", "--url", "http://127.0.0.1:9", timeout=30)
    assert r.returncode == 1 and "cannot reach" in r.stderr


def test_serve_with_a_model_path_that_does_not_exist_exits_at_once(tmp_path):
    try:
        r = nemgan("serve", "-m", tmp_path / "does-not-exist", "--port", "0", timeout=30,
                   env={"NEMGAN_VAR_DIR": str(tmp_path / "var")})
    except subprocess.TimeoutExpired:
        pytest.fail("nemgan serve -m <missing> kept running (with no model) instead of exiting")
    assert r.returncode != 0 and "not a model directory" in r.stderr, r.stderr
