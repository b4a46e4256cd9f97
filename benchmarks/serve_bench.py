"""Serving benchmark: raw ONNX Runtime in-process vs the HTTP service on the same work.

    python benchmarks/serve_bench.py [--model models/mnist] [--seconds 3] [--threads 0]

Measures
  * /v1/generate n=256 (npz) vs raw sample_latents + g at batch 256;
  * /v1/cluster, 8 images a request, multipart PNG and raw .npy, at concurrency 1, 8, 32, vs raw h1+h2 at
    batch 256; the same with batching off (NEMGAN_BATCHING=false) at concurrency 32;
  * cold start: process start -> /v2/health/ready 200.
Prints throughput (images/s), p50/p90/p99 latency and the ratios. Starts its own uvicorn subprocesses.
The load generator runs in this process, on the same cores as the server (as a laptop would).
"""

from __future__ import annotations

import argparse
import asyncio
import io
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


def pct(lat: list[float]) -> tuple[float, float, float]:
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


def raw_bench(model_dir: Path, threads: int, seconds: float) -> dict:
    from service.runtime import ModelRuntime
    from service.settings import Settings
    from training.manifest import sample_latents

    rt = ModelRuntime(model_dir, Settings(intra_op_threads=threads))
    rt.warmup()
    out = {}
    lat, t_end, k = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        z, _ = sample_latents(rt.spec, 256, None, 1.0, k)
        rt.run("g", z)
        lat.append(time.perf_counter() - t)
        k += 1
    out["generate"] = (256 * len(lat) / sum(lat), *pct(lat))
    x = np.random.default_rng(0).uniform(-1, 1, (256, rt.image.channels, rt.image.height, rt.image.width)).astype(
        np.float32)
    lat, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        rt.run("h2", rt.run("h1", x))
        lat.append(time.perf_counter() - t)
    out["cluster"] = (256 * len(lat) / sum(lat), *pct(lat))
    return out


class Server:
    def __init__(self, model_dir: Path, var: Path, batching: bool, threads: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
        env.update(PYTHONPATH=str(REPO), NEMGAN_VAR_DIR=str(var), NEMGAN_MODEL_DIRS=str(model_dir),
                   NEMGAN_BATCHING=str(batching).lower(), NEMGAN_INTRA_OP_THREADS=str(threads),
                   NEMGAN_MAX_QUEUE="4096")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app",
                                      "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                                     cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> float:
        import httpx

        while True:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


async def load(url: str, make_req, concurrency: int, seconds: float, images_per_req: int):
    import httpx

    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        for _ in range(2):  # warm the connections
            await make_req(c)
        t_end = time.perf_counter() + seconds
        t_start = time.perf_counter()

        async def worker():
            nonlocal errors
            while time.perf_counter() < t_end:
                t = time.perf_counter()
                r = await make_req(c)
                if r.status_code != 200:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t_start
    return (images_per_req * len(lat) / wall, *pct(lat), errors)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=REPO / "models" / "mnist")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = args.model
    if not (model / "manifest.json").is_file():
        print(f"{model} not found: using a dry-run model exported to {tmp}")
        model = tiny_model(tmp)

    from PIL import Image

    x8 = (np.random.default_rng(0).random((8, 28, 28)) * 255).astype(np.uint8)
    npy = io.BytesIO()
    np.save(npy, x8)
    npy = npy.getvalue()
    pngs = []
    for im in x8:
        b = io.BytesIO()
        Image.fromarray(im).save(b, "PNG")
        pngs.append(b.getvalue())

    def gen_req(c):
        return c.post("/v1/generate", json={"n": 256, "format": "npz"})

    def npy_req(c):
        return c.post("/v1/cluster", content=npy, headers={"content-type": "application/x-npy"})

    def png_req(c):
        return c.post("/v1/cluster", files=[("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)])

    raw = raw_bench(model, args.threads, args.seconds)
    rows = [("raw ORT g, batch 256 (sample+g)", *raw["generate"], 0),
            ("raw ORT h1+h2, batch 256", *raw["cluster"], 0)]
    results = {}
    colds = []
    for batching in (True, False):
        srv = Server(model, tmp / f"var-{batching}", batching, args.threads)
        colds.append(srv.wait_ready())
        try:
            tag = "on" if batching else "off"
            if batching:
                results["gen"] = asyncio.run(load(srv.url, gen_req, 1, args.seconds, 256))
                rows.append(("HTTP /generate n=256 npz, c=1", *results["gen"]))
            for conc in ((1, 8, 32) if batching else (32,)):
                for name, fn in (("npy", npy_req), ("png", png_req)):
                    r = asyncio.run(load(srv.url, fn, conc, args.seconds, 8))
                    results[(tag, name, conc)] = r
                    rows.append((f"HTTP /cluster 8 img {name}, c={conc}, batching {tag}", *r))
        finally:
            srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmodel {model}   cores {os.cpu_count()}   {args.seconds:.0f}s per scenario\n")
    print(f"{'scenario':48s} {'img/s':>9s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'errors':>6s}")
    for name, thr, p50, p90, p99, err in rows:
        print(f"{name:48s} {thr:9.0f} {p50:8.2f} {p90:8.2f} {p99:8.2f} {err:6d}")
    print("\nratios")
    print(f"  /generate n=256 vs raw:                         {results['gen'][0] / raw['generate'][0]:.2f}x"
          "  (target >= 0.9)")
    for name in ("npy", "png"):
        on, off = results[("on", name, 32)], results[("off", name, 32)]
        print(f"  /cluster {name} c=32 vs raw h batch 256:          {on[0] / raw['cluster'][0]:.2f}x  (target >= 0.5)")
        print(f"  /cluster {name} c=32 batching on vs off:          {on[0] / off[0]:.2f}x  (target >= 1.3)")
        print(f"  /cluster {name} c=32 p99/p50:                     {on[3] / on[1]:.2f}   (target <= 3)")
    print(f"  cold start to ready:                            {colds[0]:.2f}s (batching on), {colds[1]:.2f}s "
          "(off)  (target < 3 s)")


if __name__ == "__main__":
    main()
