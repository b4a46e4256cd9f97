"""Training runs for tests/training/test_ddp.py: executed under torchrun (several processes, gloo) and
in-process (the one-process reference), so both sides run exactly the same code.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/ddp_worker.py SPEC.json

SPEC: {"out": "results.pt", "runs": [{"name": ..., "cfg": {TrainConfig fields}, "steps": N,
       "freeze_bn": bool, "fit": bool, "resume": bool}, ...]}. Rank 0 saves {name: result} to "out".
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn as nn

from training import distributed
from training.config import TrainConfig
from training.train import Trainer


def freeze_batchnorm(model: nn.Module) -> None:
    """Batch-norm layers normalise with their running statistics, for good (Module.train() of a parent
    does not switch them back). Every layer is then per-sample, so the data-parallel update is
    mathematically the one-process update on the global batch and only float rounding separates them."""
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.eval()
            mod.train = lambda mode=True, mod=mod: mod


def run(cfg: dict, steps: int = 0, freeze_bn: bool = False, fit: bool = False, resume: bool = False,
        name: str = "", scripted_mi: list[float] | None = None) -> dict:
    threads = torch.get_num_threads()  # cfg "threads" sets torch's global count: restore it for the caller
    try:
        return _run(cfg, steps, freeze_bn, fit, resume, scripted_mi)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: dict, steps: int, freeze_bn: bool, fit: bool, resume: bool, scripted_mi: list[float] | None) -> dict:
    t = Trainer(TrainConfig.from_dict(cfg), progress=False)
    if scripted_mi is not None:  # rank 0's held-out MI, scripted, so that h_freeze_patience fires at a known step
        mi = iter(scripted_mi)
        t.evaluate = lambda: {"val_mi": next(mi), "val_acc": 0.0, "val_gen_agree": 0.0}
    if freeze_bn:
        freeze_batchnorm(t.model)
        freeze_batchnorm(t.ema)
    if resume:
        assert t.resume(), "no last.pt to resume from"
    losses = []
    if fit:
        t.fit()
    else:
        for _ in range(steps):
            losses.append(t.dist.mean_stats(t.train_step()))  # as fit() logs them: the mean over ranks
            t.step += 1
        t.dist.check_in_sync(t.model)
    backend = torch.distributed.get_backend() if t.dist.enabled else None
    return {"losses": losses, "rank": t.dist.rank, "h_frozen_at": t.h_frozen_at, "world": t.dist.world, "backend": backend,
            "ddp": type(t.G).__name__ == "DistributedDataParallel", "device": str(t.device),
            "model": {k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()},
            "ema": {k: v.detach().cpu().clone() for k, v in t.ema.state_dict().items()}}


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    results = {r["name"]: run(**r) for r in spec["runs"]}
    if all(r["rank"] == 0 for r in results.values()):
        torch.save(results, spec["out"])
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
