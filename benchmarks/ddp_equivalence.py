"""How close a 2-process DDP run (gloo, CPU) comes to a 1-process run on the same global batch.

    python benchmarks/ddp_equivalence.py [--steps 6] [--out docs/results/ddp_equivalence.json]

The runs of tests/training/test_ddp.py (tiny networks, global batch 16 = 2 x 8), measured instead of bounded:
for each case the largest absolute difference after --steps steps in the weights, the EMA weights and the
logged losses (mean over ranks), with batch-norm frozen (every layer per-sample: the two runs differ by
float rounding only) and, for the default configuration, with live batch-norm (statistics per rank).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "training"))

from ddp_worker import run  # noqa: E402
from test_ddp import CASES, TINY, loss_gap, torchrun  # noqa: E402


def gaps(one: dict, two: dict) -> dict:
    per = {k: (one["model"][k].double() - two["model"][k].double()).abs().max().item() for k in one["model"]}
    worst = max(per, key=per.get)
    return {"weights": max(per.values()), "worst_tensor": worst,
            "weights_but_worst": max([v for k, v in per.items() if k != worst] or [0.0]),
            "ema": max((one["ema"][k].double() - two["ema"][k].double()).abs().max().item() for k in one["ema"]),
            "losses": loss_gap(one["losses"], two["losses"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        runs = [dict(name=n, cfg=dict(TINY, **over, out_dir=str(tmp / n)), steps=a.steps, freeze_bn=True)
                for n, over in CASES.items()]
        runs.append(dict(name="default_live_batchnorm", cfg=dict(TINY, out_dir=str(tmp / "live")), steps=a.steps))
        t0 = time.time()
        two = torchrun(tmp, runs)
        rows = {}
        for r in runs:
            one = run(**dict(r, cfg=dict(r["cfg"], out_dir=r["cfg"]["out_dir"] + "-1p")))
            rows[r["name"]] = {"batchnorm": "frozen" if r.get("freeze_bn") else "live (per-rank statistics)",
                               **gaps(one, two[r["name"]])}
    res = {"what": "max |2 processes x batch 8 - 1 process x batch 16| after the steps (gloo, CPU, float32)",
           "steps": a.steps, "global_batch": TINY["batch_size"], "seconds": round(time.time() - t0, 1),
           "cases": rows}
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
