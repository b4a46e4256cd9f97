"""Training loop: a dry-run step for every variant, run folder contents, resume, config errors."""

import json

import numpy as np
import pytest
import torch

from training import loss as L
from training.config import TrainConfig
from training.model import NemganModel
from training.train import Trainer, train

VARIANTS = {
    "nemgan": {},
    "nemgan-p-learned": {"latent_kind": "nemgan-p", "priors": "learned"},
    "nemgan-wgan-gp": {"gan_loss": "wgan-gp", "n_critic": 2},
    "semi-supervised": {"labeled_fraction": 0.1, "sup_every": 1},
    "mode-loss-kl": {"mode_loss": "kl", "latent_norm": "l2"},
    "mmgan-static": {"latent_kind": "mmgan-static", "latent_dim": 100},
    "mmgan-dynamic": {"latent_kind": "mmgan-dynamic", "latent_dim": 100},
    "mmgan-supervised": {"latent_kind": "mmgan-static", "latent_dim": 100, "supervised_mmgan": True},
    "ablation-c1-off": {"c1": False},
    "ablation-c2-off": {"c2": False},
    "ablation-c3-on": {"c3": True},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dry_run_every_variant(tmp_path, name):
    cfg = TrainConfig(out_dir=str(tmp_path / name), dry_run=True, **VARIANTS[name])
    summary = train(cfg, progress=False)
    out = tmp_path / name
    assert summary["steps"] == 3
    for f in ("options.json", "stats.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss"))
    assert "val_acc" in rows[-1]
    assert list((out / "samples").glob("*.png"))
    m = NemganModel.load(out)
    assert m.cfg.to_dict() == cfg.to_dict()


def test_ablation_c2_off_keeps_inverter_gradients_out_of_g(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), dry_run=True, c2=False, latent_weight=1.0)
    t = Trainer(cfg, progress=False)
    m = t.model
    z, modes = m.latent.sample(8)
    x = m.g(z)
    z_hat, logits = m.h(x.detach())
    (L.latent_loss(z, z_hat) + L.mode_loss_ce(logits, modes)).backward()
    assert all(p.grad is None for p in m.g.parameters())


def test_c3_sets_data_priors(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), dry_run=True, c3=True)
    t = Trainer(cfg, progress=False)
    assert np.allclose(t.model.latent.priors().detach().numpy(), t.ds.priors, atol=1e-5)


def test_learned_priors_move_alpha(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), dry_run=True, latent_kind="nemgan-p", priors="learned", prior_lr=0.1)
    t = Trainer(cfg, progress=False)
    before = t.model.latent.alpha.detach().clone()
    t.train_step()
    assert not torch.equal(before, t.model.latent.alpha.detach())


def test_resume_continues_exactly(tmp_path):
    base = dict(dry_run=True, seed=3)
    # run A: 3 steps straight
    a = Trainer(TrainConfig(out_dir=str(tmp_path / "a"), steps=3, **base), progress=False)
    a.cfg.log_every = a.cfg.eval_every = a.cfg.sample_every = a.cfg.ckpt_every = 1
    a.fit()
    # run B: 2 steps, then resume to 3
    b = Trainer(TrainConfig(out_dir=str(tmp_path / "b"), steps=2, **base), progress=False)
    b.cfg.log_every = b.cfg.eval_every = b.cfg.sample_every = b.cfg.ckpt_every = 1
    b.fit()
    b2 = Trainer(TrainConfig(out_dir=str(tmp_path / "b"), steps=3, **base), progress=False)
    b2.cfg.log_every = b2.cfg.eval_every = b2.cfg.sample_every = b2.cfg.ckpt_every = 1
    assert b2.resume() and b2.step == 2
    b2.fit()
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b2.model.state_dict().items()):
        assert ka == kb and torch.allclose(va.float(), vb.float(), atol=1e-6), ka


def test_resume_refuses_other_options(tmp_path):
    train(TrainConfig(out_dir=str(tmp_path), dry_run=True), progress=False)
    t = Trainer(TrainConfig(out_dir=str(tmp_path), dry_run=True, latent_dim=60, val_samples=32), progress=False)
    with pytest.raises(ValueError, match="different options"):
        t.resume()


@pytest.mark.parametrize("bad", [
    {"latent_kind": "vae"}, {"gan_loss": "hinge"}, {"priors": "sometimes"}, {"labeled_fraction": 1.5},
    {"batch_size": 1}, {"supervised_mmgan": True}, {"mode_loss": "mse"},
])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()


def test_unknown_config_key_and_image_size():
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="divisible by 4"):
        TrainConfig().net_config(10, (1, 30, 30))


def test_config_for_other_image_sizes(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path))
    m = NemganModel(cfg, 4, (3, 32, 32))
    z, _ = m.latent.sample(2)
    x = m.g(z)
    assert x.shape == (2, 3, 32, 32)
    assert m.h(x)[1].shape == (2, 4) and m.d(x).shape == (2, 1)


def test_losses_known_values():
    assert torch.isclose(L.d_loss_gan(torch.zeros(4, 1), torch.zeros(4, 1)), torch.tensor(2 * np.log(2), dtype=torch.float32))
    z = torch.zeros(2, 4)
    assert L.latent_loss(z, torch.ones(2, 4)).item() == 1.0
    assert torch.isclose(L.mode_loss_kl(torch.zeros(3, 2), torch.tensor([0.5, 0.5])), torch.tensor(0.0), atol=1e-6)
    p = torch.tensor([0.7, 0.3])
    assert torch.isclose(L.prior_kl(p, torch.log(p)), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(L.prior_l1(p, torch.tensor([0.5, 0.5])), torch.tensor(0.4))


def test_ema_tracks_the_live_weights_and_is_exported(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), dry_run=True, ema=0.5)
    t = Trainer(cfg, progress=False)
    t.step = 100  # past the warm-up: decay = 0.5
    g0 = [p.clone() for p in t.ema.g.parameters()]
    t.train_step()
    for p0, pe, p in zip(g0, t.ema.g.parameters(), t.model.g.parameters()):
        assert torch.allclose(pe, 0.5 * p0 + 0.5 * p, atol=1e-6)
    assert all(p.requires_grad for p in t.model.g.parameters())
    off = Trainer(TrainConfig(out_dir=str(tmp_path / "off"), dry_run=True, ema=0.0), progress=False)
    assert off.ema is off.model and all(p.requires_grad for p in off.model.h.parameters())


def test_resume_accepts_run_only_changes(tmp_path):
    train(TrainConfig(out_dir=str(tmp_path / "a"), dry_run=True), progress=False)
    import shutil

    shutil.move(tmp_path / "a", tmp_path / "moved")
    t = Trainer(TrainConfig(out_dir=str(tmp_path / "moved"), dry_run=True, steps=5, threads=1, val_samples=32),
                progress=False)
    assert t.resume() and t.step == 3


def test_mode_loss_through_frozen_h_trains_g_not_h(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), dry_run=True, h_mode_start=-1, latent_weight=0.0)
    t = Trainer(cfg, progress=False)
    m = t.model
    z, modes = m.latent.sample(8)
    x = m.g(z)
    frozen = {k: v.detach() for k, v in m.h.named_parameters()}
    _, logits = torch.func.functional_call(m.h, (frozen, dict(m.h.named_buffers())), (x,))
    L.mode_loss_ce(logits, modes).backward()
    assert all(p.grad is None for p in m.h.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.g.parameters())
    t.train_step()  # the full step runs with the switch
