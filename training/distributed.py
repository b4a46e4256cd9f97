"""Data-parallel training over processes (torchrun) with DistributedDataParallel.

    torchrun --nproc_per_node N -m cli.train_ddp --out runs/x --steps 20000 ...   # or: nemgan train --nproc N
    torchrun --nnodes M --node_rank R --rdzv_endpoint HOST:29500 --nproc_per_node N -m cli.train_ddp ...

What a run means does not depend on the number of processes:

* `batch_size` is the global batch. Every rank draws the same global batch of data indices and the same
  global latent/mode draw from the shared seed, and keeps rows rank*B:(rank+1)*B (B = batch_size / world
  size). The ranks see disjoint rows, the union is exactly what one process would see, and the iterator and
  generator states in a checkpoint mean the same for any world size: a run resumes on another world size.
* Gradients are averaged across ranks by DDP (g, h1, h2, d) and by hooks on the latent's own parameters,
  so for per-sample losses the update equals the one-process update on the global batch (tests/training/
  test_ddp.py measures it). Batch-norm statistics are per rank unless SyncBatchNorm is used (CUDA only).
* Rank 0 is the only writer of the run folder; losses are averaged over ranks before they are logged.
* Terms that use the whole of a shared draw (the real-image terms of train.py, whose batch-level entropy
  needs all rows; a labeled batch that does not split evenly) run on every rank in full: every rank then
  adds the same gradient, and the average is the one-process gradient, at the cost of redundant work.

The gradient penalty is computed through the unwrapped discriminator: DDP does not support double
backward (pytorch/pytorch#47562, #63812). torch.autograd.grad(create_graph=True) builds the per-sample
input gradients locally (no DDP hook fires for it), and the ordinary backward of the loss then reaches
DDP's all-reduce hooks of d's parameters through both paths. The penalty is per sample, so the rank-local
computation is the right one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .device import pick_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. Outside torchrun (enabled False): a plain run, every helper is a
    no-op. Under torchrun, even with one process, the networks are DDP-wrapped and stats go through the
    process group (so `torchrun --nproc_per_node 1` exercises NCCL/gloo and DDP on a single device)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ data
    def shard(self, rows, whole_if_uneven: bool = False):
        """This rank's slice of a global batch (tensor or numpy array, first dimension). whole_if_uneven: a
        batch that does not split evenly stays whole on every rank (the same gradient, computed redundantly)."""
        if self.world == 1:
            return rows
        n = len(rows)
        if n % self.world and whole_if_uneven:
            return rows
        if n % self.world:
            raise ValueError(f"a global batch of {n} rows does not split over {self.world} processes")
        b = n // self.world
        return rows[self.rank * b:(self.rank + 1) * b]

    # ------------------------------------------------------------------ models
    def wrap(self, net: nn.Module) -> nn.Module:
        """DDP around a network (identity for one process). Parameters are broadcast from rank 0 here."""
        if not self.enabled:
            return net
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)

    def sync_batchnorm(self, net: nn.Module) -> nn.Module:
        """Batch-norm statistics over the global batch (torch's SyncBatchNorm runs on GPUs only; on CPU the
        statistics stay per rank, the one way a multi-process run departs from the one-process run)."""
        if self.enabled and self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return net

    def average_grads(self, params) -> None:
        """Average the gradients of parameters DDP does not own (the latent's alpha, means, scales) over
        ranks, as DDP does for its modules: a hook on each parameter averages every backward's
        contribution before it is accumulated."""
        if not self.enabled:
            return
        world = self.world

        def hook(grad: torch.Tensor) -> torch.Tensor:
            g = grad.clone()
            dist.all_reduce(g)
            return g / world

        for p in params:
            if p.requires_grad:
                p.register_hook(hook)

    # ------------------------------------------------------------------ stats and checks
    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank must pass the same keys)."""
        if not self.enabled or not stats:
            return stats
        keys = sorted(stats)
        t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def check_in_sync(self, module: nn.Module) -> None:
        """Raise if the ranks' parameters differ: a gradient that bypassed DDP would otherwise let them
        drift apart silently. One small all-reduce of per-tensor sums."""
        if not self.enabled:
            return
        sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(self._comm_device())
        hi, lo = sums.clone(), sums.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        gap = float((hi - lo).abs().max())
        if gap > 0:
            raise RuntimeError(f"rank {self.rank}: parameters differ across ranks (largest gap in a per-tensor "
                               f"sum {gap:.3g}); a gradient was not averaged by DDP")

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when any rank passes True: how rank 0's decisions (stop, freeze h) reach all."""
        return bool(flag) if not self.enabled else self.mean_stats({"flag": float(flag)})["flag"] > 0

    def broadcast_(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's module, in place."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                buf = t.detach().to(self._comm_device())
                dist.broadcast(buf, src=0)
                t.copy_(buf)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _comm_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo CPU ones.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT); without it, a one-process Dist on the picked device. NCCL on CUDA, gloo on CPU.
    With CUDA, each process takes the GPU of its local rank."""
    dev = pick_device(device)
    if "WORLD_SIZE" not in os.environ:
        return Dist(device=dev)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise ValueError(f"device {device!r} would put every process of this node on one GPU: under torchrun "
                             "use --device cuda (each process takes the GPU of its local rank)")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return Dist(rank=rank, world=world, local_rank=local, device=dev, enabled=True)


def teardown(barrier: bool = True) -> None:
    """Leave the process group together. Without the barrier a rank that finishes first destroys its gloo
    context while a peer may still be sending to it, and gloo's transport threads can then call
    std::terminate ("terminate called without an active exception", SIGABRT): seen once in CI in
    tests/training/test_ddp.py. barrier=False on the way out of a failure, where a peer may be gone and
    the barrier would wait for the whole process-group timeout."""
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        finally:
            dist.destroy_process_group()


class InverterView(nn.Module):
    """h = h2 . h1 for training with h1 and h2 wrapped separately (DDP, autocast, compile): the mode loss
    through a frozen h (h_mode_start) runs h1 alone, and DDP requires every wrapped parameter to receive a
    gradient once it ran forward."""

    def __init__(self, h1: nn.Module, h2: nn.Module):
        super().__init__()
        self.h1, self.h2 = h1, h2

    def forward(self, x):
        zh = self.h1(x)
        return zh, self.h2(zh)


def launch(cfg, nproc: int, resume: bool = False, progress: bool = True) -> int:
    """`nemgan train --nproc N`: run the resolved config under torchrun on this machine (a fresh rendezvous
    on a free port), N processes of `cli.train_ddp`. Returns torchrun's exit status."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if cfg.batch_size % nproc:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch: it must be a multiple of the {nproc} processes")
    if pick_device(cfg.device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc} needs one GPU per process; this machine has {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="nemgan-ddp-") as tmp:
        path = Path(tmp) / "config.json"
        cfg.save(path)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
               "-m", "cli.train_ddp", "--config", str(path), "--out", cfg.out_dir,
               *(["--resume"] if resume else []), *(["--dry-run"] if cfg.dry_run else []),
               *([] if progress else ["--no-progress"])]
        return subprocess.run(cmd).returncode
