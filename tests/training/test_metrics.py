"""Tests for training/metrics.py and training/classifier.py.

Metric functions are checked against values computed by hand or closed forms; the classifier against a
2-class subset of real MNIST with a tiny training run (a few seconds on 2 cores).
"""

import gzip
import math

import numpy as np
import pytest

from core.data import DATA_HINT, default_data_root

from training import metrics as M

MNIST = default_data_root() / "mnist"  # $NEMGAN_DATA_DIR, else ../shared/data


# --------------------------------------------------------------------------------------------------
# Clustering metrics
# --------------------------------------------------------------------------------------------------


def test_hungarian_acc_permuted_perfect_clustering_is_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=1000)
    perm = rng.permutation(10)
    pred = perm[y]
    assert M.hungarian_acc(y, pred) == 1.0
    # the mapping inverts the permutation: cluster perm[c] -> label c
    assert M.hungarian_mapping(y, pred) == {int(perm[c]): c for c in range(10)}


def test_hungarian_hand_computed_case():
    # y    = 0 0 1 1 2 2
    # pred = 1 1 0 0 0 2
    # contingency (label x cluster): label 0 -> cluster 1 twice; label 1 -> cluster 0 twice;
    # label 2 -> cluster 0 once, cluster 2 once. Best one-to-one: 1->0 (2), 0->1 (2), 2->2 (1) = 5/6.
    y = [0, 0, 1, 1, 2, 2]
    pred = [1, 1, 0, 0, 0, 2]
    assert M.hungarian_acc(y, pred) == pytest.approx(5 / 6)
    assert M.hungarian_mapping(y, pred) == {1: 0, 0: 1, 2: 2}
    # purity: cluster 0 = {1,1,2} -> 2, cluster 1 = {0,0} -> 2, cluster 2 = {2} -> 1; 5/6 as well
    assert M.purity(y, pred) == pytest.approx(5 / 6)


def test_hungarian_rectangular_more_clusters_than_classes():
    # 4 singleton-ish clusters for 2 labels: only 2 clusters can be matched one-to-one -> 2/4 correct,
    # while purity (many-to-one) is perfect.
    y = [0, 0, 1, 1]
    pred = [0, 1, 2, 3]
    assert M.hungarian_acc(y, pred) == 0.5
    assert M.purity(y, pred) == 1.0
    mapping = M.hungarian_mapping(y, pred)
    assert len(mapping) == 2 and sorted(mapping.values()) == [0, 1]


def test_hungarian_rectangular_fewer_clusters_than_classes():
    # everything in one cluster: it can match one label of 3 equally sized ones -> 1/3
    y = [0, 0, 1, 1, 2, 2]
    pred = [7, 7, 7, 7, 7, 7]
    assert M.hungarian_acc(y, pred) == pytest.approx(1 / 3)
    assert M.purity(y, pred) == pytest.approx(1 / 3)
    assert list(M.hungarian_mapping(y, pred)) == [7]


def test_purity_by_hand():
    # cluster 0 = labels {0,0} -> majority count 2; cluster 1 = labels {0,1,1,2} -> majority count 2
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 1]
    assert M.purity(y, pred) == pytest.approx(4 / 6)


def test_nmi_ari_identical_and_independent():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=20000)
    relabelled = (y + 3) % 10
    assert M.nmi(y, relabelled) == pytest.approx(1.0)
    assert M.ari(y, relabelled) == pytest.approx(1.0)
    indep = rng.integers(0, 10, size=20000)
    assert M.nmi(y, indep) < 0.01
    assert abs(M.ari(y, indep)) < 0.01


def test_clustering_report_keys_and_validation():
    r = M.clustering_report([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2])
    assert set(r) == {"acc", "nmi", "ari", "purity", "n_samples"}
    assert r["n_samples"] == 6 and r["acc"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        M.hungarian_acc([0, 1], [0, 1, 2])


# --------------------------------------------------------------------------------------------------
# Priors
# --------------------------------------------------------------------------------------------------


def test_prior_error_values():
    learned = [0.5, 0.3, 0.2]
    true = [0.4, 0.4, 0.2]
    r = M.prior_error(learned, true)
    assert r["l1"] == pytest.approx(0.2)
    assert r["max_abs"] == pytest.approx(0.1)
    # KL(true || learned) = 0.4 ln(0.4/0.5) + 0.4 ln(0.4/0.3) + 0.2 ln(1)
    assert r["kl"] == pytest.approx(0.4 * math.log(0.4 / 0.5) + 0.4 * math.log(0.4 / 0.3))
    assert M.prior_error(true, true) == {"l1": 0.0, "max_abs": 0.0, "kl": 0.0}
    # a collapsed learned mode gives a large but finite KL
    assert math.isfinite(M.prior_error([1.0, 0.0], [0.5, 0.5])["kl"])


@pytest.mark.parametrize(
    "learned,true",
    [([0.5, 0.5], [0.2, 0.3, 0.5]), ([0.6, 0.6], [0.5, 0.5]), ([1.2, -0.2], [0.5, 0.5]), ([[0.5, 0.5]], [0.5, 0.5])],
)
def test_prior_error_validation(learned, true):
    with pytest.raises(ValueError):
        M.prior_error(learned, true)


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def test_frechet_identical_stats_is_zero():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(500, 8))
    mu, sigma = M.feature_stats(f)
    assert M.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -1.0, 0.5), (3.0, 0.1, 2.5, 4.0)])
def test_frechet_1d_closed_form(m1, s1, m2, s2):
    # for 1-D Gaussians with std s: (m1-m2)^2 + s1^2 + s2^2 - 2 s1 s2 = (m1-m2)^2 + (s1-s2)^2
    d = M.frechet_distance(m1, s1**2, m2, s2**2)
    assert d == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2)


def test_frechet_singular_covariance_is_finite():
    # fewer samples than dimensions -> rank-deficient covariances, the case pytorch-fid's eps*I handles
    rng = np.random.default_rng(3)
    a, b = M.feature_stats(rng.normal(size=(5, 20))), M.feature_stats(rng.normal(size=(5, 20)) + 1)
    d = M.frechet_distance(*a, *b)
    assert math.isfinite(d) and d > 0


def test_feature_stats_matches_numpy():
    f = np.random.default_rng(4).normal(size=(100, 3)).astype(np.float32)
    mu, sigma = M.feature_stats(f)
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-5)
    np.testing.assert_allclose(sigma, np.cov(f.T), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Generation purity, quality, diversity
# --------------------------------------------------------------------------------------------------


def test_generation_purity_by_hand():
    modes = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [3, 3, 3, 1, 1, 1, 1, 2, 2, 1]
    r = M.generation_purity(modes, preds, n_modes=3, n_classes=4)
    # mode 0: 3 of 4 are class 3; mode 1: all class 1; mode 2: 2 of 3 are class 2
    assert r["per_mode"] == pytest.approx([0.75, 1.0, 2 / 3])
    assert r["mode_to_class"] == [3, 1, 2]
    assert r["mean"] == pytest.approx((0.75 + 1.0 + 2 / 3) / 3)
    assert r["classes_covered"] == 3
    assert r["coverage"] == pytest.approx(3 / 4)


def test_generation_purity_collapsed_and_empty_modes():
    # two modes producing the same class cover one class; mode 2 has no samples
    r = M.generation_purity([0, 0, 1, 1], [5, 5, 5, 5], n_modes=3, n_classes=10)
    assert r["mode_to_class"] == [5, 5, -1]
    assert math.isnan(r["per_mode"][2])
    assert r["mean"] == 1.0 and r["classes_covered"] == 1 and r["coverage"] == pytest.approx(0.1)


def test_generation_purity_score_folds_in_coverage():
    # ten modes that all draw the same class: every mode is pure (mean 1.0) but the generator covers one class
    modes = np.repeat(np.arange(10), 20)
    r = M.generation_purity(modes, np.full(200, 4), n_modes=10)
    assert r["mean"] == 1.0 and r["coverage"] == pytest.approx(0.1) and r["score"] == pytest.approx(0.1)
    # a perfect conditional generator (modes permuted against classes): 1.0
    assert M.generation_purity(modes, (modes + 3) % 10, n_modes=10)["score"] == 1.0
    # by hand: mode 0 -> 3 (3 of 4), mode 1 -> 1 (3 of 3), mode 2 -> 2 (2 of 3): 8 of 10 samples
    r = M.generation_purity([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], [3, 3, 3, 1, 1, 1, 1, 2, 2, 1], n_modes=3, n_classes=4)
    assert r["score"] == pytest.approx(0.8)
    # two modes share one class: one of them is matched, the other's samples count as wrong
    assert M.generation_purity([0, 0, 1, 1], [5, 5, 5, 5], n_modes=3, n_classes=10)["score"] == pytest.approx(0.5)


def test_quality_score_closed_form_and_monotone():
    train = np.zeros((3, 4), np.float32)
    train[1, 0] = 100.0  # far away: never the nearest neighbour
    qs = []
    for d in [0.0, 0.5, 1.0, 2.0, 5.0]:
        gen = np.zeros((1, 4), np.float32)
        gen[0, 1] = d  # distance d to the origin
        q = M.quality_score(gen, train, alpha=1.0)
        assert q == pytest.approx(1 - math.exp(d) / (math.exp(d) + 1.0), rel=1e-5)
        qs.append(q)
    assert qs[0] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(qs, qs[1:]))
    # huge distances must not overflow exp()
    assert M.quality_score(np.full((1, 4), 1e4, np.float32), train) == pytest.approx(0.0, abs=1e-12)


def test_nearest_neighbor_distance_matches_brute_force():
    rng = np.random.default_rng(5)
    q, r = rng.normal(size=(300, 16)), rng.normal(size=(2000, 16))
    brute = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(M.nearest_neighbor_distance(q, r), brute, rtol=1e-4)


def test_ssim_identity_and_symmetry():
    rng = np.random.default_rng(6)
    a, b = rng.random((4, 1, 28, 28)), rng.random((4, 1, 28, 28))
    np.testing.assert_allclose(M.ssim(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(M.ssim(a, b), M.ssim(b, a))
    assert np.all(np.abs(M.ssim(a, b)) < 0.2)  # independent noise is nearly uncorrelated


def test_diversity_identical_images_and_class_entropy():
    img = np.random.default_rng(7).uniform(-1, 1, size=(1, 1, 28, 28)).astype(np.float32)
    same = np.repeat(img, 50, axis=0)
    uniform_classes = np.arange(50) % 10
    r = M.diversity_score(same, uniform_classes, n_classes=10, max_pairs=200)
    assert r["intra"] == pytest.approx(0.0, abs=1e-9)
    assert r["inter"] == pytest.approx(1.0)  # 5 of each of 10 classes: maximal entropy
    assert r["diversity"] == pytest.approx(0.0, abs=1e-4)

    noise = np.random.default_rng(8).integers(0, 256, size=(50, 1, 28, 28), dtype=np.uint8)
    r = M.diversity_score(noise, np.zeros(50, np.int64), n_classes=10, max_pairs=200)
    assert r["intra"] > 0.8  # unrelated images
    assert r["inter"] == 0.0  # a single class
    assert r["diversity"] == 0.0

    # combined score is the geometric mean of the two
    r = M.diversity_score(noise, np.arange(50) % 2, n_classes=4, max_pairs=200)
    assert r["inter"] == pytest.approx(0.5)  # log 2 / log 4
    assert r["diversity"] == pytest.approx(math.sqrt(r["intra"] * r["inter"]))


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_lists_builtin_metrics_and_rejects_unknown():
    assert {"cluster", "fcd", "gen_purity", "prior_error", "quality_diversity"} <= set(M.list_metrics())
    with pytest.raises(ValueError, match="available") as e:
        M.compute_metrics(["cluster", "no_such_metric"], M.MetricContext())
    assert "no_such_metric" in str(e.value)


def test_registry_missing_context_field():
    with pytest.raises(ValueError, match="true_priors"):
        M.compute_metrics(["prior_error"], M.MetricContext(learned_priors=np.array([0.5, 0.5])))


def test_registry_cluster_and_prior_error_end_to_end():
    # Encode the label in the pixel values so a fake inverter can "recover" it, permuted.
    rng = np.random.default_rng(9)
    y = rng.integers(0, 10, size=2500)
    x = np.repeat((y * 20).astype(np.uint8)[:, None, None, None], 28, axis=2).repeat(28, axis=3)
    perm = rng.permutation(10)

    def h_predict(xf):
        assert xf.dtype == np.float32 and xf.min() >= -1 and xf.max() <= 1
        labels = np.rint((xf[:, 0, 0, 0] + 1) * 127.5 / 20).astype(np.int64)
        return perm[labels]

    ctx = M.MetricContext(
        h_predict=h_predict, x_test=x, y_test=y, n_modes=10,
        learned_priors=np.full(10, 0.1), true_priors=np.full(10, 0.1), batch_size=1000,
    )
    out = M.compute_metrics(["cluster", "prior_error"], ctx)
    assert out["cluster"]["acc"] == 1.0 and out["cluster"]["nmi"] == pytest.approx(1.0)
    assert out["cluster"]["n_samples"] == 2500
    assert out["prior_error"]["l1"] == pytest.approx(0.0)


def test_register_metric_decorator():
    @M.register_metric("_test_constant")
    def _const(ctx):
        return {"value": 1.0}

    try:
        assert "_test_constant" in M.list_metrics()
        assert M.compute_metrics(["_test_constant"], M.MetricContext()) == {"_test_constant": {"value": 1.0}}
        with pytest.raises(ValueError):
            M.register_metric("_test_constant")(_const)
    finally:
        M.METRICS.pop("_test_constant")


# --------------------------------------------------------------------------------------------------
# Classifier on a 2-class subset of real MNIST
# --------------------------------------------------------------------------------------------------


def _read_idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(MNIST / name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@pytest.fixture(scope="module")
def mnist_38():
    """Digits 3 and 8 (a pair the classifier must actually learn to separate), labels remapped to 0/1."""
    if not MNIST.exists():
        pytest.skip(f"needs MNIST under {MNIST}: {DATA_HINT}")
    out = {}
    for split, prefix in [("train", "train"), ("test", "t10k")]:
        x = _read_idx(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
        y = _read_idx(f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
        keep = np.flatnonzero((y == 3) | (y == 8))[:2000]
        out[split] = (np.ascontiguousarray(x[keep]), (y[keep] == 8).astype(np.int64))
    return out


@pytest.fixture(scope="module")
def tiny_clf(mnist_38):
    import torch

    from training.classifier import train_classifier

    torch.set_num_threads(1)
    x, y = mnist_38["train"]
    return train_classifier(x, y, n_classes=2, steps=200, batch_size=64, seed=0, progress=False)


def test_tiny_classifier_learns_two_mnist_digits(tiny_clf, mnist_38):
    from core.images import uint8_to_model as to_float
    from training.classifier import predict

    x, y = mnist_38["test"]
    labels, feats = predict(tiny_clf, to_float(x))
    assert labels.dtype == np.int64 and feats.dtype == np.float32
    assert feats.shape == (len(x), tiny_clf.feature_dim)
    assert (labels == y).mean() > 0.9
    # uint8 input is converted the same way
    np.testing.assert_array_equal(predict(tiny_clf, x)[0], labels)


def test_classifier_save_load_round_trip(tiny_clf, mnist_38, tmp_path):
    import torch

    from core.images import uint8_to_model as to_float
    from training.classifier import load_classifier, save_classifier

    path = tmp_path / "clf.pt"
    save_classifier(tiny_clf, path)
    loaded = load_classifier(path)
    assert loaded.model_args == tiny_clf.model_args
    xb = torch.from_numpy(to_float(mnist_38["test"][0][:64]))
    with torch.no_grad():
        assert torch.equal(loaded(xb), tiny_clf.eval()(xb))
        assert torch.equal(loaded.features(xb), tiny_clf.features(xb))


def test_get_or_train_classifier_uses_cache(tiny_clf, mnist_38, tmp_path, monkeypatch):
    import training.classifier as C

    x, y = mnist_38["train"]
    C.save_classifier(tiny_clf, tmp_path / "mnist38-classifier.pt")

    def no_training(*a, **k):
        raise AssertionError("should have loaded the cached classifier")

    monkeypatch.setattr(C, "train_classifier", no_training)
    clf = C.get_or_train_classifier("mnist38", x, y, 2, tmp_path)
    assert clf.model_args == tiny_clf.model_args

    # a cache miss trains and writes the file
    calls = []
    monkeypatch.setattr(C, "train_classifier", lambda *a, **k: calls.append(1) or tiny_clf)
    C.get_or_train_classifier("other", x, y, 2, tmp_path)
    assert calls == [1] and (tmp_path / "other-classifier.pt").exists()


def test_registry_generation_metrics_with_real_images_as_generator(tiny_clf, mnist_38):
    # A "perfect" conditional generator: mode k returns real test images of class k.
    x_test, y_test = mnist_38["test"]
    x_train, _ = mnist_38["train"]
    xf = x_test.astype(np.float32) / 127.5 - 1

    def generate(n, mode, sigma, seed):
        rng = np.random.default_rng(seed)
        modes = rng.integers(0, 2, size=n) if mode is None else np.full(n, mode)
        idx = np.array([rng.choice(np.flatnonzero(y_test == k)) for k in modes])
        return xf[idx], modes

    ctx = M.MetricContext(
        generate=generate, x_test=x_test, y_test=y_test, x_train=x_train[:1000], n_modes=2,
        classifier=tiny_clf, num_gen=400, sigmas=[1.0], batch_size=256,
    )
    out = M.compute_metrics(["gen_purity", "fcd", "quality_diversity"], ctx)
    assert out["gen_purity"]["mean"] > 0.9 and out["gen_purity"]["coverage"] == 1.0
    assert out["gen_purity"]["classes_covered"] == 2.0
    assert out["fcd"]["fcd"] >= 0 and math.isfinite(out["fcd"]["fcd"])
    qd = out["quality_diversity"]
    assert set(qd) == {"quality@1", "diversity@1", "combined@1", "quality_alpha"}
    # alpha is calibrated so that real held-out images score ~0.5; these "generated" images are real
    assert 0.3 < qd["quality@1"] < 0.7 and 0 < qd["diversity@1"] <= 1
    assert qd["combined@1"] == pytest.approx(math.sqrt(qd["quality@1"] * qd["diversity@1"]))


def test_reconstruction_metric_identity_and_swapped_class(tiny_clf, mnist_38):
    """g(h1(x)) = x scores the classifier's own accuracy; a reconstruction that draws the other digit
    (here: each image replaced by one of the other class) scores far below it."""
    from core.images import uint8_to_model as to_float

    x, y = mnist_38["test"]
    x, y = x[:400], y[:400]
    ctx = M.MetricContext(classifier=tiny_clf, x_test=x, y_test=y, reconstruct=lambda b: b, batch_size=128)
    r = M.compute_metrics(["reconstruction"], ctx)["reconstruction"]
    assert r["acc"] == pytest.approx(r["acc_images"]) and r["agreement"] == 1.0 and r["acc"] > 0.9
    other = {c: to_float(x[y != c][:1]) for c in (0, 1)}
    img_label = {to_float(x[i:i + 1]).tobytes(): y[i] for i in range(len(x))}

    def swap(b):
        return np.concatenate([other[img_label[b[i:i + 1].tobytes()]] for i in range(len(b))])

    ctx = M.MetricContext(classifier=tiny_clf, x_test=x, y_test=y, reconstruct=swap, batch_size=128)
    r = M.compute_metrics(["reconstruction"], ctx)["reconstruction"]
    assert r["acc"] < 0.2 and r["agreement"] < 0.2
