"""core.ood (the OOD score) and core.inputs (the input declaration, stated float ranges): pure numpy."""

from __future__ import annotations

import numpy as np
import pytest

from core import inputs, ood
from core.errors import ManifestError


def _blobs(rng, n, k=3, d=8, spread=0.3):
    """n latents around k well-separated centres, with one-hot-like 'logits' saying which."""
    modes = rng.integers(0, k, n)
    centres = np.eye(k, d) * 4
    z = centres[modes] + spread * rng.standard_normal((n, d))
    logits = np.eye(k)[modes] * 5
    return z.astype(np.float32), logits.astype(np.float32)


def test_fit_sets_threshold_at_the_stated_fpr_and_flags_far_latents():
    rng = np.random.default_rng(0)
    zf, lf = _blobs(rng, 3000)
    zh, lh = _blobs(rng, 2000)
    cal = ood.fit(zf, lf, zh, lh, fpr=0.05)
    assert cal.info["holdout_fpr"] == pytest.approx(0.05, abs=0.01)
    zt, lt = _blobs(rng, 2000)
    assert np.mean(cal.flag(cal.score(zt, lt))) == pytest.approx(0.05, abs=0.02)  # unseen in-distribution
    far = zt + 3.0  # same modes, latents off the training cloud
    assert np.mean(cal.flag(cal.score(far, lt))) > 0.99
    # a typical training latent scores about 0 (standardised log distance)
    assert abs(float(np.median(cal.score(zt, lt)))) < 0.5


def test_modes_without_images_and_tiny_modes_still_score():
    rng = np.random.default_rng(1)
    z, logits = _blobs(rng, 60, k=3, d=20)
    logits = np.concatenate([logits, np.zeros((60, 2), np.float32) - 9], 1)  # modes 3, 4 never predicted
    cal = ood.fit(z[:40], logits[:40], z[40:], logits[40:])
    assert cal.means.shape == (5, 20) and cal.whiten.shape == (5, 20, 20)
    s = cal.score(z, np.eye(5, dtype=np.float32)[np.arange(60) % 5] * 5)  # rows assigned to every mode
    assert np.all(np.isfinite(s))


def test_pixel_component_needs_the_reconstruction():
    rng = np.random.default_rng(2)
    z, lg = _blobs(rng, 300)
    x = rng.uniform(-1, 1, (300, 1, 4, 4)).astype(np.float32)
    recon = x + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    cal = ood.fit(z[:200], lg[:200], z[200:], lg[200:], x_fit=x[:200], recon_fit=recon[:200], x_hold=x[200:],
                  recon_hold=recon[200:], components=(ood.LATENT, ood.PIXEL))
    assert cal.needs_reconstruction
    with pytest.raises(ValueError, match="reconstruction"):
        cal.score(z, lg)
    bad = cal.score(z[200:], lg[200:], x[200:], -x[200:])  # reconstructions far from the images
    assert np.mean(cal.flag(bad)) > 0.9


def test_save_load_roundtrip_and_section_validation(tmp_path):
    rng = np.random.default_rng(3)
    z, lg = _blobs(rng, 500)
    cal = ood.fit(z[:300], lg[:300], z[300:], lg[300:], info={"images": "synthetic"})
    cal.save(tmp_path)
    section = cal.to_manifest()
    back = ood.OodCalibration.load(section, tmp_path)
    np.testing.assert_array_equal(back.score(z, lg), cal.score(z, lg))
    assert back.threshold == cal.threshold and back.components == (ood.LATENT,)
    for broken, msg in [({**section, "fpr": 1.5}, "fpr"), ({**section, "components": ["entropy"]}, "components"),
                        ({**section, "threshold": float("nan")}, "threshold"),
                        ({k: v for k, v in section.items() if k != "log_std"}, "missing"),
                        ({**section, "log_std": {ood.LATENT: 0.0}}, "log_std"),
                        ({**section, "file": "nope.npz"}, "missing")]:
        with pytest.raises(ManifestError, match=msg):
            ood.validate_section(broken, tmp_path)


def test_input_ranges_are_stated_not_guessed():
    assert inputs.parse_range(None) is None and inputs.parse_range("") is None
    assert inputs.parse_range("0-1") == (0, 1) and inputs.parse_range("0..255") == (0, 255)
    assert inputs.parse_range("-1-1") == (-1, 1)
    with pytest.raises(ValueError, match="input_range must be one of"):
        inputs.parse_range("0-100")
    x = np.array([0.0, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(inputs.to_model_range(x, (0, 1)), [-1, 0, 1])
    np.testing.assert_allclose(inputs.to_model_range(x * 255, (0, 255)), [-1, 0, 1], atol=1e-6)
    with pytest.raises(ValueError, match="outside the stated input_range"):
        inputs.to_model_range(x * 255, (0, 1))
    with pytest.raises(ValueError, match="NaN"):
        inputs.to_model_range(np.array([np.nan], np.float32), (0, 1))


def test_polarity_is_measured():
    dark = np.zeros((4, 1, 28, 28), np.uint8)
    dark[:, :, 10:18, 10:18] = 255
    assert inputs.polarity(dark) == "white-on-black"
    assert inputs.polarity(255 - dark) == "black-on-white"
    assert inputs.polarity(np.full((2, 1, 8, 8), 128, np.uint8)) == "mixed"
    d = inputs.declare(dark, 1, 28, 28)
    inputs.validate_section(d)
    with pytest.raises(ManifestError, match="polarity"):
        inputs.validate_section({**d, "polarity": "upside-down"})
