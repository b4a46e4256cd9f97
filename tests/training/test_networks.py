"""Networks that scale with the image (28/32/64/96 px, grey or RGB) and the spectral-norm critic; the 28x28
layout every shipped model and checkpoint was trained with stays exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.model import NemganModel
from training.networks import Discriminator, Generator, Inverter, NetConfig, count_params, n_stages

REPO = Path(__file__).resolve().parents[2]

# The 28x28 grey networks as they were before sizes scaled (commit 26f37d9): parameter counts and layouts.
LEGACY_28 = {"g": 199585, "h": 449308, "d": 435169}
LEGACY_KEYS = {
    "g": ["fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias", "fc.1.running_mean", "fc.1.running_var",
          "fc.1.num_batches_tracked", "net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias",
          "net.1.running_mean", "net.1.running_var", "net.1.num_batches_tracked", "net.3.weight", "net.3.bias"],
    "d": ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.3.weight", "net.3.bias",
          "net.6.weight", "net.6.bias", "net.8.weight", "net.8.bias"],
}


def test_28x28_grey_layout_is_unchanged():
    cfg = NetConfig().check()
    g, h, d = Generator(cfg), Inverter(cfg), Discriminator(cfg)
    assert {"g": count_params(g), "h": count_params(h), "d": count_params(d)} == LEGACY_28
    assert list(g.state_dict()) == LEGACY_KEYS["g"] and list(d.state_dict()) == LEGACY_KEYS["d"]
    assert g.shape == (64, 7, 7) and cfg.stages == 2
    assert g.net[0].weight.shape == (64, 32, 4, 4) and d.net[6].weight.shape == (128, 64 * 7 * 7)


@pytest.mark.parametrize("name", ["mnist", "mnist-unsup", "fashion-mnist"])
def test_shipped_checkpoints_still_load(name):
    """Strict load (NemganModel.from_checkpoint refuses any missing or unexpected key but the critic's)."""
    p = REPO / "models" / name / "checkpoint.pt"
    if not p.is_file():
        pytest.skip(f"{p} not present")
    m = NemganModel.load(p)
    state = torch.load(p, map_location="cpu", weights_only=False)["model"]
    mine = m.state_dict()
    assert all(mine[k].shape == v.shape for k, v in state.items())
    assert count_params(m.g) == sum(v.numel() for k, v in state.items()
                                    if k.startswith("g.") and "running" not in k and "num_batches" not in k)


@pytest.mark.parametrize("side,stages,bottom", [(28, 2, 7), (32, 3, 4), (48, 3, 6), (64, 4, 4), (96, 4, 6),
                                                (128, 5, 4), (12, 2, 3)])
def test_stages_grow_with_the_image(side, stages, bottom):
    cfg = NetConfig(height=side, width=side).check()
    assert n_stages(side, side) == cfg.stages == stages and cfg.bottom == (bottom, bottom)


@pytest.mark.parametrize("side", [28, 32, 64, 96])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_every_size_and_colour(side, channels):
    cfg = NetConfig(channels=channels, height=side, width=side, g_width=8, d_width=8, fc_hidden=16,
                    h2_hidden=16, n_modes=4, latent_dim=6).check()
    g, h, d = Generator(cfg), Inverter(cfg), Discriminator(cfg)
    x = g(torch.randn(3, 6))
    assert x.shape == (3, channels, side, side) and x.abs().max() <= 1
    z, logits = h(x)
    assert z.shape == (3, 6) and logits.shape == (3, 4) and d(x).shape == (3, 1)
    # one more stride-2 (de)conv per halving: the deepest maps are bottom x bottom
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in d.modules())
    n_deconv = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert n_conv == n_deconv == cfg.stages


def test_non_square_images():
    cfg = NetConfig(channels=3, height=32, width=64, g_width=8, d_width=8, fc_hidden=16).check()
    assert cfg.stages == 3 and cfg.bottom == (4, 8)
    assert Generator(cfg)(torch.randn(2, 50)).shape == (2, 3, 32, 64)


def test_spectral_critic_has_unit_spectral_norms():
    cfg = NetConfig(channels=3, height=32, width=32, d_norm="spectral", d_width=8, fc_hidden=16).check()
    d = Discriminator(cfg)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for m in d.modules())
    x = torch.randn(8, 3, 32, 32)
    for _ in range(30):  # power iteration converges as the critic trains
        d(x)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    # the unnormalised weights underneath are not (so the 1 above is the normalisation's doing)
    raw = [torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), ord=2) for m in layers]
    assert max(abs(float(r) - 1) for r in raw) > 0.2


def test_bad_d_norm_is_refused():
    with pytest.raises(ValueError, match="d_norm"):
        NetConfig(d_norm="spectal").check()


@pytest.mark.parametrize("gan_loss", ["gan", "wgan-gp"])
def test_spectral_critic_trains_on_rgb(tmp_path, gan_loss):
    """A 32x32 RGB dry run with the spectral critic, both losses (WGAN-GP's double backward goes through the
    power iteration): finite losses, and the checkpoint reloads with its parametrised critic."""
    from training.config import TrainConfig
    from training.train import train

    cfg = TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True, image_size=32, image_channels=3, d_norm="spectral",
                      gan_loss=gan_loss, g_width=8, d_width=8, fc_hidden=16, n_modes=3)
    train(cfg, progress=False)
    m = NemganModel.load(tmp_path / "r" / "last.pt")
    assert m.image_shape == (3, 32, 32) and m.net_cfg.d_norm == "spectral"
    assert torch.nn.utils.parametrize.is_parametrized(m.d.net[0], "weight")


_IDENTITY_RUN = """
import sys, types, hashlib
import torch
if sys.argv[1] == "old":  # networks.py before sizes scaled, in place of today's
    mod = types.ModuleType("training.networks")
    sys.modules["training.networks"] = mod  # (before exec: its dataclass looks itself up there)
    exec(compile(open(sys.argv[2]).read(), "networks@26f37d9", "exec"), mod.__dict__)
from training.config import TrainConfig
from training.train import Trainer
import training.model
assert training.model.Generator.__module__ == "training.networks"
torch.set_num_threads(1)
t = Trainer(TrainConfig(out_dir=sys.argv[3], dry_run=True, seed=3, consistency_weight=1.0, im_weight=1.0), progress=False)
for _ in range(4):
    t.train_step()
h = hashlib.sha256()
for k, v in t.model.state_dict().items():
    h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
print(sys.modules["training.networks"].__dict__.get("__file__", "old"), h.hexdigest())
"""


def test_28x28_training_is_bit_identical_to_the_old_networks(tmp_path):
    """Same seed, same steps: a 28x28 grey run with networks.py as it was before sizes scaled (26f37d9, from git)
    ends with exactly the same weights as with today's: the shipped models' figures stand."""
    import subprocess
    import sys

    try:
        src = subprocess.run(["git", "show", "26f37d9:training/networks.py"], capture_output=True, text=True,
                             cwd=REPO, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs the repository's git history")
    (tmp_path / "old_networks.py").write_text(src)
    out = {}
    for tag in ("old", "new"):
        r = subprocess.run([sys.executable, "-c", _IDENTITY_RUN, tag, str(tmp_path / "old_networks.py"),
                            str(tmp_path / tag)], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out[tag] = r.stdout.split()
    assert out["old"][0] == "old" and out["new"][0].endswith("training/networks.py")  # each ran its own networks
    assert out["old"][1] == out["new"][1]  # sha256 of every weight and buffer after 4 steps
