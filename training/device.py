"""Where and how the networks run during training: device choice, bf16 autocast, torch.compile, and
host-to-device copies from pinned memory.

Everything here is opt-in and the defaults change nothing: on CPU with `amp: none` and `compile: false`
the training view of a network is the network itself, so results are bit-identical to a plain run.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
AMP_MODES = ("none", "bf16")


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when torch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:i`, checked up front so a typo or
    a missing GPU is a clear error rather than a crash on the first tensor moved."""
    if not DEVICE_PATTERN.match(name or ""):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


class Autocast(nn.Module):
    """Runs `net` under autocast and returns float32 outputs.

    Convolutions and matmuls of the GAN run in bf16 (where tensor cores pay off); every loss downstream
    sees fp32 tensors, and the gradient penalty, computed on the unwrapped network, stays fp32 throughout.
    bf16 has fp32's exponent range, so no loss scaling is needed (unlike fp16)."""

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.net, self.device_type, self.dtype = net, device_type, dtype

    def forward(self, *args):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(*args)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


def with_amp(net: nn.Module, device: torch.device, amp: str) -> nn.Module:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return net if amp == "none" else Autocast(net, device.type)


def compiled(net: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile(net) when enabled. Only the training forwards go through it: the gradient penalty
    (double backward, which compiled graphs do not support) and evaluation use the eager network."""
    return torch.compile(net) if enabled else net


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to `device`. On CUDA through pinned memory with a non-blocking copy, so the
    transfer overlaps the GPU work already queued (torch's caching host allocator reuses the pinned
    blocks and keeps each one alive until its copy is done)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
