"""Where one training step's time goes, and what each candidate speed-up buys (issue 9's profiling list:
channels_last, fused optimisers, torch.compile, a smaller critic, fewer critic steps).

    python benchmarks/step_profile.py                                # mnist-unsup, batch 64, 1 thread
    python benchmarks/step_profile.py --threads 2 --steps 60 --out docs/results/step_profile.json
    python benchmarks/step_profile.py --variants baseline,compile --preset fmnist-unsup

Every variant runs in a fresh subprocess (thread pools, compile caches and allocator state do not leak from
one to the next): it builds the preset's Trainer on the real data, runs --warmup steps (torch.compile
compiles there), then times --steps calls of train_step(). Variants run interleaved --repeats times and the
median is kept, so a burst of load on a shared machine hits every variant alike. The table prints s/step and
the ratio to the baseline (>1 = faster). A torch.profiler table of the baseline step (top ops by self CPU
time) shows which kernels the time is in.

The variants are measurements, not options: the ones that change what is trained (a smaller critic, other
losses) say so in the table, and a variant only becomes a default when a training row shows it keeps the
result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name: (TrainConfig overrides, trainer patch, changes what is trained?)
VARIANTS: dict[str, tuple[dict, str | None, bool]] = {
    "baseline": ({}, None, False),
    "channels_last": ({}, "channels_last", False),
    "fused_adam": ({}, "fused_adam", False),
    "compile": ({"compile": True}, None, False),
    "d_half_width": ({"d_width": 16}, None, True),
    "no_real_terms": ({"im_weight": 0.0, "consistency_weight": 0.0}, None, True),
    "real_batch_32": ({"real_batch": 32}, None, True),
    "n_critic_2": ({"n_critic": 2}, None, True),
    "wgan_gp": ({"gan_loss": "wgan-gp"}, None, True),
}


def patch(t, how: str | None) -> None:
    """Apply a variant that is not a TrainConfig option to a built Trainer."""
    import torch

    if how == "channels_last":
        t.model.to(memory_format=torch.channels_last)
        t.x_train = t.x_train.contiguous(memory_format=torch.channels_last)
    elif how == "fused_adam":
        m, cfg = t.model, t.cfg
        betas = (cfg.beta1, cfg.beta2)
        latent = [p for n, p in m.latent.named_parameters() if n != "alpha" and p.requires_grad]
        t.opt_d = torch.optim.Adam(m.d.parameters(), lr=cfg.lr_d, betas=betas, fused=True)
        t.opt_g = torch.optim.Adam(list(m.g.parameters()) + latent, lr=cfg.lr_g, betas=betas, fused=True)
        t.opt_h = torch.optim.Adam(m.h.parameters(), lr=cfg.lr_h, betas=betas, fused=True)
    elif how is not None:
        raise ValueError(how)


def measure(spec: dict) -> dict:
    """One variant, in this process."""
    import tempfile

    import torch

    from training.config import TrainConfig, preset
    from training.train import Trainer

    over, how, _ = VARIANTS[spec["variant"]]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(**{**preset(spec["preset"]), **over, "batch_size": spec["batch"],
                             "threads": spec["threads"], "out_dir": tmp, "device": "cpu"})
        t = Trainer(cfg, progress=False)
        patch(t, how)
        for _ in range(spec["warmup"]):
            t.train_step()
            t.step += 1
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            t.train_step()
            t.step += 1
        dt = (time.perf_counter() - t0) / spec["steps"]
        out = {"variant": spec["variant"], "s_per_step": dt}
        if spec.get("profile"):
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    t.train_step()
                    t.step += 1
            out["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return out


def run_variant(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                       env=env, timeout=1800)
    if p.returncode:
        return {"variant": spec["variant"], "error": p.stderr.strip().splitlines()[-1] if p.stderr else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-unsup")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler table of the baseline")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(measure(json.loads(a.worker))))
        return
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if "baseline" not in names:
        names.insert(0, "baseline")
    base = dict(preset=a.preset, batch=a.batch, threads=a.threads, steps=a.steps, warmup=a.warmup)
    times: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    for rep in range(a.repeats):
        for n in names:
            # compile's warm-up compiles: give it more warm-up steps so they are not timed
            spec = dict(base, variant=n, warmup=a.warmup + (10 if n == "compile" else 0))
            r = run_variant(spec)
            if "error" in r:
                errors[n] = r["error"]
                continue
            times[n].append(r["s_per_step"])
            print(f"repeat {rep + 1}/{a.repeats} {n:>14}: {r['s_per_step']:.4f} s/step", file=sys.stderr, flush=True)
    b = statistics.median(times["baseline"])
    rows = []
    for n in names:
        if not times[n]:
            rows.append({"variant": n, "error": errors.get(n, "no result")})
            continue
        med = statistics.median(times[n])
        rows.append({"variant": n, "s_per_step": round(med, 4), "speedup_vs_baseline": round(b / med, 3),
                     "runs": [round(x, 4) for x in times[n]], "changes_training": VARIANTS[n][2],
                     "overrides": VARIANTS[n][0], "patch": VARIANTS[n][1]})
    print(f"\n{a.preset}, batch {a.batch}, {a.threads} thread(s), median of {a.repeats} x {a.steps} steps")
    print(f"{'variant':>14} {'s/step':>8} {'speed-up':>9}  changes training")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:>14}  failed: {r['error']}")
        else:
            print(f"{r['variant']:>14} {r['s_per_step']:8.4f} {r['speedup_vs_baseline']:8.2f}x  "
                  f"{'yes' if r['changes_training'] else 'no'}")
    result = {"preset": a.preset, "batch": a.batch, "threads": a.threads, "steps": a.steps, "repeats": a.repeats,
              "loadavg_1min_after": round(os.getloadavg()[0], 2), "rows": rows}
    if not a.no_profile:
        prof = measure(dict(base, variant="baseline", steps=3, profile=True))["profile"]
        print("\nbaseline step, top ops by self CPU time (5 steps):\n" + prof)
        result["profile_baseline"] = prof
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
