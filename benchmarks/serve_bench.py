"""Serving benchmark: raw ONNX Runtime in-process vs the HTTP service on the same work.

    python benchmarks/serve_bench.py [--model models/mnist] [--seconds 3] [--threads 0] [--repeat 1]
                                     [--out docs/results/serve_bench.json]
    python benchmarks/serve_table.py      # the README's serving table, from that file

Measures
  * /v1/generate n=256 (npz) vs raw "sample_latents + g at batch 256 + the same npz encoding";
  * /v1/cluster, 8 images a request, multipart PNG and raw .npy, at concurrency 1, 8, 32, vs raw h at
    batch 256 (the fused h.onnx when the model has one, else h1 -> h2; float32 input, no decoding);
    the same service with batching off (NEMGAN_BATCHING=false) at concurrency 32;
  * the same service with the hot-path handlers off (NEMGAN_FAST_PATH=false: /v1/generate and /v1/cluster
    through FastAPI's router, middleware and dependencies), /generate at c=1 and /cluster at c=32, so the
    hand-written request path (service/fastpath.py) is judged by what it buys (--no-fast-off skips it);
  * cold start: process start -> /v2/health/ready 200.
Prints throughput (images/s), p50/p90/p99 latency, the ratios vs the targets with PASS/MISS, and the
machine load (os.getloadavg) before and after, so readers can judge the noise; writes all of it to --out
(JSON), from which benchmarks/serve_table.py builds the README's table.

Each repeat measures the raw figures right before its HTTP scenarios, and every ratio is taken within its
repeat (raw and HTTP a few seconds apart, under the same background load); the table gives the median
ratio and its range over the repeats, which is the honest noise figure on a shared machine. The load generator is a separate process (raw sockets, keep-alive, requests pre-built),
so it does not share the server's GIL; it does share the CPU cores with the server, as the issue allows.
Starts its own uvicorn subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"generate": 0.9, "cluster_npy": 0.5, "cluster_png": 0.7, "batching": 1.3, "tail": 3.0, "cold": 3.0,
           "fast_path": 1.1}  # fast_path: what service/fastpath.py must buy over FastAPI's stack to stay


def pct(lat) -> tuple[float, float, float]:
    a = np.asarray(lat) * 1000
    return tuple(float(np.percentile(a, q)) for q in (50, 90, 99))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(tmp: Path) -> Path:
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    train(TrainConfig(out_dir=str(tmp / "run"), dry_run=True, seed=0), progress=False)
    return export_model(NemganModel.load(tmp / "run" / "best.pt"), tmp / "bench", name="bench", version="1")


# --------------------------------------------------------------------------- raw ONNX Runtime


class Raw:
    """The same model files and session options as the service, called directly."""

    def __init__(self, model_dir: Path, threads: int, batching: bool = True):
        from service.runtime import ModelRuntime
        from service.settings import Settings

        self.rt = ModelRuntime(model_dir, Settings(intra_op_threads=threads, batching=batching))
        self.rt.warmup()
        im = self.rt.image
        self.x = np.random.default_rng(0).uniform(-1, 1, (256, im.channels, im.height, im.width)).astype(np.float32)

    def generate(self, seconds: float):
        from core.images import model_to_uint8
        from core.latent import sample_latents
        from service.encoding import npz_bytes

        rt, lat, k = self.rt, [], 0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            z, modes = sample_latents(rt.spec, 256, None, 1.0, k)
            npz_bytes(images=model_to_uint8(rt.run("g", z)), modes=modes)
            lat.append(time.perf_counter() - t)
            k += 1
        return (256 * len(lat) / sum(lat), *pct(lat))

    def cluster(self, seconds: float, fused: bool = True, batch: int = 256):
        rt, lat, x = self.rt, [], np.ascontiguousarray(self.x[:batch])
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            if fused:
                rt.run_h(x)
            else:
                rt.run("h2", rt.run("h1", x))
            lat.append(time.perf_counter() - t)
        return (batch * len(lat) / sum(lat), *pct(lat))


# --------------------------------------------------------------------------- load generator (own process)


async def _one(reader, writer, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    i = low.find(b"\r\ncontent-length:")
    if i < 0:
        raise RuntimeError("response without Content-Length")
    j = low.index(b"\r\n", i + 2)
    await reader.readexactly(int(low[i + 17:j]))
    return status


async def _load(port: int, req: bytes, concurrency: int, seconds: float):
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    for r, w in conns:  # warm every connection
        await _one(r, w, req)
    lat: list[float] = []
    errors = 0
    t_start = time.perf_counter()
    t_end = t_start + seconds

    async def worker(r, w):
        nonlocal errors
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            status = await _one(r, w, req)
            if status != 200:
                errors += 1
                continue
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(r, w) for r, w in conns))
    wall = time.perf_counter() - t_start
    for _, w in conns:
        w.close()
    return len(lat), wall, lat, errors


def run_load(port: int, req: bytes, concurrency: int, seconds: float):
    """Runs in the load-generator process."""
    try:
        import uvloop

        return uvloop.run(_load(port, req, concurrency, seconds))
    except ImportError:
        return asyncio.run(_load(port, req, concurrency, seconds))


def http_request(path: str, body: bytes, content_type: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def multipart(files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "nemganbenchboundary7b3c"
    out = io.BytesIO()
    for name, data, ctype in files:
        out.write(f'--{boundary}\r\ncontent-disposition: form-data; name="files"; filename="{name}"\r\n'
                  f"content-type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def cluster_requests() -> tuple[bytes, bytes]:
    """The /v1/cluster requests of the benchmark: 8 images (seeded uniform noise, 28x28), as .npy and PNG."""
    from PIL import Image

    x8 = (np.random.default_rng(0).random((8, 28, 28)) * 255).astype(np.uint8)
    b = io.BytesIO()
    np.save(b, x8)
    npy_req = http_request("/v1/cluster", b.getvalue(), "application/x-npy")
    pngs = []
    for i, im in enumerate(x8):
        b = io.BytesIO()
        Image.fromarray(im).save(b, "PNG")
        pngs.append((f"{i}.png", b.getvalue(), "image/png"))
    return npy_req, http_request("/v1/cluster", *multipart(pngs))


# --------------------------------------------------------------------------- server


class Server:
    """The service as `nemgan serve` runs it (the guarded protocol of service/server.py)."""

    def __init__(self, model_dir: Path, var: Path, batching: bool, threads: int, fast_path: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
        env.update(PYTHONPATH=str(REPO), NEMGAN_VAR_DIR=str(var), NEMGAN_MODEL_DIRS=str(model_dir),
                   NEMGAN_BATCHING=str(batching).lower(), NEMGAN_INTRA_OP_THREADS=str(threads),
                   NEMGAN_MAX_QUEUE="4096", NEMGAN_FAST_PATH=str(fast_path).lower())
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
                                      "--http", "service.server:GuardedHttpToolsProtocol",
                                      "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                                     cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> float:
        req = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(req)
                    if s.recv(64)[9:12] == b"200":
                        return time.perf_counter() - self.t0
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "models" / "mnist")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads for raw and service (0 = default)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the whole HTTP series (medians are reported)")
    ap.add_argument("--no-off", action="store_true", help="skip the batching-off server")
    ap.add_argument("--no-fast-off", action="store_true", help="skip the fast-path-off server")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "serve_bench.json",
                    help="where the results go (JSON; benchmarks/serve_table.py renders them)")
    ap.add_argument("--export-tiny", type=Path, help=argparse.SUPPRESS)  # internal: run in a child process
    args = ap.parse_args()
    if args.export_tiny:
        print(tiny_model(args.export_tiny))
        return
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = args.model
    if not (model / "manifest.json").is_file():
        print(f"{model} not found: using a dry-run model exported to {tmp}")
        # exported in a child process, so this one (the raw baseline) never loads torch and its threads
        out = subprocess.run([sys.executable, __file__, "--export-tiny", str(tmp)], check=True, capture_output=True,
                             text=True)
        model = Path(out.stdout.strip().splitlines()[-1])

    npy_req, png_req = cluster_requests()
    gen_req = http_request("/v1/generate", b'{"n": 256, "format": "npz"}', "application/json")

    lg = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    lg.submit(time.sleep, 0).result()  # start it before anything is timed

    def http(port, req, conc, images):
        n, wall, lat, errors = lg.submit(run_load, port, req, conc, args.seconds).result()
        return (images * n / wall, *pct(lat or [0.0]), errors)

    raw = Raw(model, args.threads)
    fused = True  # the service loads only models with the fused h.onnx (service/runtime.py)
    raws = {"generate": [], "cluster": []}
    raw_hops = raw.cluster(args.seconds, fused=False) if fused else None
    raw_b8 = raw.cluster(args.seconds, fused, batch=8)  # what batching saves in ONNX Runtime itself

    runs: list[dict] = []
    colds = {True: [], False: []}
    for rep in range(args.repeat):
        res = {}
        raws["generate"].append(raw.generate(args.seconds))
        raws["cluster"].append(raw.cluster(args.seconds, fused))
        for batching in ((True,) if args.no_off else (True, False)):
            srv = Server(model, tmp / f"var-{batching}-{rep}", batching, args.threads)
            colds[batching].append(srv.wait_ready())
            try:
                tag = "on" if batching else "off"
                if batching:
                    res["gen"] = http(srv.port, gen_req, 1, 256)
                for conc in ((1, 8, 32) if batching else (32,)):
                    for name, req in (("npy", npy_req), ("png", png_req)):
                        res[(tag, name, conc)] = http(srv.port, req, conc, 8)
            finally:
                srv.stop()
        if not args.no_fast_off:  # batching on, the hot-path handlers off: FastAPI's own stack
            srv = Server(model, tmp / f"var-slow-{rep}", True, args.threads, fast_path=False)
            srv.wait_ready()
            try:
                res["gen_slow"] = http(srv.port, gen_req, 1, 256)
                for name, req in (("npy", npy_req), ("png", png_req)):
                    res[("slow", name, 32)] = http(srv.port, req, 32, 8)
            finally:
                srv.stop()
        runs.append(res)
    lg.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()

    def med(key):  # element-wise median over the repeats
        return tuple(np.median([r[key][i] for r in runs]) for i in range(5))

    import uvicorn.config as uc

    loop_impl = "uvloop" if _has("uvloop") else "asyncio"
    http_impl = "httptools" if _has("httptools") else "h11"
    print(f"\nmodel {model}   cores {os.cpu_count()}   {args.seconds:g}s per scenario   repeat {args.repeat}"
          f"   uvicorn {uc.__name__.split('.')[0]} loop={loop_impl} http={http_impl}")
    print(f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at end "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (other processes compete for the cores)\n")
    print(f"{'scenario':52s} {'img/s':>8s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'errors':>6s}")
    hname = "h (fused h.onnx)" if fused else "h1 -> h2"
    for label, key in (("raw sample + g + npz, batch 256", "generate"), (f"raw {hname}, batch 256", "cluster")):
        for rep, r in enumerate(raws[key]):
            print(f"{label + ' (repeat ' + str(rep + 1) + ')':52s} {r[0]:8.0f} {r[1]:8.2f} {r[2]:8.2f} {r[3]:8.2f} {0:6d}")
    if raw_hops:
        r = raw_hops
        print(f"{'raw h1 -> h2 (two calls), batch 256':52s} {r[0]:8.0f} {r[1]:8.2f} {r[2]:8.2f} {r[3]:8.2f} {0:6d}")
    r = raw_b8
    print(f"{'raw ' + hname + ', batch 8 (no batching)':52s} {r[0]:8.0f} {r[1]:8.2f} {r[2]:8.2f} {r[3]:8.2f} {0:6d}")
    rows = [("HTTP /generate n=256 npz, c=1", "gen")]
    for conc in (1, 8, 32):
        for name in ("npy", "png"):
            rows.append((f"HTTP /cluster 8 img {name}, c={conc}, batching on", ("on", name, conc)))
    if not args.no_off:
        for name in ("npy", "png"):
            rows.append((f"HTTP /cluster 8 img {name}, c=32, batching off", ("off", name, 32)))
    if not args.no_fast_off:
        rows.append(("HTTP /generate n=256 npz, c=1, fast path off", "gen_slow"))
        for name in ("npy", "png"):
            rows.append((f"HTTP /cluster 8 img {name}, c=32, fast path off", ("slow", name, 32)))
    for label, key in rows:
        thr, p50, p90, p99, err = med(key)
        spread = ""
        if args.repeat > 1:
            v = [r[key][0] for r in runs]
            spread = f"   img/s over repeats {min(v):.0f}..{max(v):.0f}"
        print(f"{label:52s} {thr:8.0f} {p50:8.2f} {p90:8.2f} {p99:8.2f} {int(err):6d}{spread}")

    def ratio(num, den):
        """median and range over the repeats of num/den, each a function of the repeat index."""
        v = [num(i) / den(i) for i in range(args.repeat)]
        return float(np.median(v)), min(v), max(v)

    thr = lambda key: (lambda i: runs[i][key][0])  # noqa: E731
    raw_thr = lambda key: (lambda i: raws[key][i][0])  # noqa: E731
    checks = [("/generate n=256 vs raw (same sampling + npz encoding)", ratio(thr("gen"), raw_thr("generate")),
               ">=", TARGETS["generate"])]
    for name in ("npy", "png"):
        on = ("on", name, 32)
        checks.append((f"/cluster {name} c=32 vs raw h batch 256", ratio(thr(on), raw_thr("cluster")), ">=",
                       TARGETS[f"cluster_{name}"]))
        if not args.no_off:
            checks.append((f"/cluster {name} c=32 batching on vs off", ratio(thr(on), thr(("off", name, 32))), ">=",
                           TARGETS["batching"]))
        checks.append((f"/cluster {name} c=32 p99/p50", ratio(lambda i: runs[i][on][3], lambda i: runs[i][on][1]),
                       "<=", TARGETS["tail"]))
        if not args.no_fast_off:
            checks.append((f"/cluster {name} c=32 fast path on vs off", ratio(thr(on), thr(("slow", name, 32))),
                           ">=", TARGETS["fast_path"]))
    if not args.no_fast_off:
        checks.append(("/generate n=256 c=1 fast path on vs off", ratio(thr("gen"), thr("gen_slow")), ">=",
                       TARGETS["fast_path"]))
    for batching, v in colds.items():
        if v:
            checks.append((f"cold start to ready, batching {'on' if batching else 'off'} (s)",
                           (max(v), min(v), max(v)), "<", TARGETS["cold"]))
    print(f"\ntargets (median over {args.repeat} repeat(s), range in brackets; cold start: the worst)")
    targets = []
    for label, (val, lo, hi), op, tgt in checks:
        ok = val >= tgt if op == ">=" else val <= tgt if op == "<=" else val < tgt
        print(f"  {label:58s} {val:6.2f}  [{lo:5.2f} .. {hi:5.2f}]  ({op} {tgt})  {'PASS' if ok else 'MISS'}")
        targets.append({"target": label, "value": float(val), "low": float(lo), "high": float(hi), "op": op,
                        "goal": tgt, "pass": bool(ok)})
    scen = [{"scenario": label, "images_per_s": float(r[0]), "p50_ms": float(r[1]), "p90_ms": float(r[2]),
             "p99_ms": float(r[3])} for label, key in (("raw sample + g + npz, batch 256", "generate"),
                                                        (f"raw {hname}, batch 256", "cluster"))
            for r in [tuple(np.median([x[i] for x in raws[key]]) for i in range(4))]]
    scen.append({"scenario": f"raw {hname}, batch 8", "images_per_s": float(raw_b8[0]), "p50_ms": float(raw_b8[1]),
                 "p90_ms": float(raw_b8[2]), "p99_ms": float(raw_b8[3])})
    for label, key in rows:
        thr_, p50, p90, p99, err = med(key)
        scen.append({"scenario": label, "images_per_s": float(thr_), "p50_ms": float(p50), "p90_ms": float(p90),
                     "p99_ms": float(p99), "errors": int(err)})
    import platform

    result = {"command": " ".join(["python", "benchmarks/serve_bench.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "model": str(model),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_average_start": [round(v, 2) for v in load0],
                          "load_average_end": [round(v, 2) for v in load1]},
              "seconds": args.seconds, "repeat": args.repeat, "uvicorn": {"loop": loop_impl, "http": http_impl},
              "scenarios": scen, "targets": targets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


if __name__ == "__main__":
    main()
