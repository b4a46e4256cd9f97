"""Training on a GPU: bf16 autocast, torch.compile, pinned copies, DDP over NCCL.

Skipped without a CUDA GPU (benchmarks/gpu_run.sh runs them on the device machine). The CPU side of the same
code (views that are the networks themselves, bit-identical defaults, DDP over gloo) is tested in
test_train.py and test_ddp.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import run  # noqa: E402
from test_ddp import TINY, torchrun  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason=f"no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is False)")

GPU = dict(TINY, device="cuda", batch_size=64, g_width=32, d_width=32, fc_hidden=128, h2_hidden=128)


def finite(losses: list[dict]) -> bool:
    return all(math.isfinite(v) for s in losses for v in s.values())


def test_pinned_copy_to_the_gpu():
    from training.device import to_device

    x = torch.randn(8, 1, 28, 28)
    y = to_device(x, torch.device("cuda"))
    assert y.is_cuda and torch.equal(y.cpu(), x)


def test_bf16_step_tracks_fp32(tmp_path):
    """bf16 autocast runs the convolutions/matmuls in bf16 and returns fp32 to the losses: the first step's
    losses (same weights, same batch) agree with fp32 to bf16's precision (8-bit mantissa, ~0.4%), the
    weights and optimiser state stay fp32, and 30 steps stay finite (WGAN-GP: the penalty runs in fp32)."""
    fp32 = run(cfg=dict(GPU, out_dir=str(tmp_path / "fp32")), steps=1)
    bf16 = run(cfg=dict(GPU, amp="bf16", out_dir=str(tmp_path / "bf16")), steps=1)
    for k, v in fp32["losses"][0].items():
        assert abs(bf16["losses"][0][k] - v) <= 0.03 * abs(v) + 1e-3, k
    assert all(t.dtype in (torch.float32, torch.int64) for t in bf16["model"].values())
    long = run(cfg=dict(GPU, amp="bf16", gan_loss="wgan-gp", out_dir=str(tmp_path / "wgan")), steps=30)
    assert finite(long["losses"])


def test_compiled_step_matches_eager(tmp_path):
    eager = run(cfg=dict(GPU, out_dir=str(tmp_path / "eager")), steps=3)
    comp = run(cfg=dict(GPU, compile=True, out_dir=str(tmp_path / "compiled")), steps=3)
    for k, v in eager["losses"][0].items():  # same weights and batch: fused kernels, ~fp32 rounding
        assert abs(comp["losses"][0][k] - v) <= 1e-3 * abs(v) + 1e-4, k
    assert finite(comp["losses"])


def test_ddp_over_nccl_on_one_gpu(tmp_path):
    """torchrun with one process: NCCL process group, DDP-wrapped networks, the GPU of local rank 0."""
    r = dict(name="nccl", cfg=dict(GPU, labeled_fraction=0.25, out_dir=str(tmp_path / "ddp")), steps=5)
    got = torchrun(tmp_path, [r], nproc=1)["nccl"]
    plain = run(**dict(r, cfg=dict(r["cfg"], out_dir=str(tmp_path / "plain"))))
    assert got["backend"] == "nccl" and got["ddp"] and got["device"] == "cuda:0"
    for k, v in plain["losses"][0].items():  # the first step sees identical weights and data
        assert abs(got["losses"][0][k] - v) <= 1e-4 * abs(v) + 1e-5, k
    assert finite(got["losses"])
