"""training/device.py and the one-process side of training/distributed.py (no process group needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from training import distributed
from training.config import TrainConfig
from training.device import Autocast, compiled, pick_device, to_device, with_amp


@pytest.mark.parametrize("name", ["gpu", "cuda0", "cuda:x", "", "CPU", "cuda:-1"])
def test_bad_device_names_are_refused(name):
    with pytest.raises(ValueError, match="device"):
        pick_device(name)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device=name).validate()


def test_devices():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda:0")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8").validate()


def test_defaults_are_the_networks_themselves():
    net = nn.Linear(3, 2)
    assert with_amp(net, torch.device("cpu"), "none") is net and compiled(net, False) is net
    x = torch.ones(2, 3)
    assert to_device(x, torch.device("cpu")) is x


def test_bf16_autocast_returns_fp32():
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    amp = with_amp(net, torch.device("cpu"), "bf16")
    assert isinstance(amp, Autocast)
    x = torch.randn(4, 8)
    y = amp(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, net(x), rtol=0.05, atol=0.02)  # bf16 matmuls: ~3 significant digits
    y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())


def test_one_process_dist_is_a_no_op():
    d = distributed.setup("cpu")  # no torchrun environment here
    assert not d.enabled and d.world == 1 and d.is_main
    rows = torch.arange(10)
    assert d.shard(rows) is rows
    net = nn.Linear(2, 2)
    assert d.wrap(net) is net and d.sync_batchnorm(net) is net
    assert d.mean_stats({"a": 1.0}) == {"a": 1.0}
    d.check_in_sync(net)
    d.barrier()


def test_shard_takes_this_ranks_rows():
    rows = torch.arange(12)
    parts = [distributed.Dist(rank=r, world=3, enabled=True).shard(rows) for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="does not split"):
        distributed.Dist(rank=0, world=5, enabled=True).shard(rows)
    assert distributed.Dist(rank=1, world=5, enabled=True).shard(rows, whole_if_uneven=True) is rows


def test_launch_refuses_a_batch_that_does_not_split(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), batch_size=15, device="cpu")
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        distributed.launch(cfg, 2)
