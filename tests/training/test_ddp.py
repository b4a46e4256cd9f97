"""Data-parallel training (training/distributed.py) on CPU with gloo and 2 processes under torchrun.

The claim: a run's meaning does not depend on the number of processes. batch_size is the global batch;
every rank draws the same global data/latent/interpolation batch and keeps its rows, and DDP (plus hooks
on the latent's parameters) averages the gradients. So 2 processes with B rows each must reproduce one
process with 2B rows.

Tolerance. Batch-norm in training mode normalises with the statistics of the rows it sees (8 per rank
vs 16), which changes the function itself; torch's SyncBatchNorm, which would fix that, runs on GPUs
only. The exact comparison therefore freezes batch-norm (running statistics, see ddp_worker.py): every
layer is then per-sample and the two runs differ only by float32 rounding (the two half-batch means are
averaged instead of one full-batch mean), ~1e-7 per operation. After 6 Adam steps the measured gap is
<= 6e-7 in every weight, EMA weight and logged loss, hence the bound 1e-5. One exception: a parameter whose
gradient is exactly zero in exact arithmetic (the WGAN critic's output bias: d_fake.mean() - d_real.mean()
does not depend on it) receives rounding noise that Adam normalises into steps of up to lr each, so it is
bounded by lr_d * steps instead. With live batch-norm (the default) the runs are close, not equal
(measured: 0.003 in the losses, 0.01 in the weights after 6 steps); that test bounds them loosely (0.05).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import run  # noqa: E402

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

WORKER = Path(__file__).parent / "ddp_worker.py"
TOL = 1e-5
STEPS = 6
TINY = dict(dry_run=True, device="cpu", batch_size=16, g_width=8, d_width=8, fc_hidden=32, h2_hidden=32,
            log_every=1000, eval_every=1000, sample_every=1000, ckpt_every=1000)
CASES = {
    # semi-supervised h (labeled batch sharded), mode loss through a frozen h for the first 3 steps
    "sup_frozen_h": dict(labeled_fraction=0.25, sup_batch=16, h_mode_start=3),
    # gradient penalty (double backward through the unwrapped critic) + learned priors (alpha's hook)
    "wgan_learned_priors": dict(gan_loss="wgan-gp", latent_kind="nemgan-p", priors="learned"),
    # learned latent means/scales (hooked, in opt_g) and the K-head supervised discriminator
    "mmgan_dyn_sup": dict(latent_kind="mmgan-dynamic", supervised_mmgan=True),
    # the real-image terms (information maximisation, augmentation consistency)
    "real_terms": dict(im_weight=1.0, consistency_weight=1.0),
}


def torchrun(tmp_path: Path, runs: list[dict], nproc: int = 2) -> dict:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"out": str(tmp_path / "results.pt"), "runs": runs}))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        str(WORKER), str(spec)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return torch.load(tmp_path / "results.pt", weights_only=False)


def max_gap(a: dict, b: dict, skip=()) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if k not in skip)


def loss_gap(a: list[dict], b: list[dict]) -> float:
    assert len(a) == len(b) and all(x.keys() == y.keys() for x, y in zip(a, b))
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    runs = [dict(name=n, cfg=dict(TINY, **over, out_dir=str(tmp_path / n)), steps=STEPS, freeze_bn=True)
            for n, over in CASES.items()]
    runs.append(dict(name="live_bn", cfg=dict(TINY, out_dir=str(tmp_path / "live_bn")), steps=STEPS))
    two = torchrun(tmp_path, runs)
    for r in runs:
        one = run(**dict(r, cfg=dict(r["cfg"], out_dir=r["cfg"]["out_dir"] + "-1p")))
        got = two[r["name"]]
        assert got["world"] == 2 and one["world"] == 1
        if r["name"] == "live_bn":
            assert loss_gap(one["losses"], got["losses"]) < 0.05
            assert max_gap(one["model"], got["model"]) < 0.05
            continue
        skip = ("d.net.6.bias",) if r["cfg"].get("gan_loss") == "wgan-gp" else ()
        gaps = (max_gap(one["model"], got["model"], skip), max_gap(one["ema"], got["ema"]),
                loss_gap(one["losses"], got["losses"]))
        assert max(gaps) < TOL, f"{r['name']}: weights/ema/losses differ by {gaps}"
        if skip:  # the zero-gradient bias: Adam steps of rounding noise, at most lr per step
            bias = (one["model"][skip[0]] - got["model"][skip[0]]).abs().max().item()
            assert bias <= r["cfg"].get("lr_d", 1e-3) * STEPS
        # Not vacuous: the runs moved well beyond the tolerance.
        init = run(**dict(r, steps=0, cfg=dict(r["cfg"], out_dir=r["cfg"]["out_dir"] + "-0")))
        assert max_gap(init["model"], got["model"]) > 100 * TOL


def test_resume_a_two_process_checkpoint_in_one_process(tmp_path):
    """2 processes train 4 steps and checkpoint (rank 0 writes the folder); 1 process resumes to 6 steps and
    lands where a 1-process run of 6 steps lands. Beside it, a 2-process run stopped by its time limit."""
    cfg = dict(TINY, labeled_fraction=0.25, sup_batch=16, log_every=2, eval_every=4, ckpt_every=4, sample_every=4)
    out = tmp_path / "run"
    timed = tmp_path / "timed"  # time_limit_s: rank 0's clock stops every rank at the same log step
    # h_freeze_patience under DDP: rank 0 decides, every rank restores the peak's h and stops training it
    # (fit() checks after every log step that the ranks' weights agree: it raises if they drifted apart).
    freeze = dict(cfg, out_dir=str(tmp_path / "freeze"), steps=6, log_every=1, eval_every=1, h_freeze_patience=2)
    res = torchrun(tmp_path, [dict(name="first", cfg=dict(cfg, out_dir=str(out), steps=4), fit=True, freeze_bn=True),
                              dict(name="timed", cfg=dict(cfg, out_dir=str(timed), steps=50, time_limit_s=1e-3), fit=True),
                              dict(name="freeze", cfg=freeze, fit=True, scripted_mi=[0.5, 0.9, 0.8, 0.7, 0.7, 0.7])])
    assert res["freeze"]["h_frozen_at"] == 4
    frozen_rows = [json.loads(x) for x in (tmp_path / "freeze" / "stats.jsonl").read_text().splitlines()]
    assert [r.get("h_frozen_at") for r in frozen_rows] == [None, None, None, 4, 4, 4]
    assert json.loads((timed / "summary.json").read_text())["steps"] == 2
    assert torch.load(timed / "last.pt", weights_only=False)["trainer"]["step"] == 2
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4], "one writer: one row per log step"
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert torch.load(out / "last.pt", weights_only=False)["trainer"]["step"] == 4
    resumed = run(cfg=dict(cfg, out_dir=str(out), steps=STEPS), fit=True, freeze_bn=True, resume=True)
    straight = run(cfg=dict(cfg, out_dir=str(tmp_path / "straight"), steps=STEPS), fit=True, freeze_bn=True)
    assert resumed["world"] == 1
    assert max(max_gap(straight["model"], resumed["model"]), max_gap(straight["ema"], resumed["ema"])) < TOL
    assert [json.loads(x)["step"] for x in (out / "stats.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_nemgan_train_nproc(tmp_path):
    """The command line: `nemgan train --nproc 2` starts torchrun; one summary, from rank 0."""
    out = tmp_path / "cli"
    p = subprocess.run([sys.executable, "-m", "cli", "train", "--nproc", "2", "--dry-run", "--device", "cpu",
                        "--batch-size", "16", "--out", str(out), "--no-progress", "--set", "g_width=8",
                        "--set", "d_width=8"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert json.loads((out / "summary.json").read_text()) == summary
    p = subprocess.run([sys.executable, "-m", "cli", "train", "--nproc", "2", "--dry-run", "--device", "cpu",
                        "--batch-size", "15", "--out", str(tmp_path / "odd"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "multiple of the 2 processes" in p.stderr


def test_torchrun_with_one_process_is_the_plain_run(tmp_path):
    """Under torchrun even one process joins the process group and wraps the networks in DDP (the path
    benchmarks/gpu_run.sh exercises with NCCL on one GPU); with one rank DDP's average is a copy, so the
    result is bit-identical to the plain run (one thread each: the summation order of multi-threaded CPU
    kernels is not fixed, and Adam turns that noise into lr-sized steps of the biases batch-norm cancels)."""
    r = dict(name="one", cfg=dict(TINY, labeled_fraction=0.25, sup_batch=16, threads=1, out_dir=str(tmp_path / "a")),
             steps=3)
    got = torchrun(tmp_path, [r], nproc=1)["one"]
    plain = run(**dict(r, cfg=dict(r["cfg"], out_dir=str(tmp_path / "b"))))
    assert got["ddp"] and got["backend"] == "gloo" and not plain["ddp"]
    assert max_gap(plain["model"], got["model"]) == 0 and got["losses"] == plain["losses"]
