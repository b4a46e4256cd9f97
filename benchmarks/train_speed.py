"""Training speed: steps/s and images/s of the training step per device, precision, compile and process count.

    python benchmarks/train_speed.py                                   # CPU, 1 and 2 processes, 50 steps
    python benchmarks/train_speed.py --device cuda --amp none,bf16 --compile both --nproc 1 --steps 300
    python benchmarks/train_speed.py --preset mnist-unsup --set batch_size=128 --out speed.json

Each configuration runs in its own torchrun launch (fresh processes, --nproc of them, gloo on CPU, NCCL on
GPUs): it builds the Trainer of training/train.py on the chosen data, runs --warmup steps (torch.compile
compiles here), then times --steps calls of train_step() (one discriminator and one generator/inverter
update each; evaluation, samples and checkpoints are not included). images/s = global batch x steps/s
(real images through d per second; g draws as many). Prints one JSON line per configuration, with every
setting used, and a table; --out writes them all to a JSON file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def worker(spec: dict) -> None:
    """One configuration, inside torchrun: every rank trains, rank 0 reports."""
    import torch

    from training import distributed
    from training.config import TrainConfig, preset
    from training.train import Trainer

    fields = preset(spec["preset"]) if spec["preset"] else {}
    fields.update(spec["set"])
    fields.update(device=spec["device"], amp=spec["amp"], compile=spec["compile"], out_dir=spec["run_dir"],
                  dry_run=spec["data"] == "fake", threads=spec["threads"])
    if spec["data"] != "fake":
        fields["dataset"] = spec["data"]
    cfg = TrainConfig.from_dict(fields)
    t = Trainer(cfg, progress=False)
    dev = t.device

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t.dist.barrier()

    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        t.train_step()
        t.step += 1
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        t.train_step()
        t.step += 1
    sync()
    dt = time.perf_counter() - t0
    if t.dist.is_main:
        res = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
               "nproc": t.dist.world, "amp": cfg.amp, "compile": cfg.compile, "batch_global": cfg.batch_size,
               "batch_per_process": cfg.batch_size // t.dist.world, "threads_per_process": torch.get_num_threads(),
               "data": spec["data"], "preset": spec["preset"], "set": spec["set"], "gan_loss": cfg.gan_loss,
               "steps": spec["steps"], "warmup_steps": spec["warmup"], "warmup_s": round(warm_s, 2),
               "seconds": round(dt, 3), "steps_per_s": round(spec["steps"] / dt, 3),
               "images_per_s": round(spec["steps"] * cfg.batch_size / dt, 1), "torch": torch.__version__,
               "loadavg_1min_after": round(os.getloadavg()[0], 2), "cpu_cores": os.cpu_count()}
        Path(spec["result"]).write_text(json.dumps(res) + "\n")
    distributed.teardown()


def measure(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        spec = dict(spec, run_dir=str(Path(tmp) / "run"), result=str(Path(tmp) / "result.json"))
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if spec["threads"]:
            env["OMP_NUM_THREADS"] = str(spec["threads"])
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec['nproc']}",
               str(Path(__file__).resolve()), "--worker", str(Path(tmp) / "spec.json")]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}",
                    **{k: spec[k] for k in ("device", "nproc", "amp", "compile")}}
        return json.loads(Path(spec["result"]).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto (each process of N takes the GPU of its local rank)")
    ap.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    ap.add_argument("--amp", default="none", help="comma-separated: none, bf16")
    ap.add_argument("--compile", default="off", choices=("off", "on", "both"))
    ap.add_argument("--steps", type=int, default=50, help="timed steps (keep CPU runs short)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data", default="fake", help="fake (the dry-run set: 28x28, 10 classes) or a data set preset/path")
    ap.add_argument("--preset", default=None, help="a training preset (training/config.py PRESETS) for the model and losses")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="TrainConfig field, e.g. batch_size=128")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch/torchrun default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every configuration N times, interleaved (a shared machine's load moves): "
                         "the table gives the median and the range")
    ap.add_argument("--out", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(json.loads(a.worker.read_text()))
        return
    compiles = {"off": [False], "on": [True], "both": [False, True]}[a.compile]
    results = []
    configs = list(itertools.product([int(n) for n in a.nproc.split(",")], a.amp.split(","), compiles))
    for rep in range(a.repeat):
        for nproc, amp, comp in configs:
            spec = {"device": a.device, "nproc": nproc, "amp": amp, "compile": comp, "steps": a.steps,
                    "warmup": a.warmup, "data": a.data, "preset": a.preset, "set": parse_set(a.set_),
                    "threads": a.threads}
            res = dict(measure(spec, a.timeout), repeat=rep)
            print(json.dumps(res), flush=True)
            results.append(res)
    print(f"\n{'device':<28} {'nproc':>5} {'amp':>5} {'compile':>7} {'batch':>6} {'steps/s':>8} {'images/s':>9}"
          f"  {'steps/s range':>13}")
    for nproc, amp, comp in configs:
        rows = [r for r in results if (r["nproc"], r["amp"], r["compile"]) == (nproc, amp, comp)]
        ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["steps_per_s"])
        if not ok:
            print(f"{a.device:<28} {nproc:>5} {amp:>5} {str(comp):>7}  error: {rows[0]['error']}")
            continue
        r = ok[len(ok) // 2]  # the median run
        name = f"{r['device']} ({r['device_name'][:18]})"
        print(f"{name:<28} {nproc:>5} {amp:>5} {str(comp):>7} {r['batch_global']:>6} {r['steps_per_s']:>8.2f} "
              f"{r['images_per_s']:>9.0f}  {ok[0]['steps_per_s']:>6.2f}..{ok[-1]['steps_per_s']:<6.2f}")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2) + "\n")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
