"""The training commands: `nemgan train`, `eval`, `export`, `learn-priors`.

torch and the rest of the training extra are imported inside each command (a serving-only install lists
them in --help and says what to install when one is run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from core.prior_options import ALPHA_STEPS, H_STEPS

from .common import check_fields, fail, need, parse_value

# What a run folder holds (training/train.py); --force removes exactly these before a fresh run.
RUN_FILES = ("last.pt", "best.pt", "options.json", "stats.jsonl", "summary.json", "samples", "restarts.json")


def run_folder(out: Optional[str], default: str, dry_run: bool, resume: bool, force: bool) -> str:
    """The run folder to train into, refusing to touch an existing run unless asked.

    --dry-run without --out gets a fresh temporary folder (never the real runs/); a folder that already
    holds a run (last.pt) is continued only with --resume and replaced only with --force."""
    if resume and force:
        fail("--resume continues the run in --out and --force replaces it: pass one of them")
    if out is None:
        if dry_run:
            return tempfile.mkdtemp(prefix="nemgan-dry-run-")
        out = default
    d = Path(out)
    if ((d / "last.pt").is_file() or (d / "restarts.json").is_file()) and not resume:
        if not force:
            fail(f"{d} already holds a run (last.pt): pass --resume to continue it, --force to replace it, "
                 "or another --out")
        for f in [d / name for name in RUN_FILES] + sorted(d.glob("restart-*")):
            shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)
    return out


def supervised(cfg) -> bool:
    """Whether labels told the modes which class they are (semi-supervised h, or the supervised MM-GAN)."""
    return bool(cfg.semi_supervised or cfg.supervised_mmgan)


def export_mode_labels(n_modes: int, class_names: Optional[list[str]], labeled: bool,
                       given: Optional[str] = None) -> list[str]:
    """The mode names an export writes: --mode-labels when given (one per mode, distinct), else the data
    set's class names if labels trained the model, else neutral m0..m{K-1}: an unsupervised mode k has no
    reason to be class k, and naming it "3" reads as a digit it never saw."""
    if given is not None:
        names = parse_value(given) if given.strip().startswith("[") else [v.strip() for v in given.split(",")]
        if not isinstance(names, list) or len(names) != n_modes or len(set(map(str, names))) != n_modes \
                or any(str(v) == "" for v in names):
            fail(f"--mode-labels needs {n_modes} distinct non-empty names (comma-separated or a JSON list), "
                 f"got {given!r}")
        return [str(v) for v in names]
    if labeled and class_names and len(class_names) == n_modes:
        return list(class_names)
    return [f"m{k}" for k in range(n_modes)]


def parse_mode_labels(given: str) -> list[str]:
    """--mode-labels as a list (comma-separated or a JSON list) of distinct non-empty names; the count is checked
    by the caller (export_mode_labels, or the pruning, which takes one per original or per kept mode)."""
    names = parse_value(given) if given.strip().startswith("[") else [v.strip() for v in given.split(",")]
    if not isinstance(names, list) or len(set(map(str, names))) != len(names) or any(str(v) == "" for v in names):
        fail(f"--mode-labels needs distinct non-empty names (comma-separated or a JSON list), got {given!r}")
    return [str(v) for v in names]


def train(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run folder (options.json, stats.jsonl, samples/, last.pt, best.pt). Default: runs/mnist (or the --config/--preset out_dir); with --dry-run a fresh temporary folder.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Named recipe from training/config.py PRESETS (e.g. mnist-unsup); the options below and --set override it.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Preset (mnist, fashion-mnist, mnist-2-70-30, mnist-5, colored-mnist, cifar10, stl10, celeba-eyeglasses, ...), folder:PATH (PNG/JPEG of any size/colour: flat = unlabeled, set n_modes; one sub-folder per class = labeled), cifar10:PATH, stl10:PATH, celeba:ATTR[@PATH], or a path (IDX dir, .npz, .npy, image folder). Images are resized to --set image_size=N (README: Your own images). Default: mnist.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (one d step + one g/h step each). Default: 5000.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Minibatch size. Default: 64.")] = None,
    latent: Annotated[Optional[str], typer.Option(help="Latent kind: nemgan | nemgan-p | mmgan-static | mmgan-dynamic. Default: nemgan.")] = None,
    priors: Annotated[Optional[str], typer.Option(help="uniform | data (true class frequencies) | learned | JSON list. Default: uniform.")] = None,
    labeled_fraction: Annotated[Optional[float], typer.Option(help="Fraction of training labels used to supervise h (0 = unsupervised; 000 sec. 4.5). Default: 0.")] = None,
    gan_loss: Annotated[Optional[str], typer.Option(help="gan (non-saturating) | wgan-gp. Default: gan.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (data split, init, latents). Default: 0.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:<i>. Default: auto.")] = None,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes on this machine (torchrun + DDP: one per GPU, or gloo on CPU); --batch-size stays the global batch. Multi-node: torchrun ... -m cli.train_ddp.")] = 1,
    config: Annotated[Optional[Path], typer.Option(help="JSON file with TrainConfig fields (over --preset; command-line options win).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any TrainConfig field, e.g. --set latent_dim=64 --set c2=false. Repeatable.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last.pt with the options in its options.json (the options given here override them; only run options such as --steps may differ).")] = False,
    force: Annotated[bool, typer.Option(help="Replace the run already in --out (its checkpoints, stats and samples).")] = False,
    restarts: Annotated[int, typer.Option(min=1, help="Train this many seeds (--seed, --seed+1, ...) into --out/restart-<i>/ and keep, as --out/best.pt, the one whose h has the highest held-out I(image; mode) on unlabeled images: no label is read. All are recorded in --out/restarts.json.")] = 1,
    dry_run: Annotated[bool, typer.Option(help="Run 3 steps on fake data in a temporary folder: a cheap smoke test.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Train a model; writes a run folder and prints a JSON summary.

    Settings are layered: TrainConfig defaults < (with --resume: the run's options.json) < --preset < --config
    < the options above < --set. Every value is checked before anything is written."""
    try:
        from training.config import TrainConfig
        from training.dataset import DataError
        from training.train import train as run_train
    except ImportError as e:
        need("training", e)

    base: dict = {}
    if resume and out is not None and (Path(out) / "options.json").is_file():
        # Continue the run as it was started: its own options, with only what is given below on top.
        try:
            base.update(json.loads((Path(out) / "options.json").read_text()))
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{Path(out) / 'options.json'}: {e}")
        if not dry_run:
            dry_run = bool(base.get("dry_run", False))
    if preset is not None:
        from training import config as config_mod

        if not hasattr(config_mod, "preset"):
            fail("this version of training/config.py has no presets (training.config.preset)")
        try:
            base.update(config_mod.preset(preset))
        except (KeyError, ValueError) as e:
            fail(str(e).strip("'\""))
    if config:
        try:
            base.update(json.loads(config.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            fail(f"--config {config}: {e}")
    given = dict(dataset=dataset, steps=steps, batch_size=batch_size, latent_kind=latent,
                 priors=None if priors is None else parse_value(priors) if priors.startswith("[") else priors,
                 labeled_fraction=labeled_fraction, gan_loss=gan_loss, seed=seed, device=device)
    base.update({k: v for k, v in given.items() if v is not None})
    base["dry_run"] = dry_run
    for item in set_ or []:
        if "=" not in item:
            fail(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        base[k.strip()] = parse_value(v.strip())
    from training.config import RETIRED_KEYS

    check_fields(TrainConfig, base, ignore=RETIRED_KEYS)
    try:
        TrainConfig.from_dict(base).validate()
    except ValueError as e:
        fail(str(e))
    base["out_dir"] = run_folder(out, str(base.get("out_dir") or TrainConfig.out_dir), dry_run, resume, force)
    run_dir = Path(base["out_dir"])
    fresh = not run_dir.exists() or (dry_run and out is None)  # a folder this command creates
    try:
        cfg = TrainConfig.from_dict(base).validate()
        if nproc > 1 and "WORLD_SIZE" not in os.environ:  # not under torchrun yet: start it
            from training.distributed import launch

            raise typer.Exit(launch(cfg, nproc, resume=resume, progress=progress))
        if restarts > 1:
            if nproc > 1:
                fail("--restarts runs one process per restart: use --nproc 1")
            from training.restarts import train_restarts

            summary = train_restarts(cfg, restarts, resume=resume, progress=progress)
        else:
            summary = run_train(cfg, resume=resume, progress=progress)
    except (ValueError, DataError, FileNotFoundError) as e:
        # A run that fails before its first checkpoint leaves nothing behind in a folder it created.
        if fresh and os.environ.get("RANK", "0") == "0" and not (run_dir / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(e))
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one summary, from rank 0
        typer.echo(json.dumps(summary, indent=2))


def eval_(
    model: Annotated[Path, typer.Argument(help="Run folder, .pt checkpoint or exported model directory.")],
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names (see --list).")] = "cluster,gen_purity,fcd,prior_error",
    split: Annotated[str, typer.Option(help="Data split to evaluate on.")] = "test",
    algorithm2: Annotated[bool, typer.Option(help="Also cluster with 004 Algorithm 2 (classifier on generated samples).")] = False,
    max_samples: Annotated[Optional[int], typer.Option(help="Evaluate on a random subset of this size.")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Folder holding the data sets (default ../shared/data or $NEMGAN_DATA_DIR).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results to this JSON file.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the registered metrics and exit.")] = False,
    num_gen: Annotated[int, typer.Option(help="Generated images for FCD / generation purity.")] = 10000,
    classifier_steps: Annotated[int, typer.Option(help="Steps of the real-data classifier (trained once per data set, then cached).")] = 2000,
    progress: Annotated[bool, typer.Option(help="Progress bars for the long phases (the plan and phase lines go to stderr either way).")] = True,
):
    """Evaluate a model: Hungarian ACC / NMI / ARI / purity of h, FCD, per-mode purity, prior error."""
    try:
        from training.evaluate import evaluate, load_any
        from training.metrics import list_metrics
    except ImportError as e:
        need("training", e)

    if list_:
        typer.echo("\n".join(list_metrics()))
        raise typer.Exit(0)
    try:
        m = load_any(model)
        res = evaluate(m, [s.strip() for s in metrics.split(",") if s.strip()], split=split, data_root=data_root,
                       algorithm2=algorithm2, max_samples=max_samples, num_gen=num_gen,
                       classifier_steps=classifier_steps, report=lambda line: typer.echo(line, err=True), progress=progress)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    text = json.dumps(res, indent=2, default=float)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder (uses best.pt) or .pt checkpoint.")],
    out: Annotated[Path, typer.Argument(help="Model directory to write.")],
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the output folder's name).")] = None,
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    metrics_file: Annotated[Optional[Path], typer.Option("--metrics", help="JSON file of measured metrics to record in the manifest (e.g. from `nemgan eval --out`).")] = None,
    supervision: Annotated[Optional[str], typer.Option(help="Free text recorded in the manifest, e.g. 'semi-supervised, 5% labels'.")] = None,
    mode_labels: Annotated[Optional[str], typer.Option(help="The modes' names, comma-separated or a JSON list, one per mode. Default: the data set's class names when labels trained h, else m0..m{K-1} (an unsupervised mode is no class). With --prune-modes: one per original mode (the kept ones are used) or one per kept mode.")] = None,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    prune_modes: Annotated[bool, typer.Option("--prune-modes", help="Export only the live modes: those h assigns >= --min-usage of the training images (argmax of h on the training split, no labels). h2's last layer and the latent are sliced to them (priors renormalised); the manifest's 'pruning' section lists the original index and usage of every mode.")] = False,
    min_usage: Annotated[float, typer.Option(help="With --prune-modes: the smallest share of the images a mode must get to be kept.")] = 0.01,
    usage_from: Annotated[str, typer.Option(help="With --prune-modes: 'train' (h's argmax on the training split) or 'priors' (the latent's learned priors).")] = "train",
    data_root: Annotated[Optional[str], typer.Option(help="With --prune-modes: folder holding the data sets (default ../shared/data or $NEMGAN_DATA_DIR).")] = None,
):
    """Export g, h1, h2 to TorchScript + ONNX with manifest.json, checked for parity against the eager model."""
    try:
        from training.export import export_model
        from training.model import NemganModel
    except ImportError as e:
        need("training", e)

    try:
        m = NemganModel.load(checkpoint)
        metrics = json.loads(metrics_file.read_text()) if metrics_file else None
        extra = {}
        summary = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "summary.json"
        if summary.is_file():
            extra["training_run"] = json.loads(summary.read_text())
        if prune_modes:
            from training.export import export_pruned

            labels = None if mode_labels is None else parse_mode_labels(mode_labels)
            p = export_pruned(m, out, name or out.name, version, min_usage=min_usage, usage_from=usage_from,
                              data_root=data_root, mode_labels=labels, metrics=metrics, supervision=supervision,
                              extra=extra, overwrite=force)
        else:
            m.class_names = export_mode_labels(m.n_modes, m.class_names, supervised(m.cfg), mode_labels)
            p = export_model(m, out, name or out.name, version, metrics=metrics, supervision=supervision,
                             extra=extra, overwrite=force)
    except typer.Exit:  # a RuntimeError too: fail() above already said why
        raise
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        fail(str(e))
    man = json.loads((p / "manifest.json").read_text())
    res = {"model_dir": str(p), "parity": man["parity"]}
    if "pruning" in man:
        res["pruning"] = {k: man["pruning"][k] for k in ("kept", "dropped", "min_usage")} | {
            "usage": [round(u, 4) for u in man["pruning"]["usage"]], "mode_labels": man["mode_labels"]}
    typer.echo(json.dumps(res, indent=2))


def learn_priors_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Exported model directory.")],
    labeled: Annotated[Path, typer.Option(help="Small labeled set: .npz with x,y or an image folder with one sub-folder per mode.")],
    out: Annotated[Path, typer.Option(help="Where to write the new model directory.")],
    unlabeled: Annotated[Optional[str], typer.Option(help="Unlabeled real data (preset or path); default: the training data set in the manifest.")] = None,
    method: Annotated[str, typer.Option(help="kl (001 eq. 16) or l1 (003 eq. 5).")] = "kl",
    h_steps: Annotated[int, typer.Option(help="Steps of h retraining on the labeled set (0: keep h as trained, so clustering cannot change). The API's and the playground's default too.")] = H_STEPS,
    alpha_steps: Annotated[int, typer.Option(help="Steps of prior fitting.")] = ALPHA_STEPS,
    version: Annotated[Optional[str], typer.Option(help="Version of the new model (default: old version + 1).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    data_root: Annotated[Optional[str], typer.Option(help="Folder holding the data sets (default ../shared/data or $NEMGAN_DATA_DIR).")] = None,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
):
    """Retrain h on a few labels and learn the mode priors; export the result as a new model directory."""
    try:
        import numpy as np
        from tqdm.auto import tqdm

        from training.dataset import DataError, load_dataset, load_images
        from training.prior_learning import learn_and_export
    except ImportError as e:
        need("training", e)

    try:
        x_l, y_l, _ = load_images(labeled)
        if y_l is None:
            fail(f"{labeled} has no labels")
        x_u = None if unlabeled is None else load_dataset(unlabeled, split="train", data_root=data_root).x
        bar = tqdm(total=100, desc="learn-priors", unit="%")

        def prog(f, msg):
            bar.n = int(100 * f)
            bar.set_postfix_str(msg)
            bar.refresh()

        done = learn_and_export(model_dir, out, x_l, y_l, x_u, version=version, method=method, h_steps=h_steps,
                                alpha_steps=alpha_steps, seed=seed, data_root=data_root, overwrite=force,
                                progress=prog)
        bar.close()
    except (ValueError, DataError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        fail(str(e))
    res = done.result
    typer.echo(json.dumps({"model_dir": str(done.model_dir), "version": done.version,
                           "priors": np.round(res.priors, 4).tolist(), "labeled_acc": res.metrics["labeled_acc"]},
                          indent=2))
