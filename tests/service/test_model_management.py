"""Issue 18, model management: a model directory uploaded as .tar(.gz)/.zip becomes the next version once it
passed what any version passes (safe extraction: no path traversal, no links, size caps; manifest, digests,
ONNX); a version that is not active can be deleted; both need the API key. Real app, real archives."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from service.registry import Registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def tgz(src, top: str | None = None, extra=None, skip=()) -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as t:
        for p in sorted(src.iterdir()):
            if p.name not in skip:
                t.add(p, arcname=f"{top}/{p.name}" if top else p.name)
        for info, data in extra or ():
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return b.getvalue()


def member(name: str, data: bytes | None = b"x", kind=tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def push(c, body: bytes, name: str = "tiny", ctype: str = "application/gzip", **params):
    return c.post(f"/v1/models/{name}/versions", content=body, params=params, headers={"content-type": ctype})


def no_leftovers(settings) -> bool:
    up = Registry(settings.registry).root / ".uploads"
    return not up.exists() or not any(up.iterdir())


def test_push_registers_a_checked_version_then_activate_and_delete(client, settings, tiny_model_dir):
    r = push(client, tgz(tiny_model_dir, top="my-export"))
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "tiny", "version": "2", "activated": False, "location": "/v1/models/tiny"}
    reg = Registry(settings.registry)
    assert reg.active("tiny") == "1" and reg.check("tiny", "2").version == "2"
    d = client.get("/v1/models/tiny").json()
    assert d["versions"] == ["1", "2"] and all(v["valid"] for v in d["details"])
    assert client.post("/v1/models/tiny/versions/2/activate").status_code == 200
    assert client.post("/v1/generate", json={"n": 1}).headers["x-nemgan-version"] == "2"
    # the active version cannot be deleted; another one can, and disappears
    r = client.delete("/v1/models/tiny/versions/2")
    assert r.status_code == 409 and "active" in r.json()["error"]
    r = client.delete("/v1/models/tiny/versions/1")
    assert r.status_code == 200 and r.json()["versions"] == ["2"]
    assert not (reg.root / "tiny" / "1").exists()
    assert client.delete("/v1/models/tiny/versions/1").status_code == 404
    # a zip, activated at once, as a new model name
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        for p in tiny_model_dir.iterdir():
            zf.write(p, p.name)
    r = push(client, z.getvalue(), name="tiny-b", ctype="application/zip", activate="true")
    assert r.status_code == 201 and r.json()["version"] == "1" and r.json()["activated"], r.text
    assert client.post("/v1/generate", json={"n": 1, "model": "tiny-b"}).headers["x-nemgan-model"] == "tiny-b"
    assert no_leftovers(settings)


@pytest.mark.parametrize("case,extra,status,words", [
    ("traversal", [member("../../evil.txt")], 400, "'..'"),
    ("absolute", [member("/tmp/nemgan-evil.txt")], 400, "absolute"),
    ("symlink", [member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")], 400, "links"),
    ("hardlink", [member("hard", kind=tarfile.LNKTYPE, link="manifest.json")], 400, "links"),
    ("fifo", [member("pipe", kind=tarfile.FIFOTYPE)], 400, "only files"),
    ("bomb", [member("zeros.bin", b"\0" * 3_000_000)], 413, "over the cap"),
    ("file-then-folder", [member("a"), member("a/b")], 400, "twice"),  # a 400, never a 500
])
def test_unsafe_archives_are_refused_and_leave_nothing(make_client, settings, tmp_path, case, extra, status, words):
    (tmp_path / "empty").mkdir()
    c = make_client(settings.model_copy(update={"max_model_upload_bytes": 2_500_000}))
    body = tgz(tmp_path / "empty", extra=[member("manifest.json", b"{}"), *extra])  # refused before it is read
    assert len(body) < 2_500_000
    r = push(c, body)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert Registry(settings.registry).versions("tiny") == ["1"]
    assert no_leftovers(settings)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "var" / "evil.txt").exists()


def test_zip_links_and_traversal_are_refused(client, settings, tiny_model_dir):
    for name, attr in (("../evil", 0o100644), ("link", 0o120777)):
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w") as zf:
            for p in tiny_model_dir.iterdir():
                zf.write(p, p.name)
            info = zipfile.ZipInfo(name)
            info.external_attr = attr << 16
            zf.writestr(info, "/etc/passwd")
        r = push(client, z.getvalue(), ctype="application/zip")
        assert r.status_code == 400, (name, r.text)
    assert Registry(settings.registry).versions("tiny") == ["1"] and no_leftovers(settings)


def test_an_upload_that_fails_the_checks_is_not_registered(client, settings, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(tiny_model_dir, bad)
    (bad / "g.onnx").write_bytes((bad / "g.onnx").read_bytes() + b"\0")  # not what its manifest says
    r = push(client, tgz(bad))
    assert r.status_code == 422 and "sha256 mismatch for g.onnx" in r.json()["error"], r.text
    from core.manifest import load_manifest, write_manifest

    write_manifest(bad, load_manifest(bad).data)  # digests now match, but the graph is not ONNX
    (bad / "g.onnx").write_bytes(b"not a graph")
    write_manifest(bad, load_manifest(bad).data)
    r = push(client, tgz(bad))
    assert r.status_code == 422 and "cannot be served" in r.json()["error"], r.text
    assert push(client, b"hello").status_code == 400
    assert push(client, tgz(tiny_model_dir, skip=("manifest.json",))).status_code == 422
    assert push(client, b"x", name="-x").status_code == 422  # not a usable model name
    assert Registry(settings.registry).versions("tiny") == ["1"] and no_leftovers(settings)
    assert "/tmp" not in json.dumps(client.get("/v1/models/tiny").json())


def test_push_and_delete_need_the_api_key(make_client, settings, tiny_model_dir):
    c = make_client(settings.model_copy(update={"api_key": "k3y"}))
    assert push(c, tgz(tiny_model_dir)).status_code == 401
    assert c.delete("/v1/models/tiny/versions/1").status_code == 401
    r = c.post("/v1/models/tiny/versions", content=tgz(tiny_model_dir), headers={"authorization": "Bearer k3y"})
    assert r.status_code == 201
    assert c.delete("/v1/models/tiny/versions/2", headers={"authorization": "Bearer k3y"}).status_code == 200
