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
    cal = ood.fit(zf, lf, zh, lh, fpr=0.05, components=(ood.LATENT,))
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
    cal = ood.fit(z[:40], logits[:40], z[40:], logits[40:], components=(ood.LATENT,))
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
    cal = ood.fit(z[:300], lg[:300], z[300:], lg[300:], info={"images": "synthetic"}, components=(ood.LATENT,))
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


# ---------------------------------------------------------------------------------------------- pixel_pca


def _images(rng, n, rank=6, side=8):
    """n 'images' [N,1,side,side] in -1..1 lying near a rank-`rank` subspace (a clear spectral gap)."""
    d = side * side
    basis = np.linalg.qr(np.random.default_rng(side).standard_normal((d, rank)))[0]  # one subspace per side
    coef = rng.standard_normal((n, rank)) * np.linspace(3, 1, rank)
    x = 0.1 * (coef @ basis.T) + 0.01 * rng.standard_normal((n, d)) - 0.5
    return x.reshape(n, 1, side, side).astype(np.float32)


def _residual_reference(x, x_fit, p):
    """Energy outside the top-p principal components by SVD, projected and subtracted explicitly (float64)."""
    xf = x_fit.reshape(len(x_fit), -1).astype(np.float64)
    m = xf.mean(0)
    v = np.linalg.svd(xf - m, full_matrices=False)[2][:p].T
    d = x.reshape(len(x), -1).astype(np.float64) - m
    r = d - d @ v @ v.T
    return (r * r).sum(1) / d.shape[1]


def test_pixel_pca_matches_a_numpy_reference():
    rng = np.random.default_rng(10)
    xf, xt = _images(rng, 400), _images(rng, 50)
    mean, basis, explained = ood.fit_pca(xf, dims=6)
    assert mean.shape == (64,) and basis.shape == (64, 6) and basis.dtype == np.float32
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-5)
    assert 0.95 < explained <= 1.0
    np.testing.assert_allclose(ood.pixel_pca(xt, mean, basis), _residual_reference(xt, xf, 6), rtol=1e-3, atol=1e-7)
    noise = rng.uniform(-1, 1, xt.shape).astype(np.float32)
    assert ood.pixel_pca(noise, mean, basis).min() > 100 * ood.pixel_pca(xt, mean, basis).max()
    # dims is capped by the pixels and the images there are (a tenth of them: few images are not all fitted)
    assert ood.fit_pca(xf[:50], dims=64)[1].shape == (64, 5) and ood.fit_pca(xf[:5], dims=64)[1].shape == (64, 1)
    assert ood.fit_pca(xf, dims=100)[1].shape == (64, 40)


def test_pixel_pca_randomized_path_agrees_with_the_exact_one(monkeypatch):
    rng = np.random.default_rng(11)
    xf, xt = _images(rng, 400), _images(rng, 50)
    exact = ood.fit_pca(xf, dims=6)
    monkeypatch.setattr(ood, "_EXACT_PCA_MAX_DIM", 0)  # what a model with > 4096 values per image takes
    approx = ood.fit_pca(xf, dims=6)
    np.testing.assert_allclose(ood.pixel_pca(xt, *approx[:2]), ood.pixel_pca(xt, *exact[:2]), rtol=1e-2)
    assert approx[2] == pytest.approx(exact[2], rel=1e-3)


def test_pixel_pca_calibration_round_trip(tmp_path):
    rng = np.random.default_rng(12)
    z, lg = _blobs(rng, 600)
    x = _images(rng, 600)
    cal = ood.fit(z[:400], lg[:400], z[400:], lg[400:], x_fit=x[:400], x_hold=x[400:], pca_dims=6)
    assert cal.components == ood.DEFAULT_COMPONENTS == (ood.LATENT, ood.PIXEL_PCA)
    assert cal.needs_image and not cal.needs_reconstruction
    assert cal.info["pixel_pca"]["dims"] == 6 and cal.info["holdout_fpr"] == pytest.approx(0.05, abs=0.02)
    # the score: the mean of the two standardised log values
    v = cal.values(z, lg, x)
    want = sum((np.log(v[c]) - cal.log_mean[c]) / cal.log_std[c] for c in cal.components) / 2
    np.testing.assert_allclose(cal.score(z, lg, x), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs the image"):
        cal.score(z, lg)
    with pytest.raises(ValueError, match="calibration images"):
        ood.fit(z[:400], lg[:400], z[400:], lg[400:])
    cal.save(tmp_path)
    section = cal.to_manifest()
    back = ood.OodCalibration.load(section, tmp_path)
    assert back.components == cal.components and back.pca_basis.shape == (64, 6)
    np.testing.assert_array_equal(back.score(z, lg, x), cal.score(z, lg, x))
    # images off the training images' subspace are flagged, the latents being typical
    noise = rng.uniform(-1, 1, x[400:].shape).astype(np.float32)
    assert np.mean(back.flag(back.score(z[400:], lg[400:], noise))) > 0.99
    # an ood.npz without the basis cannot serve a pixel_pca section
    np.savez(tmp_path / "ood.npz", means=cal.means, whiten=cal.whiten)
    with pytest.raises(ManifestError, match="pca_basis"):
        ood.OodCalibration.load(section, tmp_path)
    np.savez(tmp_path / "ood.npz", means=cal.means, whiten=cal.whiten, pca_mean=cal.pca_mean,
             pca_basis=cal.pca_basis[:10])
    with pytest.raises(ManifestError, match="pca_mean"):
        ood.OodCalibration.load(section, tmp_path)


def test_latent_only_manifests_written_before_pixel_pca_load_and_score_as_before(tmp_path):
    """An ood.npz of the old format (means, whiten only) with a latent-only section: same score as the
    formula it was written for, computed here by hand; the image is not needed."""
    rng = np.random.default_rng(13)
    z, lg = _blobs(rng, 500)
    means, whiten = ood.fit_latent(z[:300], lg[:300].argmax(1), 3)
    np.savez(tmp_path / "ood.npz", means=means, whiten=whiten)
    section = {"file": "ood.npz", "components": ["latent_mahalanobis"], "score": "...",
               "log_mean": {"latent_mahalanobis": -0.25}, "log_std": {"latent_mahalanobis": 0.5},
               "threshold": 1.97, "fpr": 0.05, "calibration": {"n_fit": 300}}
    cal = ood.OodCalibration.load(section, tmp_path)
    assert cal.components == (ood.LATENT,) and cal.pca_basis is None and not cal.needs_image
    k = lg.argmax(1)
    y = np.einsum("nd,nde->ne", z.astype(np.float64) - means[k], whiten[k].astype(np.float64))
    want = (np.log((y * y).sum(1) / z.shape[1]) + 0.25) / 0.5
    np.testing.assert_allclose(cal.score(z, lg), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(cal.flag(cal.score(z, lg)), cal.score(z, lg) > 1.97)
