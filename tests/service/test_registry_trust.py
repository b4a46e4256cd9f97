"""Issue 18, cases 1-5: the registry trusts nothing on disk. A version is checked (manifest, name/version,
sha256 of every file, ONNX Runtime opens it) before it is activated or served; a broken active version
falls back loudly to the last good one; one bad folder never breaks the listing; a truncated active.json
changes nothing that is served and keeps the history. Real app (TestClient with its lifespan), real files."""

from __future__ import annotations

import json
import shutil

import pytest

from core.manifest import load_manifest, write_manifest
from service.registry import Registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def add_version(settings, src, version: str, name: str = "tiny", rehash: bool = True, before=None, after=None,
                manifest_version: str | None = None) -> Registry:
    """Copy the model directory `src` in as name/version. `before(d)` changes files before the digests are
    written, `after(d)` after them (a file replaced behind the manifest's back)."""
    reg = Registry(settings.registry)
    d = reg.root / name / version
    shutil.copytree(src, d)
    if before:
        before(d)
    data = load_manifest(d).data
    data["name"], data["version"] = name, manifest_version or version
    if rehash:
        write_manifest(d, data)
    if after:
        after(d)
    return reg


def corrupt_onnx(d):
    (d / "g.onnx").write_bytes((d / "g.onnx").read_bytes()[:200])  # a truncated graph


def point(reg: Registry, name: str, version: str, history: list[str]) -> None:
    """Move the pointer as the old code (or an operator) would have, without any check."""
    (reg.root / name / "active.json").write_text(json.dumps({"version": version, "history": history}))


def metric(client, line: str) -> float | None:
    for ln in client.get("/metrics").text.splitlines():
        if ln.startswith(line + " "):
            return float(ln.split()[-1])
    return None


# ------------------------------------------------------------------------------------------------ 1 and 2
def test_activate_refuses_a_version_whose_onnx_does_not_load(client, settings, tiny_model_dir):
    """Digests match (they were written over the truncated file) but ONNX Runtime refuses the graph."""
    reg = add_version(settings, tiny_model_dir, "2", before=corrupt_onnx)
    r = client.post("/v1/models/tiny/versions/2/activate")
    assert r.status_code == 422, r.text
    body = r.json()
    assert "cannot be served" in body["error"] and "/" + "tmp" not in body["error"]
    assert reg.active("tiny") == "1" and reg.history("tiny") == ["1"]
    assert client.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "1"
    d = client.get("/v1/models/tiny").json()
    v2 = next(v for v in d["details"] if v["version"] == "2")
    assert v2["valid"] is False and v2["error"]


def test_activate_refuses_a_replaced_file(client, settings, tiny_model_dir, tmp_path):
    """g.onnx replaced after export (another model's graph): the sha256 check refuses it."""
    def swap(d):
        (d / "g.onnx").write_bytes((d / "g.onnx").read_bytes() + b"\0")

    reg = add_version(settings, tiny_model_dir, "2", after=swap)
    r = client.post("/v1/models/tiny/versions/2/activate")
    assert r.status_code == 422 and "sha256 mismatch for g.onnx" in r.json()["error"], r.text
    assert reg.active("tiny") == "1"
    # and a request naming the version is refused too (it was served with the manifest's version before)
    r = client.post("/v1/generate", json={"n": 1, "version": "2"})
    assert r.status_code == 422 and "sha256" in r.json()["error"]


def test_a_broken_active_version_falls_back_to_the_last_good_one_at_start(make_client, settings, tiny_model_dir):
    make_client(settings).__exit__(None, None, None)  # seeds tiny/1
    reg = add_version(settings, tiny_model_dir, "2", before=corrupt_onnx)
    point(reg, "tiny", "2", ["1", "2"])  # activated by the old code, which checked nothing
    c = make_client(settings)
    r = c.post("/v1/generate", json={"n": 1})
    assert r.status_code == 200 and r.headers["x-nemgan-version"] == "1"
    m = c.get("/v1/models").json()[0]
    assert m["active_version"] == "2" and m["serving_version"] == "1"
    assert m["problem"]["kind"] == "fallback" and "cannot be served" in m["problem"]["reason"]
    assert metric(c, 'nemgan_model_problem{kind="fallback",name="tiny"}') == 1.0
    assert (metric(c, 'nemgan_model_load_failures_total{name="tiny"}') or 0) >= 1
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["problems"]["tiny"]["serving"] == "1"


def test_a_default_model_that_cannot_be_served_is_503_never_another_model(make_client, settings, tiny_model_dir,
                                                                          tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    data = load_manifest(other).data
    data["name"] = "other"
    write_manifest(other, data)
    s = settings.model_copy(update={"model_dirs": [tiny_model_dir, other], "default_model": "tiny"})
    make_client(s).__exit__(None, None, None)
    reg = add_version(s, tiny_model_dir, "2", before=corrupt_onnx)
    point(reg, "tiny", "2", ["2"])  # no good version in its history
    c = make_client(s)
    r = c.post("/v1/generate", json={"n": 1})
    assert r.status_code == 503 and "tiny" in r.json()["error"], (r.status_code, r.headers)
    assert c.post("/v1/generate", json={"n": 1, "model": "tiny"}).status_code == 503
    assert c.post("/v1/generate", json={"n": 1, "model": "other"}).headers["x-nemgan-model"] == "other"
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 503 and "tiny" in ready.json()["error"]
    assert c.get("/v1/models/tiny").json()["problem"]["kind"] == "unavailable"
    # activating the good version repairs it
    assert c.post("/v1/models/tiny/versions/1/activate").status_code == 200
    assert c.post("/v1/generate", json={"n": 1}).headers["x-nemgan-model"] == "tiny"
    assert c.get("/v2/health/ready").status_code == 200


# ------------------------------------------------------------------------------------------------ 3
def test_an_invalid_manifest_breaks_nothing_and_cannot_be_activated(client, settings, tiny_model_dir):
    reg = Registry(settings.registry)
    bad = reg.root / "tiny" / "5"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "manifest.json").write_text('{"format_version": 1, "name": "tiny", "vers')
    assert client.get("/v1/models").status_code == 200
    d = client.get("/v1/models/tiny")
    assert d.status_code == 200, d.text
    v5 = next(v for v in d.json()["details"] if v["version"] == "5")
    assert v5["valid"] is False and "invalid manifest.json" in v5["error"]
    r = client.post("/v1/models/tiny/versions/5/activate")
    assert r.status_code == 422 and "invalid manifest.json" in r.json()["error"]
    assert reg.active("tiny") == "1"
    assert client.post("/v1/models/tiny/rollback").status_code == 409
    import io

    import numpy as np

    b = io.BytesIO()
    np.savez(b, x=np.zeros((4, 28, 28), np.uint8), y=np.arange(4))
    r = client.post("/v1/priors/learn", files={"labeled": ("l.npz", b.getvalue(), "application/octet-stream")},
                    data={"h_steps": "1", "alpha_steps": "1"})
    assert r.status_code == 202, r.text
    r = client.post("/v1/priors/learn", files={"labeled": ("l.npz", b.getvalue(), "application/octet-stream")},
                    data={"version": "5"})
    assert r.status_code == 422 and "invalid manifest.json" in r.json()["error"]


# ------------------------------------------------------------------------------------------------ 4
def test_a_manifest_naming_another_version_is_refused_once_not_reloaded(client, settings, tiny_model_dir):
    reg = add_version(settings, tiny_model_dir, "2", manifest_version="3")
    r = client.post("/v1/models/tiny/versions/2/activate")
    assert r.status_code == 422 and "names tiny/3" in r.json()["error"], r.text
    point(reg, "tiny", "2", ["1", "2"])
    pool = client.app.state.pool
    before = metric(client, 'nemgan_model_load_failures_total{name="tiny"}')  # the refused activate counted
    assert before >= 1
    for _ in range(5):  # what the 2 s poll does; the old code reloaded the version every time
        assert client.portal.call(pool.refresh) == []
    assert metric(client, 'nemgan_model_load_failures_total{name="tiny"}') == before  # not tried again
    assert pool.active["tiny"].version == "1" and pool.problems["tiny"]["kind"] == "fallback"
    assert client.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "1"


# ------------------------------------------------------------------------------------------------ 5
def test_a_truncated_pointer_keeps_serving_and_keeps_the_history(make_client, settings, tiny_model_dir):
    c = make_client(settings)
    reg = add_version(settings, tiny_model_dir, "2")
    assert c.post("/v1/models/tiny/versions/2/activate").status_code == 200
    add_version(settings, tiny_model_dir, "3")  # published with activate=false: never to be served by accident
    p = reg.root / "tiny" / "active.json"
    p.write_bytes(p.read_bytes()[:9])  # truncated
    assert c.portal.call(c.app.state.pool.refresh) == []
    assert c.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "2"
    m = c.get("/v1/models/tiny").json()
    assert m["serving_version"] == "2" and m["problem"]["kind"] == "pointer" and m["history"] == ["1", "2"]
    assert metric(c, 'nemgan_model_problem{kind="pointer",name="tiny"}') == 1.0
    c.__exit__(None, None, None)
    c = make_client(settings)  # a restart reads the backup
    assert c.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "2"
    r = c.post("/v1/models/tiny/rollback")
    assert r.status_code == 200 and r.json()["active_version"] == "1" and r.json()["problem"] is None
    assert json.loads(p.read_text()) == {"version": "1", "history": ["1"]}


def test_pointer_and_backup_unreadable_at_start_serve_nothing_silently(make_client, settings, tiny_model_dir):
    make_client(settings).__exit__(None, None, None)
    reg = add_version(settings, tiny_model_dir, "2")
    for f in ("active.json", "active.json.bak"):
        (reg.root / "tiny" / f).write_text("{")
    c = make_client(settings)
    assert c.post("/v1/generate", json={"n": 1}).status_code == 503  # not the newest version, silently
    assert c.get("/v2/health/ready").status_code == 503
    assert c.get("/v1/models/tiny").json()["problem"]["kind"] == "unavailable"
    assert c.post("/v1/models/tiny/versions/1/activate").status_code == 200
    assert c.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "1"
