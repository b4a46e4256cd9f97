"""The issue-9 extensions: information maximisation, augmentation consistency, the affine warp,
labels per class, label-free model selection and the presets."""

import json
import math

import numpy as np
import pytest
import torch

from training import loss as L
from training.augment import random_affine
from training.config import PRESETS, TrainConfig, preset
from training.train import Trainer, per_class_indices, train


def test_info_max_prefers_confident_balanced_assignments():
    k = 4
    balanced_confident = torch.eye(k).repeat(8, 1) * 20  # every mode used, each sample sure
    collapsed = torch.zeros(32, k)
    collapsed[:, 0] = 20  # one mode for everything: confident but unbalanced
    uncertain = torch.zeros(32, k)  # balanced on average, but no sample is assigned
    losses = {n: L.info_max(x)[0].item() for n, x in
              (("good", balanced_confident), ("collapsed", collapsed), ("uncertain", uncertain))}
    assert losses["good"] < losses["collapsed"] and losses["good"] < losses["uncertain"]
    _, mi = L.info_max(balanced_confident)
    assert mi.item() == pytest.approx(math.log(k), abs=1e-4)  # I(x; y) = H(y) when y is a function of x
    assert L.info_max(collapsed)[1].item() == pytest.approx(0.0, abs=1e-4)


def test_info_max_balance_weight_scales_only_the_marginal_term():
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    l1, mi = L.info_max(logits, 1.0)
    l2, _ = L.info_max(logits, 2.0)
    p = logits.softmax(1)
    marg = -(p.mean(0) * p.mean(0).log()).sum()
    assert (l1 - l2).item() == pytest.approx(marg.item(), rel=1e-5)
    assert mi.item() == pytest.approx(-l1.item(), rel=1e-5)


def test_consistency_is_zero_gradient_on_the_target_and_minimal_when_agreeing():
    clean = torch.tensor([[5.0, 0.0, 0.0]], requires_grad=True)
    agree = torch.tensor([[5.0, 0.0, 0.0]], requires_grad=True)
    disagree = torch.tensor([[0.0, 5.0, 0.0]], requires_grad=True)
    la, ld = L.consistency(clean, agree), L.consistency(clean, disagree)
    assert la.item() < ld.item()
    (la + ld).backward()
    assert clean.grad is None or torch.all(clean.grad == 0)  # the clean prediction is a fixed target
    # Sharpening (temperature -> 0) turns the target into the one-hot argmax (a pseudo-label); at 1 it is
    # the soft prediction itself, and the loss is its entropy.
    soft = torch.tensor([[1.0, 0.5, 0.0]])
    logp = soft.log_softmax(1)
    assert L.consistency(soft, soft, 0.01).item() == pytest.approx(-logp[0, 0].item(), rel=1e-4)
    assert L.consistency(soft, soft, 1.0).item() == pytest.approx(-(logp.exp() * logp).sum().item(), rel=1e-5)


def test_random_affine_identity_background_and_determinism():
    x = -torch.ones(6, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    ident = random_affine(x, torch.Generator().manual_seed(0), 0, 0, 0, 0)
    assert torch.allclose(ident, x, atol=1e-5)  # no warp asked: the image is unchanged
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, x, atol=1e-3)
    assert a[:, :, 0, 0].allclose(torch.full_like(a[:, :, 0, 0], -1.0), atol=1e-5)  # corners stay background
    assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5
    # Each image gets its own warp.
    assert not torch.allclose(a[0], a[1], atol=1e-3)


def test_per_class_indices_exact_count_and_error():
    y = np.repeat(np.arange(3), [5, 7, 9])
    idx = per_class_indices(y, 4, seed=0)
    assert np.bincount(y[idx]).tolist() == [4, 4, 4]
    assert np.array_equal(idx, per_class_indices(y, 4, seed=0))
    with pytest.raises(ValueError, match="fewer than labeled_per_class"):
        per_class_indices(y, 6, seed=0)


def test_presets_validate_and_keep_the_paper_rows_paper():
    for name, fields in PRESETS.items():
        cfg = TrainConfig(**fields).validate()
        assert cfg.select_by == "mi", f"{name} must select its checkpoint without labels"
        if name.endswith("-paper"):
            assert cfg.im_weight == 0 and cfg.consistency_weight == 0 and cfg.gan_loss == "wgan-gp"
    assert "unsup" in "".join(PRESETS) and TrainConfig(**preset("mnist-unsup")).semi_supervised is False
    assert TrainConfig(**preset("mnist-10pc")).labeled_per_class == 10
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ValueError, match="select_by"):
        TrainConfig(select_by="labels").validate()


def test_extensions_train_and_selection_is_label_free(tmp_path, monkeypatch):
    """A dry run with both terms: they are logged, and best.pt follows val_mi even when val_acc disagrees."""
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), dry_run=True, im_weight=1.0, consistency_weight=1.0,
                      labeled_per_class=2)
    calls = iter([{"val_mi": 0.5, "val_acc": 0.9}, {"val_mi": 0.9, "val_acc": 0.2}, {"val_mi": 0.1, "val_acc": 1.0}])

    def fake_eval(self):  # the selection rule is what is under test, so the scores are scripted
        return dict(next(calls))

    monkeypatch.setattr(Trainer, "evaluate", fake_eval)
    t = Trainer(cfg, progress=False)
    t.cfg.steps, t.cfg.eval_every, t.cfg.log_every, t.cfg.ckpt_every, t.cfg.sample_every = 3, 1, 1, 3, 3
    summary = t.fit()
    assert summary["best"]["step"] == 2 and summary["best"]["by"] == "val_mi"
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert all("loss_im" in r and "loss_cons" in r and "loss_sup" in r for r in rows)
    assert (tmp_path / "run" / "best.pt").is_file()


def test_evaluate_reports_label_free_signals(tmp_path):
    summary = train(TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True), progress=False)
    row = json.loads((tmp_path / "r" / "stats.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["val_mi"] <= math.log(10) + 1e-6 and 1 <= row["val_modes_used"] <= 10
    assert summary["best"]["by"] == "val_mi"


def test_cosine_lr_decay_reaches_zero_at_the_set_step(tmp_path):
    t = Trainer(TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True, lr_decay_steps=4), progress=False)
    seen = []
    for step in range(6):
        t.step = step
        t.set_learning_rates()
        seen.append([t.opt_d.param_groups[0]["lr"], t.opt_g.param_groups[0]["lr"], t.opt_h.param_groups[0]["lr"]])
    cfg = t.cfg
    assert seen[0] == pytest.approx([cfg.lr_d, cfg.lr_g, cfg.lr_h])
    assert seen[2] == pytest.approx([cfg.lr_d / 2, cfg.lr_g / 2, cfg.lr_h / 2])
    assert seen[4] == pytest.approx([0, 0, 0], abs=1e-12) and seen[5] == seen[4]  # stays at 0 past the end


def test_resume_accepts_a_checkpoint_written_before_an_option_existed(tmp_path):
    """A checkpoint from before an option was added ran with its default: resuming it must work."""
    out = tmp_path / "r"
    train(TrainConfig(out_dir=str(out), dry_run=True), progress=False)
    ckpt = torch.load(out / "last.pt", weights_only=False)
    del ckpt["config"]["lr_decay_steps"]
    torch.save(ckpt, out / "last.pt")
    t = Trainer(TrainConfig(out_dir=str(out), dry_run=True, steps=3, val_samples=32), progress=False)
    assert t.resume() and t.step == 3
    t2 = Trainer(TrainConfig(out_dir=str(out), dry_run=True, steps=3, val_samples=32, lr_decay_steps=5),
                 progress=False)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        t2.resume()


def test_random_affine_flip_mirrors_half_and_leaves_the_old_draws_alone():
    x = -torch.ones(64, 1, 8, 8)
    x[:, :, 2:6, 0:3] = 1.0  # a bar on the left: its mirror is on the right
    out = random_affine(x, torch.Generator().manual_seed(0), 0, 0, 0, 0, flip=True)
    mirrored = torch.flip(x, dims=[3])
    same = [torch.allclose(o, a, atol=1e-5) for o, a in zip(out, x)]
    flipped = [torch.allclose(o, m, atol=1e-5) for o, m in zip(out, mirrored)]
    assert all(s != f for s, f in zip(same, flipped))  # each image is exactly one of the two
    assert 16 <= sum(flipped) <= 48  # about half (64 fair coins: this range holds with p > 0.9999)
    # Without flip the warp draws are what they were before the option existed.
    a = random_affine(x, torch.Generator().manual_seed(3))
    b = random_affine(x, torch.Generator().manual_seed(3), flip=False)
    assert torch.equal(a, b)


def test_h_freeze_restores_the_mi_peak_then_trains_g_only(tmp_path, monkeypatch):
    """h_freeze_patience: h goes back to its weights at the held-out MI peak once the peak is old enough,
    no loss moves h after that, g keeps training, and best.pt follows val_gen_agree (label-free)."""
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), dry_run=True, im_weight=1.0, consistency_weight=1.0,
                      h_freeze_patience=2)
    script = iter([(0.5, 0.0), (0.9, 0.0), (0.8, 0.0), (0.7, 0.3), (0.7, 0.6), (0.7, 0.5)])  # (mi, gen_agree)
    h_at: dict[int, dict] = {}

    def fake_eval(self):
        h_at[self.step] = {k: v.clone() for k, v in self.ema.h.state_dict().items()}
        mi, agree = next(script)
        return {"val_mi": mi, "val_acc": 0.1, "val_gen_agree": agree}

    monkeypatch.setattr(Trainer, "evaluate", fake_eval)
    t = Trainer(cfg, progress=False)
    t.cfg.steps, t.cfg.eval_every, t.cfg.log_every, t.cfg.ckpt_every, t.cfg.sample_every = 6, 1, 1, 6, 6
    g0 = [p.clone() for p in t.model.g.parameters()]
    summary = t.fit()
    assert t.h_frozen_at == 4 and t.h_peak["step"] == 2  # the peak at step 2, 2 steps old at step 4
    for net in (t.model.h, t.ema.h):
        for k, v in net.state_dict().items():
            assert torch.equal(v, h_at[2][k]), k  # back at the peak's EMA weights, and never moved again
    assert any(not torch.equal(a, b) for a, b in zip(g0, t.model.g.parameters()))
    assert summary["best"]["by"] == "val_gen_agree" and summary["best"]["step"] == 5
    assert summary["best"]["h_from_step"] == 2 and summary["best"]["h_frozen_at"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert all("loss_im" in r for r in rows[:4]) and not any("loss_im" in r for r in rows[4:])
    assert [r.get("h_frozen_at") for r in rows] == [None, None, None, 4, 4, 4]
    # A resumed run stays frozen (the state lives in last.pt).
    t2 = Trainer(TrainConfig(**{**cfg.to_dict(), "steps": 6}), progress=False)
    assert t2.resume() and t2.h_frozen_at == 4 and not t2.model.h.training


def test_gen_agreement_is_the_share_of_samples_h_puts_in_their_mode(tmp_path, monkeypatch):
    t = Trainer(TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True), progress=False)
    K = t.model.n_modes
    modes = np.repeat(np.arange(K), 100)  # gen_agreement draws 100 of each mode, in mode order
    for pred, want in ((modes, 1.0), ((modes + 1) % K, 0.0), (np.where(modes < 5, modes, 0), 0.5)):
        monkeypatch.setattr(t.ema, "cluster", lambda x, pred=pred: (pred, None))
        assert t.gen_agreement() == pytest.approx(want)
    with pytest.raises(ValueError, match="h_freeze_patience"):
        TrainConfig(h_freeze_patience=-1).validate()


def test_sup_warp_warps_the_labeled_batch_reproducibly(tmp_path):
    def batch(**over):
        t = Trainer(TrainConfig(out_dir=str(tmp_path / "r"), dry_run=True, labeled_per_class=4, sup_augment=0,
                                **over), progress=False)
        x_l, y_l = t.labeled_batch()
        return t, x_l, y_l

    t, plain, y0 = batch()
    _, warped, y1 = batch(sup_warp=True, aug_flip=True)
    _, again, _ = batch(sup_warp=True, aug_flip=True)
    assert torch.equal(y0, y1)  # the same images and labels, warped
    assert torch.equal(warped, again) and not torch.allclose(warped, plain, atol=1e-3)
    assert warped.min() >= -1.0 - 1e-5 and warped.max() <= 1.0 + 1e-5


def test_random_color_recolours_rgb_keeps_grey_and_shape():
    import torch

    from training.augment import random_color

    grey = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(random_color(grey, torch.Generator().manual_seed(0)), grey)
    x = torch.full((64, 3, 8, 8), -0.8)
    x[:, :, 2:6, 2:6] = torch.tensor([0.9, -0.5, 0.1])[:, None, None]  # a reddish square on a dark background
    a = random_color(x, torch.Generator().manual_seed(0))
    b = random_color(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    fg = a[:, :, 3, 3]  # [N, 3]
    assert (fg.argmax(1) != 0).any() and (fg.argmax(1) == 0).any()  # the brightest channel moves
    assert torch.allclose(a[:, :, 0, 0], torch.full((64, 3), -0.8))  # the background stays the background
