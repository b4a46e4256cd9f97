"""The HTTP front of a real `nemgan serve` process (service/server.py, service/security.py): request heads over
64 KiB or 100 fields refused with 431 at once, without stalling other connections or growing memory;
cross-site writes refused while auth is off, and the start-up log saying so; security headers."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from svc_helpers import REPO, Server, base_env, free_port

MNIST = REPO / "models" / "mnist"


class Serve(Server):
    """`nemgan serve` itself (python -m cli serve), not a bare uvicorn: the guard is part of the command."""

    def __init__(self, env: dict, log: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(self.port),
                                      "--model", str(MNIST), "--log-level", "info", *args],
                                     cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("front")
    s = Serve(base_env(d / "var", [MNIST]), d / "serve.log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _raw(port: int, head: bytes, timeout: float = 20.0) -> tuple[str, bytes, float]:
    """Send a raw request head, then read the answer: ('answered', bytes, s) or ('closed', partial bytes, s)
    when the server closed the connection before taking all of it (the send failed)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head)
        except OSError:  # reset while sending: the server refused before reading everything
            return "closed", b"", time.perf_counter() - t0
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if data.startswith(b"HTTP/1.1 200") and data.endswith(b"}"):
                    break
        except OSError:
            return "closed", data, time.perf_counter() - t0
    return "answered", data, time.perf_counter() - t0


def _status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def _body(resp: bytes) -> dict:
    return orjson.loads(resp.split(b"\r\n\r\n", 1)[1])


def _get(path: str, extra: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Connection: close\r\n\r\n"


def test_head_over_64_kib_gets_431_json(srv):
    how, resp, _ = _raw(srv.port, _get("/v2/health/live", b"X-Big: " + b"a" * 1_000_000 + b"\r\n"))
    assert how == "answered", how
    assert _status(resp) == 431, resp[:200]
    body = _body(resp)
    assert body["error"] == "request header fields too large" and "65536 bytes" in body["detail"]
    assert b"x-content-type-options: nosniff" in resp.lower()


def test_too_many_header_fields_get_431(srv):
    many = b"".join(b"X-F%d: v\r\n" % i for i in range(150))  # 1.6 KB: under the size cap, over the count cap
    how, resp, _ = _raw(srv.port, _get("/v2/health/live", many))
    assert how == "answered" and _status(resp) == 431, resp[:200]
    assert _body(resp)["detail"] == "more than 100 header fields"


def test_heads_under_the_limits_and_bodies_pass(srv):
    # 60 KiB of header in 90 fields: served
    fields = b"".join(b"X-F%d: " % i + b"b" * 660 + b"\r\n" for i in range(90))
    assert 55_000 < len(fields) < 64 * 1024 - 200
    how, resp, _ = _raw(srv.port, _get("/v2/health/live", fields))
    assert _status(resp) == 200, resp[:200]
    # a 1 MB body right behind its head (one write): the body is not the head, and no 431
    body = b"\x00" * 1_000_000
    req = (b"POST /v1/cluster HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    how, resp, _ = _raw(srv.port, req)
    assert _status(resp) == 400, resp[:300]  # not a .npy: the endpoint's own 400, after the whole body was read
    # pipelined requests on one connection, each head counted on its own
    one = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"c" * 40_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.sendall(one * 3)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert b"431" not in data


def _chunked(path: bytes, chunks: list[bytes], trailer: bytes = b"") -> bytes:
    head = (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    return head + b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks) + b"0\r\n" + trailer + b"\r\n"


def test_chunked_bodies_pass_and_huge_trailers_get_431(srv):
    # 1 MB in 512 KiB chunks: chunk data is body, not head
    how, resp, _ = _raw(srv.port, _chunked(b"/v1/cluster", [b"\x00" * 524288, b"\x00" * 524288]))
    assert _status(resp) == 400, resp[:300]  # the endpoint's own answer (not a .npy) after the whole body
    how, resp, _ = _raw(srv.port, _chunked(b"/v1/cluster", [b"\x00" * 100], b"X-Checksum: abc\r\n"))
    assert _status(resp) == 400, resp[:300]
    # a trailer section over the cap (httptools would concatenate it like a header): 431, or closed under us
    how, resp, _ = _raw(srv.port, _chunked(b"/v1/cluster", [b"\x00" * 100], b"X-T: " + b"t" * 2_000_000 + b"\r\n"))
    assert how == "closed" or _status(resp) == 431, resp[:300]
    if how == "answered":
        assert "trailer section exceeds 65536 bytes" in _body(resp)["detail"]


def test_flood_is_refused_at_once_and_others_are_served(srv):
    """Four connections sending 40 MB header values (before the guard: seconds of a stalled event loop per
    connection, every other client waiting, and hundreds of MB of RSS) while a client checks health."""
    rss0 = _rss_kb(srv.proc.pid)
    outcomes: list[tuple[str, bytes, float]] = []

    def flood():
        outcomes.append(_raw(srv.port, _get("/v2/health/live", b"X-Flood: " + b"f" * 40_000_000 + b"\r\n")))

    threads = [threading.Thread(target=flood) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    health = []
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        while any(t.is_alive() for t in threads) or len(health) < 5:
            h0 = time.perf_counter()
            assert c.get("/v2/health/live").status_code == 200
            health.append(time.perf_counter() - h0)
    for t in threads:
        t.join()
    total = time.perf_counter() - t0
    assert len(outcomes) == 4
    for how, resp, _ in outcomes:  # refused: a 431, or the connection closed under the sender
        assert how == "closed" or _status(resp) == 431, (how, resp[:200])
    assert total < 10, f"the flood took {total:.1f} s"  # the lingering close is 2 s; unguarded: minutes
    assert max(health) < 5, health
    grew_mb = (_rss_kb(srv.proc.pid) - rss0) / 1024
    assert grew_mb < 60, f"RSS grew {grew_mb:.0f} MB"  # unguarded: + several hundred MB


def test_start_up_log_says_auth_is_off_and_what_it_means(srv):
    log = srv.log.read_text()
    assert "auth is OFF (NEMGAN_API_KEY unset)" in log and "gets 403" in log
    assert "request heads over 64 KiB or 100 header fields refused (431)" in log


def test_start_up_log_with_a_key(tmp_path):
    s = Serve(base_env(tmp_path / "var", [MNIST], NEMGAN_API_KEY="k"), tmp_path / "serve.log")
    try:
        s.wait_ready()
    finally:
        s.stop()
    log = s.log.read_text()
    assert "auth is on" in log and "auth is OFF" not in log


# ---------------------------------------------------------------------------------------------- cross-site writes
EVIL = "http://evil.example"


def _refused(r: httpx.Response) -> bool:
    if r.status_code != 403:
        return False
    body = r.json()
    return body["error"] == "cross-origin request refused" and "NEMGAN_API_KEY" in body["detail"]


def test_cross_site_writes_are_refused_while_auth_is_off(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        # a form POST from another site to activate (before: 200, version switched)
        r = c.post("/v1/models/mnist/versions/1/activate", headers={"Origin": EVIL},
                   data={"x": "1"})
        assert _refused(r), (r.status_code, r.text)
        # a cross-site multipart POST to prior learning (before: 202, a job queued)
        r = c.post("/v1/priors/learn", headers={"Origin": EVIL}, files={"labeled": ("l.npz", b"PK\x03\x04")})
        assert _refused(r), (r.status_code, r.text)
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Origin": EVIL}))
        assert _refused(c.delete("/v1/jobs/0123456789abcdef", headers={"Origin": EVIL}))
        assert _refused(c.post("/v1/generate", json={"n": 1}, headers={"Origin": EVIL}))  # the fast path too
        # Referer when there is no Origin; an opaque origin ("null": sandboxed frames, file: pages)
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Referer": EVIL + "/page.html"}))
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Origin": "null"}))
        # same host name but another port, or another name for the same machine: other origins
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Origin": f"http://127.0.0.1:{srv.port + 1}"}))
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Origin": f"http://localhost:{srv.port}"}))
        # no Origin/Referer but a browser saying cross-site
        assert _refused(c.post("/v1/models/mnist/rollback", headers={"Sec-Fetch-Site": "cross-site"}))


def test_same_origin_and_non_browser_writes_pass(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        own = {"Origin": srv.url}
        # the playground's own page: the endpoint answers (409: nothing to roll back to), not the origin check
        assert c.post("/v1/models/mnist/rollback", headers=own).status_code == 409
        assert c.post("/v1/models/mnist/rollback", headers={"Referer": srv.url + "/"}).status_code == 409
        assert c.post("/v1/models/mnist/versions/1/activate", headers=own).status_code == 200
        assert c.post("/v1/generate", json={"n": 1}, headers=own).status_code == 200
        # curl / SDKs: no Origin at all
        assert c.post("/v1/models/mnist/versions/1/activate").status_code == 200
        # reads are never refused (no CORS is served, so another site cannot read the answer anyway)
        assert c.get("/v1/models", headers={"Origin": EVIL}).status_code == 200


def test_allowed_origins_and_api_key(tmp_path):
    env = base_env(tmp_path / "var", [MNIST], NEMGAN_ALLOWED_ORIGINS="https://app.example, http://10.0.0.5:3000")
    s = Serve(env, tmp_path / "serve.log")
    try:
        s.wait_ready()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for origin in ("https://app.example", "https://APP.example:443", "http://10.0.0.5:3000"):
                assert c.post("/v1/models/mnist/rollback", headers={"Origin": origin}).status_code == 409, origin
            for origin in ("http://app.example", "https://app.example:8443", EVIL):
                assert _refused(c.post("/v1/models/mnist/rollback", headers={"Origin": origin})), origin
    finally:
        s.stop()
    # with a key, the key decides: browsers cannot send it cross-site
    s = Serve(base_env(tmp_path / "var2", [MNIST], NEMGAN_API_KEY="k"), tmp_path / "serve2.log")
    try:
        s.wait_ready()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.post("/v1/models/mnist/rollback", headers={"Origin": EVIL}).status_code == 401
            r = c.post("/v1/models/mnist/rollback", headers={"Origin": EVIL, "Authorization": "Bearer k"})
            assert r.status_code == 409
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------- security headers
PAGES = ("/", "/playground/app.js", "/playground/style.css", "/docs", "/docs/oauth2-redirect", "/redoc")


def test_nosniff_everywhere_and_csp_on_pages(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        responses = {
            "GET /v1/models": c.get("/v1/models"),
            "GET /v2/health/live": c.get("/v2/health/live"),
            "GET /metrics": c.get("/metrics"),
            "GET /openapi.json": c.get("/openapi.json"),
            "GET /nowhere (404)": c.get("/nowhere"),
            "POST /v1/generate (fast path)": c.post("/v1/generate", json={"n": 1}),
            "POST /v1/generate (422)": c.post("/v1/generate", json={"n": 0}),
            "POST /v1/cluster (415)": c.post("/v1/cluster", content=b"x", headers={"content-type": "text/plain"}),
            "POST /v2/models/mnist-g/infer (400)": c.post("/v2/models/mnist-g/infer", content=b"{}"),
            **{f"GET {p}": c.get(p) for p in PAGES},
        }
    for what, r in responses.items():
        assert r.headers.get("x-content-type-options") == "nosniff", what
    for p in PAGES:
        r = responses[f"GET {p}"]
        assert r.status_code == 200, p
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (p, csp)
        assert "'unsafe-eval'" not in csp, (p, csp)
        assert r.headers["x-frame-options"] == "DENY"
    # the playground takes nothing inline; the docs allow their one inline script by hash only
    assert "'unsafe-inline'" not in responses["GET /"].headers["content-security-policy"]
    docs = responses["GET /docs"].headers["content-security-policy"]
    script_src = next(d for d in docs.split(";") if d.strip().startswith("script-src"))
    assert "'sha256-" in script_src and "'unsafe-inline'" not in script_src
    assert "content-security-policy" not in responses["GET /v1/models"].headers  # JSON needs none
