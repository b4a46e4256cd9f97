"""AUROC of the out-of-distribution score of shipped models: in-distribution test images vs strange ones.

    python benchmarks/ood_auroc.py                       # models/mnist and models/fashion-mnist
    python benchmarks/ood_auroc.py models/mnist --n 2000 # a quicker look
    python benchmarks/ood_auroc.py --report-only         # RESULTS.md's OOD section from the files below

For each model: its own test set (in-distribution, label 0) against the other data set's test set, its
test images inverted (255 - x: black-on-white) and uniform noise (label 1). The score is the one its
manifest ships (core/ood.py, calibrated at export on training images); AUROC by sklearn's
roc_auc_score, higher score = more OOD. Beside it, every candidate the issue names, so the choice can
be checked: the other components (pixel_pca alone and with the latent distance, as export now
fits it), the latent reconstruction |h1(g(h1(x))) - h1(x)|^2, the latent norm
|h1(x)| and the entropy of h2. Also the flag's rates at the shipped threshold: the share of the
in-distribution test images flagged (its false-positive rate on unseen data; calibrated at `fpr` on
held-out training images) and the share of each strange set flagged.

Writes docs/results/ood_auroc.json and the table as docs/results/ood_auroc.txt, and prints it. Torch-free
apart from the data loaders. `--report-only` (or `--results-md` on a run) writes RESULTS.md's OOD section (between
`<!-- ood:begin -->` and `<!-- ood:end -->`) from docs/results/ood_auroc.json and, for the cost of the score,
docs/results/ood_cost.json (benchmarks/ood_cost.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import ood  # noqa: E402
from core.manifest import load_manifest  # noqa: E402
from core.modes import softmax  # noqa: E402
from training.calibrate import Networks, fit_on_images, training_images  # noqa: E402
from training.dataset import load_dataset  # noqa: E402

TARGET = 0.95
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
SHORT = {"shipped": "shipped", "latent_mahalanobis+pixel_pca": "lat+pca", "latent_mahalanobis+pixel_mse": "lat+pix",
         "latent_mahalanobis": "lat_maha", "pixel_pca": "pix_pca", "pixel_mse": "pix_mse",
         "latent_reconstruction": "lat_rec", "latent_norm": "lat_norm", "h2_entropy": "h2_ent"}


def candidates(nets: Networks, shipped: ood.OodCalibration, both: ood.OodCalibration, pca: ood.OodCalibration,
               x_uint8) -> dict[str, np.ndarray]:
    """Every candidate score of the images (higher = more OOD)."""
    o = nets.outputs(x_uint8, reconstruct=True)
    z, logits, x, recon = o["z"], o["logits"], o["x"], o["recon"]
    z2 = np.concatenate([nets.h1(recon[i:i + 512]) for i in range(0, len(recon), 512)])
    p = softmax(logits)
    return {
        "shipped": shipped.score(z, logits, x, recon),
        "latent_mahalanobis+pixel_pca": pca.score(z, logits, x),
        "latent_mahalanobis+pixel_mse": both.score(z, logits, x, recon),
        "latent_mahalanobis": ood.latent_mahalanobis(z, logits.argmax(1), both.means, both.whiten),
        "pixel_pca": ood.pixel_pca(x, pca.pca_mean, pca.pca_basis),
        "pixel_mse": ood.pixel_mse(x, recon),
        "latent_reconstruction": ((z2 - z) ** 2).mean(1),
        "latent_norm": np.linalg.norm(z, axis=1),
        "h2_entropy": -(p * np.log(np.clip(p, 1e-12, 1))).sum(1),
    }


def evaluate(model_dir: Path, n: int, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    man = load_manifest(model_dir, verify=True)
    if "ood" not in man.data:
        raise SystemExit(f"{model_dir}: no OOD calibration in its manifest; run `nemgan calibrate-ood {model_dir}`")
    nets = Networks(model_dir)
    shipped = ood.OodCalibration.load(man.data["ood"], model_dir)
    ds = man.data["training"]["dataset"]
    if ds not in OTHER:
        raise SystemExit(f"{model_dir}: trained on {ds!r}; this benchmark knows {sorted(OTHER)}")
    # The other recipes (with the reconstruction term; with pixel_pca, the export default), fitted here the way
    # export fits the shipped one.
    train = training_images(man.data)
    both = fit_on_images(nets, train, components=(ood.LATENT, ood.PIXEL), fpr=shipped.fpr, seed=0)
    pca = fit_on_images(nets, train, components=(ood.LATENT, ood.PIXEL_PCA), fpr=shipped.fpr, seed=0)
    rng = np.random.default_rng(seed)
    test = load_dataset(ds, split="test").x[:n]
    sets = {
        f"{OTHER[ds]} test": load_dataset(OTHER[ds], split="test").x[:n],
        "inverted test images": 255 - test,
        "uniform noise": rng.integers(0, 256, test.shape, dtype=np.uint8),
    }
    ins = candidates(nets, shipped, both, pca, test)
    out = {"model": str(model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO) else model_dir),
           "name": man.name, "version": man.version, "in_distribution": f"{ds} test", "n_in": len(test),
           "shipped_score": {"components": list(shipped.components), "threshold": shipped.threshold,
                             "calibrated_fpr": shipped.fpr,
                             "test_fpr": float(np.mean(shipped.flag(ins["shipped"])))},
           "vs": {}}
    for name, x in sets.items():
        outs = candidates(nets, shipped, both, pca, x)
        y = np.r_[np.zeros(len(test)), np.ones(len(x))]
        out["vs"][name] = {
            "n_out": len(x),
            "auroc": {k: float(roc_auc_score(y, np.r_[ins[k], outs[k]])) for k in ins},
            "flagged": float(np.mean(shipped.flag(outs["shipped"]))),
        }
    return out


def table(results: list[dict]) -> str:
    lines = []
    for r in results:
        s = r["shipped_score"]
        lines.append(f"\n{r['model']} ({r['name']}/{r['version']}), in-distribution: {r['in_distribution']} "
                     f"(n={r['n_in']}); shipped score = {'+'.join(s['components'])}, threshold {s['threshold']:.3f} "
                     f"at {s['calibrated_fpr']:.0%} FPR on held-out training images -> {s['test_fpr']:.1%} of "
                     "test images flagged")
        keys = list(next(iter(r["vs"].values()))["auroc"])
        short = [SHORT.get(k, k) for k in keys]
        lines.append(f"{'AUROC vs':22s} " + " ".join(f"{k:>{max(len(k), 6)}s}" for k in short) + "  flagged")
        for name, v in r["vs"].items():
            mark = "" if v["auroc"]["shipped"] >= TARGET else "  < target"
            lines.append(f"{name:22s} " + " ".join(f"{v['auroc'][k]:{max(len(c), 6)}.4f}" for k, c in zip(keys, short))
                         + f"  {v['flagged']:7.1%}{mark}")
    lines.append("\ncolumns: " + "; ".join(f"{SHORT[k]} = {k}" for k in SHORT if SHORT[k] != k))
    return "\n".join(lines)


BEGIN, END = "<!-- ood:begin -->", "<!-- ood:end -->"


def results_section(doc: dict, cost: dict | None) -> str:
    """RESULTS.md's OOD section: the shipped score's AUROC per model and strange set, beside latent-only."""
    L = [BEGIN, "## Out-of-distribution score of the shipped models (issue 15, target 7)", "",
         f"AUROC (sklearn `roc_auc_score`; in-distribution test set vs each strange set, {doc['results'][0]['n_in']:,} "
         f"images each) of the score each manifest ships, from [`docs/results/ood_auroc.json`](docs/results/ood_auroc.json), "
         f"written by `{doc['command'].strip()}` ({doc['created'][:10]}). *latent only* is latent_mahalanobis alone "
         f"(the score shipped before pixel_pca); target AUROC >= {doc['target_auroc']} on every set.", "",
         "| model | shipped score | strange set | AUROC shipped | AUROC latent only | flagged at the threshold |",
         "|---|---|---|---|---|---|"]
    for r in doc["results"]:
        comps = "+".join(r["shipped_score"]["components"])
        for name, v in r["vs"].items():
            a = v["auroc"]
            miss = "" if a["shipped"] >= doc["target_auroc"] else " (< target)"
            L.append(f"| `{r['model']}` | {comps} | {name} | {a['shipped']:.4f}{miss} | {a['latent_mahalanobis']:.4f} "
                     f"| {v['flagged']:.1%} |")
    L += ["", "Test images of the model's own data set flagged (false-positive rate, calibrated at 5% on held-out "
          "training images): " + ", ".join(f"`{r['model']}` {r['shipped_score']['test_fpr']:.1%}" for r in doc["results"])
          + ". Every candidate score (pixel_mse, the latent reconstruction, the entropy of h2, ...) is in "
          "[`docs/results/ood_auroc.txt`](docs/results/ood_auroc.txt)."]
    if cost:
        png, npy = cost["cluster_c32"]["png"], cost["cluster_c32"]["npy"]
        micro = {r["batch"]: r for r in cost["micro_seconds_per_image"]}
        m = micro.get(256) or next(iter(micro.values()))
        L += ["", f"Cost (`{cost['command'].strip()}`, {cost['date'][:10]}, `{cost['model']}`, {cost['cores']} shared "
              f"cores, load average {cost['load_average_start'][0]:.1f}): PNG `/v1/cluster` (8 images a request, "
              f"c=32, batching on) with the shipped score vs latent_mahalanobis alone, {cost['repeat']} interleaved "
              f"window pairs: throughput ratio **{png['ratio_median']:.3f}** wall clock (range "
              f"{png['ratio_min']:.2f}..{png['ratio_max']:.2f}: other work on the machine), **{png['cpu_ratio_median']:.3f}** "
              f"from the server's CPU time per image (range {png['cpu_ratio_min']:.2f}..{png['cpu_ratio_max']:.2f}); "
              f".npy bodies {npy['ratio_median']:.3f} / {npy['cpu_ratio_median']:.3f}. Target >= {cost['target_png_ratio']}. "
              f"Per image at batch {m['batch']}: pixel_pca {m.get('pixel_pca', float('nan')) * 1e6:.1f} us, "
              f"latent_mahalanobis {m['latent_mahalanobis'] * 1e6:.1f} us, the fused h.onnx call "
              f"{m['h.onnx'] * 1e6:.0f} us ([`docs/results/ood_cost.json`](docs/results/ood_cost.json))."]
    L.append(END)
    return "\n".join(L)


def write_results_md(path: Path, auroc_json: Path, cost_json: Path) -> Path:
    """Replace RESULTS.md's OOD block (or put it after the recipes block, else at the top)."""
    doc = json.loads(auroc_json.read_text())
    cost = json.loads(cost_json.read_text()) if cost_json.is_file() else None
    block = results_section(doc, cost)
    text = path.read_text() if path.is_file() else "# Results\n"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        anchor = "<!-- recipes:end -->"
        i = text.index(anchor) + len(anchor) if anchor in text else text.find("\n") + 1
        text = text[:i] + "\n\n" + block + text[i:]
    path.write_text(text)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path, default=[REPO / "models/mnist", REPO / "models/fashion-mnist"])
    ap.add_argument("--n", type=int, default=10_000, help="images per set (test sets hold 10,000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the uniform noise images")
    ap.add_argument("--out", type=Path, default=REPO / "docs/results/ood_auroc.json")
    ap.add_argument("--cost", type=Path, default=REPO / "docs/results/ood_cost.json",
                    help="benchmarks/ood_cost.py's results, quoted in RESULTS.md's section")
    ap.add_argument("--results-md", type=Path, nargs="?", const=REPO / "RESULTS.md", default=None,
                    help="also write the OOD section of this file (default RESULTS.md)")
    ap.add_argument("--report-only", action="store_true", help="only write RESULTS.md's OOD section from --out")
    a = ap.parse_args(argv)
    if a.report_only:
        print(f"wrote {write_results_md(a.results_md or REPO / 'RESULTS.md', a.out, a.cost)}")
        return 0
    t0 = time.perf_counter()
    results = [evaluate(m.resolve(), a.n, a.seed) for m in a.models]
    doc = {"command": "python benchmarks/ood_auroc.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "target_auroc": TARGET,
           "seconds": round(time.perf_counter() - t0, 1), "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    text = table(results)
    # The same table as text beside the JSON, for the docs to link (no figure typed by hand).
    a.out.with_suffix(".txt").write_text(f"$ {doc['command']}   ({doc['created']}, {doc['seconds']} s)\n{text}\n")
    print(text)
    print(f"\nwrote {a.out} and {a.out.with_suffix('.txt')} in {doc['seconds']} s")
    if a.results_md:
        print(f"wrote {write_results_md(a.results_md, a.out, a.cost)}")
    worst = min(v["auroc"]["shipped"] for r in results for v in r["vs"].values())
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
