"""The hot path: fused h.onnx, the pure-ASGI handlers vs FastAPI's router,
the body parsers (multipart, .npy, PNG) against the reference ones, and the batcher's wait policy."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from svc_helpers import npy_bytes


def png(arr, mode=None, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode).save(b, format="PNG", **kw)
    return b.getvalue()


def _palette(g) -> bytes:
    b = io.BytesIO()
    Image.fromarray(g).convert("P").save(b, format="PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def imgs():
    return (np.random.default_rng(1).random((6, 28, 28)) * 255).astype(np.uint8)


# ------------------------------------------------------------------ fused h.onnx


def test_export_writes_fused_h_with_parity(tiny_model_dir):
    import onnxruntime as ort

    from core.manifest import load_manifest

    man = load_manifest(tiny_model_dir, verify=True)
    assert man.has_onnx("h") and man.data["onnx"]["h"]["outputs"] == ["z", "logits"]
    assert man.data["parity"]["h"]["onnx_max_abs_err"] <= man.data["parity"]["atol"]
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1, 28, 28)).astype(np.float32)
    s = {n: ort.InferenceSession(str(man.onnx_path(n)), providers=["CPUExecutionProvider"]) for n in ("h", "h1", "h2")}
    z, logits = s["h"].run(["z", "logits"], {"x": x})
    z1 = s["h1"].run(None, {"x": x})[0]
    np.testing.assert_allclose(z, z1, atol=1e-5)
    np.testing.assert_allclose(logits, s["h2"].run(None, {"z": z1})[0], atol=1e-5)


@pytest.fixture(scope="module")
def unfused_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as exported before h.onnx existed (manifest without onnx.h)."""
    from core.manifest import load_manifest, write_manifest

    d = tmp_path_factory.mktemp("unfused") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    (d / "h.onnx").unlink()
    data = json.loads((d / "manifest.json").read_text())
    del data["onnx"]["h"], data["parity"]["h"]
    write_manifest(d, data)
    assert not load_manifest(d, verify=True).has_onnx("h")
    return d


def test_runtime_refuses_a_model_without_the_fused_graph(tiny_model_dir, unfused_model_dir):
    """The h1 -> h2 fallback is gone (every export writes h.onnx): an older directory is refused by name."""
    from core.errors import ManifestError
    from service.runtime import ModelRuntime
    from service.settings import Settings

    s = Settings(intra_op_threads=1)
    x = np.random.default_rng(0).uniform(-1, 1, (7, 1, 28, 28)).astype(np.float32)
    z, logits = ModelRuntime(tiny_model_dir, s).run("h", x)
    assert z.shape == (7, 50) and logits.shape == (7, 10)
    with pytest.raises(ManifestError, match="re-export"):
        ModelRuntime(unfused_model_dir, s)


# ------------------------------------------------------------------ fast path == FastAPI's router


def _requests(imgs):
    files = [("files", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(imgs[:3])]
    rgb = [("files", ("c.png", png(np.zeros((40, 30, 3), np.uint8)), "image/png")),
           ("files", ("d.png", png(np.stack([imgs[0]] * 3, -1)), "image/png"))]
    b = io.BytesIO()
    np.savez(b, x=imgs[:, None].astype(np.float32) / 127.5 - 1)
    return [
        ("/v1/cluster", {"content": npy_bytes(imgs), "headers": {"content-type": "application/x-npy"}}),
        ("/v1/cluster?return_latent=true&return_reconstruction=1",
         {"content": npy_bytes(imgs[:2]), "headers": {"content-type": "application/x-npy"}}),
        ("/v1/cluster", {"files": files, "data": {"return_latent": "1"}}),
        ("/v1/cluster", {"files": rgb}),
        ("/v1/cluster?input_range=-1-1", {"files": [("files", ("b.npz", b.getvalue(), "application/octet-stream"))]}),
        ("/v1/cluster", {"content": b"garbage", "headers": {"content-type": "application/x-npy"}}),
        ("/v1/cluster", {"content": b"{}", "headers": {"content-type": "application/json"}}),
        ("/v1/cluster", {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=b"}}),
        ("/v1/cluster", {"files": [("files", ("a.png", b"\x89PNG\r\n\x1a\nxx", "image/png"))]}),
        ("/v1/cluster", {"files": [("files", ("a.png", png(imgs[0]), "image/png"))], "data": {"return_latent": "x"}}),
        ("/v1/cluster?model=nope", {"content": npy_bytes(imgs), "headers": {"content-type": "application/x-npy"}}),
        ("/v1/cluster", {"content": npy_bytes(np.zeros((17, 28, 28), np.uint8)),
                         "headers": {"content-type": "application/x-npy"}}),
        ("/v1/generate", {"json": {"n": 5, "seed": 3, "format": "npz"}}),
        ("/v1/generate", {"json": {"n": 2, "seed": 3, "mode": "4", "format": "json"}}),
        ("/v1/generate", {"json": {"n": 3, "seed": 1, "format": "grid"}}),
        ("/v1/generate", {"json": {"n": 0}}),
        ("/v1/generate", {"json": {"n": 2, "sigma": -1}}),
        ("/v1/generate", {"json": {"n": 2, "mode": 99}}),
        ("/v1/generate", {"json": {"n": 100}}),
        ("/v1/generate", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("/v1/generate", {"content": b'{"n": 1}', "headers": {"content-type": "text/plain"}}),
        ("/v1/generate", {"json": {"n": 1, "model": "nope"}}),
    ]


def test_fast_path_answers_exactly_like_the_router(make_client, settings, imgs):
    fast = make_client(settings)
    slow = make_client(settings.model_copy(update={"fast_path": False}))
    assert fast.app.fast_routes and not slow.app.fast_routes
    for path, kw in _requests(imgs):
        a, b = fast.post(path, **kw), slow.post(path, **kw)
        assert a.status_code == b.status_code, (path, kw.get("json"), a.text, b.text)
        assert a.headers.get("content-type") == b.headers.get("content-type")
        for h in ("x-nemgan-model", "x-nemgan-version", "x-nemgan-seed", "x-nemgan-modes"):
            assert a.headers.get(h) == b.headers.get(h)
        if a.headers["content-type"] == "application/json":
            assert a.json() == b.json(), (path, a.text, b.text)
        else:
            assert a.content == b.content


def test_fast_path_caps_and_metrics(client, settings, imgs):
    cap = settings.max_upload_bytes
    r = client.post("/v1/cluster", content=b"x" * (cap + 1), headers={"content-type": "application/x-npy"})
    assert r.status_code == 413 and "exceeds the cap" in r.json()["error"]

    def chunks():  # no Content-Length: the streamed size is capped
        for _ in range(cap // 4096 + 2):
            yield b"x" * 4096

    r = client.post("/v1/cluster", content=chunks(), headers={"content-type": "application/x-npy"})
    assert r.status_code == 413
    assert client.post("/v1/cluster", content=npy_bytes(imgs), headers={"content-type": "application/x-npy"}).status_code == 200
    m = client.get("/metrics").text
    assert 'nemgan_requests_total{method="POST",route="/v1/cluster",status="200"}' in m
    assert 'nemgan_requests_total{method="POST",route="/v1/cluster",status="413"}' in m
    assert 'nemgan_request_duration_seconds_count{method="POST",route="/v1/cluster"}' in m


# ------------------------------------------------------------------ parsers vs the reference ones


def test_multipart_parser_matches_starlette():
    import httpx
    from starlette.formparsers import MultiPartParser
    from starlette.datastructures import Headers, UploadFile

    from service.encoding import parse_multipart

    req = httpx.Request("POST", "http://x/", data={"return_latent": "1", "note": "é"},
                        files=[("files", ("a b.png", b"\r\n--x\r\n\r\n", "image/png")), ("files", ("c.npy", b"", "application/x-npy"))])
    body, ctype = req.read(), req.headers["content-type"]

    async def ref():
        async def stream():
            yield body

        form = await MultiPartParser(Headers({"content-type": ctype}), stream()).parse()
        out = []
        for k, v in form.multi_items():
            out.append((k, v.filename, v.content_type, await v.read()) if isinstance(v, UploadFile)
                       else (k, None, "text/plain", v.encode()))
        return out

    mine = [(p.name, p.filename, p.content_type, p.data) for p in parse_multipart(body, ctype)]
    assert sorted(mine, key=str) == sorted(asyncio.run(ref()), key=str)
    quoted = b'preamble\r\n--"q"\r\ncontent-disposition: form-data; name="f"; filename="x"\r\n\r\nDATA\r\n--"q"--\r\n'
    assert parse_multipart(quoted.replace(b'"q"', b"q"), 'multipart/form-data; boundary="q"')[0].data == b"DATA"
    for bad in (b"", b"--q\r\n", b"--q\r\ncontent-disposition: form-data; name=f\r\n\r\nno end", b"--q\r\nbad header\r\n\r\nx\r\n--q--"):
        with pytest.raises(ValueError):
            parse_multipart(bad, "multipart/form-data; boundary=q")
    with pytest.raises(ValueError):
        parse_multipart(body, "multipart/form-data")


def test_png_decoding_matches_pillow_reference(imgs):
    from core.images import ImageSpec, decode_image, decode_images, uint8_to_model
    from core.png import decode_png as _fast_png

    def preprocess_image_bytes(b, spec):  # the reference: Pillow's full decoder, no fast path
        return uint8_to_model(decode_image(b, spec, fast=False))

    g = (np.add.outer(np.arange(28), np.arange(28)) * 4).astype(np.uint8)  # smooth: every PNG row filter
    cases = [png(imgs[0]), png(g), png(g, compress_level=0), png(g, optimize=True),
             png(np.stack([g, g.T, 255 - g], -1)), png(np.stack([g, g.T, g, g], -1), "RGBA"),
             png(np.stack([g, g.T], -1), "LA"), png(np.zeros((50, 20), np.uint8)),
             png(g, transparency=3), png((g.astype(np.uint16) * 200)), _palette(g)]
    assert sum(_fast_png(c) is not None for c in cases) >= 7
    for c in (1, 3):
        spec = ImageSpec(c, 28, 28)
        ref = np.stack([preprocess_image_bytes(b, spec) for b in cases])
        assert (decode_images(cases, spec) == ref).all()
        for i, b in enumerate(cases):
            assert (decode_images([b], spec)[0] == ref[i]).all()
        same = [cases[1], cases[0], cases[1]]  # all in the model's size: the batched decode
        assert (decode_images(same, spec) == np.stack([preprocess_image_bytes(b, spec) for b in same])).all()
    bad = bytearray(cases[1])
    bad[45] ^= 0xFF  # inside IDAT: CRC mismatch -> Pillow's own error
    for blobs in ([bytes(bad)], [cases[0], bytes(bad)], [cases[0], cases[0][:60] + cases[0][-12:]]):
        with pytest.raises(ValueError, match=f"image {len(blobs) - 1}"):
            decode_images(blobs, ImageSpec(1, 28, 28))


@pytest.mark.parametrize("arr", [
    np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28), np.zeros((3, 1, 28, 28), np.float32) + 0.5,
    np.full((2, 28, 28, 1), 9, ">i4"), np.asfortranarray(np.ones((2, 28, 28), np.uint8)),
    np.zeros((2, 28, 28), np.float64), np.zeros((0, 28, 28), np.uint8)])
def test_npy_fast_path_matches_np_load(arr):
    from service.encoding import load_array
    from core.images import ImageSpec, prepare_array_batch

    spec = ImageSpec(1, 28, 28)
    rng = (-1, 1) if arr.dtype.kind == "f" else None  # float arrays must state their range
    got = load_array(npy_bytes(arr), spec, input_range=rng)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, prepare_array_batch(arr, spec, rng))
    with pytest.raises(ValueError):
        load_array(npy_bytes(arr)[:-1] if arr.size else b"\x93NUMPY\x01\x00", spec, input_range=rng)


# ------------------------------------------------------------------ batcher wait policy


def test_adaptive_wait_flushes_idle_requests_at_once():
    from service.batcher import Batcher

    async def main(adaptive):
        b = Batcher(lambda x: x, max_batch=64, max_wait=0.5, adaptive=adaptive)
        t = time.perf_counter()
        await b.submit(np.zeros((1, 1)))
        dt = time.perf_counter() - t
        await b.close()
        return dt

    assert asyncio.run(main(True)) < 0.25
    assert asyncio.run(main(False)) >= 0.45


def test_two_workers_overlap_and_fill_the_next_batch():
    from service.batcher import Batcher

    sizes, active, peak = [], [0], [0]
    lock = threading.Lock()

    def fn(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        sizes.append(len(x))
        return x

    async def main():
        b = Batcher(fn, max_batch=64, max_wait=0.02, workers=2)
        first = asyncio.create_task(b.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.005)
        rest = [asyncio.create_task(b.submit(np.full((1, 1), i))) for i in range(6)]
        outs = await asyncio.gather(first, *rest)
        assert [float(o[0, 0]) for o in outs[1:]] == list(range(6))
        await b.close()

    asyncio.run(main())
    assert sizes[0] == 1 and sorted(sizes) == [1, 6] and peak[0] == 2
