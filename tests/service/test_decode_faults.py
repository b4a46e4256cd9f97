"""Decoding faults (issue 10 faults 1, 4, 5): small bodies that unpack to huge arrays or declare huge images
must get a 4xx JSON answer from their declared sizes, before anything is unpacked, off the event loop, with
bounded memory; pickled arrays are refused. Against a real uvicorn process (its peak RSS is read from /proc)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zipfile
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from svc_helpers import Server, base_env


# ---------------------------------------------------------------------------------------------- crafted bodies
def zeros_member(zf: zipfile.ZipFile, name: str, header: bytes, n_bytes: int) -> None:
    """A deflated zip member: `header` then n_bytes of zeros, streamed (never held in memory)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        left = n_bytes
        while left:
            f.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def npy_header(shape, dtype="|u1") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return b.getvalue()


def bomb_npz(n: int, with_y: bool = False) -> bytes:
    """An .npz whose x declares n blank 28x28 images (n*784 bytes unpacked), deflated to a few hundred KB."""
    b = io.BytesIO()
    zf = zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED)
    zeros_member(zf, "x.npy", npy_header((n, 28, 28)), n * 784)
    if with_y:
        zeros_member(zf, "y.npy", npy_header((n,), "<i8"), n * 8)
    zf.close()
    return b.getvalue()


def png_declaring(w: int, h: int) -> bytes:
    """A tiny PNG whose IHDR declares w x h (grey 8-bit) with a one-row IDAT: what an attacker sends."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def big_png(side: int) -> bytes:
    b = io.BytesIO()
    Image.new("L", (side, side)).save(b, "PNG")
    return b.getvalue()


def labeled_zip(entries: dict[str, bytes]) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return b.getvalue()


def zip_with_huge_entry(n_bytes: int) -> bytes:
    b = io.BytesIO()
    zf = zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED)
    zf.writestr("set/0/a.png", big_png(28))
    zeros_member(zf, "set/1/b.png", b"", n_bytes)
    zf.close()
    return b.getvalue()


# ---------------------------------------------------------------------------------------------- a real server
def reset_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM) to the current RSS
        f.write("5")


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("decode")
    srv = Server(base_env(d / "var", [tiny_model_dir]), d / "api.log")
    srv.wait_ready()
    httpx.post(f"{srv.url}/v1/cluster", files=[("files", ("a.png", big_png(28), "image/png"))], timeout=10)
    yield srv
    srv.stop()


class LoopProbe:
    """Pings /healthz every 20 ms from a thread; `worst` is the slowest answer (the event loop's stall)."""

    def __init__(self, url: str):
        self.url, self.worst, self._stop = url, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                c.get(f"{self.url}/healthz")
                self.worst = max(self.worst, time.perf_counter() - t)
                time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def check(r: httpx.Response, statuses, words: str):
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert words in err, err
    return err


# ---------------------------------------------------------------------------------------------- fault 1
def test_npz_bomb_on_cluster_is_refused_from_its_declared_shape(server):
    body = bomb_npz(100_000)  # 78 MB unpacked
    reset_peak_rss(server.proc.pid)
    rss0 = peak_rss_mb(server.proc.pid)
    with LoopProbe(server.url) as probe:
        t = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/cluster", content=body, headers={"content-type": "application/octet-stream"},
                       timeout=60)
        took = time.perf_counter() - t
    check(r, (413,), "100000")
    grew = peak_rss_mb(server.proc.pid) - rss0
    print(f"\n.npz bomb ({len(body) // 1024} KB -> 78 MB): {r.status_code} in {took:.3f}s, "
          f"peak RSS +{grew:.0f} MB, loop stall {probe.worst:.3f}s")
    assert grew < 30 and took < 2 and probe.worst < 0.5


def test_npz_bomb_on_priors_learn_is_refused(server):
    body = bomb_npz(400_000, with_y=True)  # 317 MB unpacked
    reset_peak_rss(server.proc.pid)
    rss0 = peak_rss_mb(server.proc.pid)
    r = httpx.post(f"{server.url}/v1/priors/learn", files={"labeled": ("l.npz", body, "application/octet-stream")},
                   timeout=60)
    check(r, (413,), "400000")
    grew = peak_rss_mb(server.proc.pid) - rss0
    print(f"\n/v1/priors/learn .npz bomb ({len(body) // 1024} KB -> 317 MB): {r.status_code}, peak RSS +{grew:.0f} MB")
    assert grew < 30


def test_zip_entry_bomb_is_refused_before_reading(server):
    body = zip_with_huge_entry(300 << 20)
    reset_peak_rss(server.proc.pid)
    rss0 = peak_rss_mb(server.proc.pid)
    r = httpx.post(f"{server.url}/v1/priors/learn", files={"labeled": ("l.zip", body, "application/zip")}, timeout=60)
    check(r, (413,), "b.png")
    grew = peak_rss_mb(server.proc.pid) - rss0
    print(f"\nzip with a 300 MiB entry ({len(body) // 1024} KB): {r.status_code}, peak RSS +{grew:.0f} MB")
    assert grew < 30


def test_pickled_npz_is_a_4xx(server):
    b = io.BytesIO()
    np.savez(b, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    r = httpx.post(f"{server.url}/v1/priors/learn", files={"labeled": ("l.npz", b.getvalue(), "application/octet-stream")},
                   timeout=30)
    check(r, (400, 422), "object")
    r = httpx.post(f"{server.url}/v1/cluster", content=b.getvalue(), headers={"content-type": "application/x-npz"},
                   timeout=30)
    check(r, (400, 422), "object")


# ---------------------------------------------------------------------------------------------- faults 4 + 5
def test_png_declaring_20000x20000_is_413_json(server):
    tiny = png_declaring(20000, 20000)
    assert len(tiny) < 80
    r = httpx.post(f"{server.url}/v1/cluster", files=[("files", ("bomb.png", tiny, "image/png"))], timeout=30)
    check(r, (413,), "20000x20000")
    r = httpx.post(f"{server.url}/v1/priors/learn", timeout=30, files={"labeled": ("l.zip", labeled_zip(
        {"set/0/a.png": big_png(28), "set/1/bomb.png": tiny}), "application/zip")})
    check(r, (413,), "bomb.png")


def test_12000px_png_is_refused_without_decoding(server):
    body = big_png(12000)  # ~140 KB, 144 Mpixel
    with LoopProbe(server.url) as probe:
        t = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/cluster", files=[("files", ("big.png", body, "image/png"))], timeout=60)
        took = time.perf_counter() - t
    check(r, (413,), "12000x12000")
    print(f"\n12000x12000 PNG ({len(body) // 1024} KB): {r.status_code} in {took:.3f}s, loop stall {probe.worst:.3f}s")
    assert took < 1 and probe.worst < 0.5


def test_large_allowed_images_are_decoded_off_the_event_loop(server):
    body = big_png(4000)  # 16 Mpixel: under the cap, ~0.1-0.3 s to decode and resize
    files = [("files", (f"{i}.png", body, "image/png")) for i in range(6)]
    with LoopProbe(server.url) as probe:
        t = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/cluster", files=files, timeout=120)
        took = time.perf_counter() - t
    assert r.status_code == 200, r.text[:300]
    print(f"\n6 x 4000x4000 PNGs: {took:.2f}s to answer, loop stall {probe.worst:.3f}s")
    assert probe.worst < min(0.5, took / 3)  # before: the loop stalled for about the whole decode
