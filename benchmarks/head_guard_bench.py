"""What the request-head guard (service/server.py) costs, and what it saves.

    python benchmarks/head_guard_bench.py [--seconds 3] [--repeat 3] [--concurrency 8] [--flood-mb 20]
                                          [--out docs/results/head_guard_bench.json]

Two uvicorn servers of the same app (models/mnist) side by side: uvicorn's own httptools protocol ("plain")
and `nemgan serve`'s GuardedHttpToolsProtocol ("guarded"). In interleaved rounds, a load generator in its own
process (serve_bench's: raw sockets, keep-alive, pre-built requests) drives each at the same concurrency:

  * GET /v2/health/live          the smallest request: the protocol's share of the work is largest here;
  * POST /v1/generate n=1 (json) a small hot-path request;
  * POST /v1/cluster 8 PNGs      a multipart body of ~6 KB (the body passes the guard, uncounted).

Per scenario: requests/s seen by the client, and the server's CPU time per request (utime + stime of the
server process over the run, from /proc), which is the steadier figure on a shared machine. The ratios
guarded / plain are the cost (1.00 = free). Then the flood the guard is for: one connection sends a header
of --flood-mb MB while another checks /v2/health/live; the time to the answer, the slowest health check and
the RSS growth, per server.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_bench import free_port, http_request, multipart, run_load  # noqa: E402

PROTOCOLS = {"plain": "httptools", "guarded": "service.server:GuardedHttpToolsProtocol"}
TICK = os.sysconf("SC_CLK_TCK")


def pngs8() -> list[tuple[str, bytes, str]]:
    """serve_bench's 8 PNGs (seeded uniform noise, 28x28)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for i, im in enumerate((np.random.default_rng(0).random((8, 28, 28)) * 255).astype(np.uint8)):
        b = io.BytesIO()
        Image.fromarray(im).save(b, "PNG")
        out.append((f"{i}.png", b.getvalue(), "image/png"))
    return out


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, protocol: str, var: Path):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
        env.update(PYTHONPATH=str(REPO), NEMGAN_VAR_DIR=str(var), NEMGAN_MODEL_DIRS=str(REPO / "models" / "mnist"),
                   NEMGAN_INTRA_OP_THREADS="1", NEMGAN_MAX_QUEUE="4096")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--http", protocol, "--factory",
                                      "service.app:create_app", "--port", str(self.port), "--log-level", "error",
                                      "--no-access-log"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        req = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(req)
                    if s.recv(64)[9:12] == b"200":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server ({protocol}) exited")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def health_s(port: int) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    return time.perf_counter() - t


def flood(srv: Server, mb: int) -> dict:
    """One connection sends an mb-MB header value; meanwhile /v2/health/live is timed on other connections."""
    rss0 = rss_mb(srv.proc.pid)
    result: dict = {}

    def send():
        t = time.perf_counter()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=300) as s:
            head = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-flood: " + b"f" * (mb << 20) + b"\r\n\r\n"
            try:
                s.sendall(head)
                answer = s.recv(64)
            except OSError:
                answer = b"(connection closed while sending)"
        result["answer"] = answer[:40].decode("latin-1").split("\r\n")[0]
        result["answer_s"] = round(time.perf_counter() - t, 3)

    th = threading.Thread(target=send)
    th.start()
    checks = []
    time.sleep(0.05)
    while th.is_alive() or not checks:
        checks.append(health_s(srv.port))
        result["peak_rss_mb"] = max(result.get("peak_rss_mb", 0.0), rss_mb(srv.proc.pid) - rss0)
    th.join()
    result.update(health_checks=len(checks), slowest_health_s=round(max(checks), 3),
                  rss_growth_mb=round(rss_mb(srv.proc.pid) - rss0, 1), peak_rss_mb=round(result["peak_rss_mb"], 1))
    return result


class _NullTransport:
    def write(self, b): pass
    def close(self): pass
    def is_closing(self): return False
    def pause_reading(self): pass
    def resume_reading(self): pass
    def get_extra_info(self, k, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(k, default)


def parse_cost(rounds: int = 15, n: int = 20000) -> dict:
    """The protocols alone, in this process: microseconds to take in one typical request (6 header fields, a
    small JSON body) through data_received and the parser callbacks, with no app behind them. Best of
    `rounds` interleaved runs: the least disturbed by other processes."""
    import asyncio

    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from service.server import GuardedHttpToolsProtocol

    async def app(scope, receive, send):
        pass

    req = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n"
           b"Content-Type: application/json\r\nContent-Length: 19\r\nOrigin: http://127.0.0.1:8000\r\n\r\n"
           b'{"n": 1, "seed": 1}')

    async def run() -> dict:
        cfg = Config(app=app, log_level="error")
        cfg.load()
        protos = {}
        for k, cls in (("plain", HttpToolsProtocol), ("guarded", GuardedHttpToolsProtocol)):
            p = cls(cfg, ServerState(), {}, _loop=asyncio.get_running_loop())
            p._start_asgi_task = lambda cycle, app: None  # parse only: no request is run
            p.connection_made(_NullTransport())
            protos[k] = p
        best = dict.fromkeys(protos, float("inf"))
        for _ in range(rounds):
            for k, p in protos.items():
                t = time.perf_counter()
                for _ in range(n):
                    p.data_received(req)
                    p.cycle = None
                best[k] = min(best[k], (time.perf_counter() - t) / n * 1e6)
        return best

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--flood-mb", type=int, default=20, help="header size of the flood scenario (0 = skip)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    png_req = http_request("/v1/cluster", *multipart(pngs8()))
    scenarios = {
        "GET /v2/health/live": b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        "POST /v1/generate n=1": http_request("/v1/generate", b'{"n": 1, "seed": 1}', "application/json"),
        "POST /v1/cluster 8 PNGs": png_req,
    }
    load0 = os.getloadavg()
    parse = parse_cost()
    print(f"parse only (best of 15): plain {parse['plain']:.2f} us/request, guarded {parse['guarded']:.2f} "
          f"(+{parse['guarded'] - parse['plain']:.2f} us)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="head-guard-"))
    servers = {k: Server(p, tmp / k) for k, p in PROTOCOLS.items()}
    lg = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    rows: dict = {s: {k: [] for k in PROTOCOLS} for s in scenarios}
    try:
        for r in range(args.repeat):
            for name, req in scenarios.items():
                order = list(PROTOCOLS) if r % 2 == 0 else list(reversed(PROTOCOLS))  # interleaved, alternated
                for k in order:
                    srv = servers[k]
                    c0 = cpu_s(srv.proc.pid)
                    n, wall, _lat, errors = lg.submit(run_load, srv.port, req, args.concurrency, args.seconds).result()
                    cpu = cpu_s(srv.proc.pid) - c0
                    rows[name][k].append({"rps": n / wall, "cpu_us": 1e6 * cpu / max(n, 1), "errors": errors})
                    print(f"round {r + 1} {name:26s} {k:8s} {n / wall:8.0f} req/s  {1e6 * cpu / max(n, 1):7.0f} "
                          f"us CPU/req  errors {errors}", flush=True)
        floods = {k: flood(srv, args.flood_mb) for k, srv in servers.items()} if args.flood_mb else {}
    finally:
        lg.shutdown()
        for srv in servers.values():
            srv.stop()
    load1 = os.getloadavg()

    print(f"\nhead guard cost, median of {args.repeat} interleaved rounds, c={args.concurrency}, "
          f"{args.seconds:g} s each (load average {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'scenario':26s} {'plain req/s':>12s} {'guarded':>9s} {'ratio':>6s}   {'plain us/req':>12s} "
          f"{'guarded':>8s} {'ratio':>6s}")
    summary = {}
    for name, by in rows.items():
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "cpu_us")} for k, v in by.items()}
        rps_ratio = med["guarded"]["rps"] / med["plain"]["rps"]
        cpu_ratio = med["guarded"]["cpu_us"] / med["plain"]["cpu_us"]
        cpu_ratios = [g["cpu_us"] / p["cpu_us"] for g, p in zip(by["guarded"], by["plain"])]
        summary[name] = {"median": med, "rps_ratio": round(rps_ratio, 3), "cpu_ratio": round(cpu_ratio, 3),
                         "cpu_ratio_per_round": [round(x, 3) for x in cpu_ratios], "rounds": by}
        print(f"{name:26s} {med['plain']['rps']:12.0f} {med['guarded']['rps']:9.0f} {rps_ratio:6.2f}   "
              f"{med['plain']['cpu_us']:12.0f} {med['guarded']['cpu_us']:8.0f} {cpu_ratio:6.2f}")
    print(f"{'parse only (in-process)':26s} {'':12s} {'':9s} {'':6s}   {parse['plain']:12.2f} "
          f"{parse['guarded']:8.2f} {parse['guarded'] / parse['plain']:6.2f}")
    if floods:
        print(f"\nflood: one {args.flood_mb} MB header while /v2/health/live is checked on other connections")
        for k, f in floods.items():
            print(f"  {k:8s} answer {f['answer']!r} after {f['answer_s']} s; slowest of {f['health_checks']} "
                  f"health checks {f['slowest_health_s']} s; RSS +{f['rss_growth_mb']} MB (peak +{f['peak_rss_mb']})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python benchmarks/head_guard_bench.py " + " ".join(sys.argv[1:]),
            "seconds": args.seconds, "repeat": args.repeat, "concurrency": args.concurrency,
            "load_average": [load0[0], load1[0]], "cores": os.cpu_count(), "scenarios": summary,
            "parse_only_us": {k: round(v, 3) for k, v in parse.items()},
            "flood_mb": args.flood_mb, "flood": floods}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
