"""`nemgan` command line: train, eval, export, sample, learn-priors (and serve / worker from service/).

Heavy imports (torch, onnxruntime, fastapi) happen inside the commands, so `nemgan --help` is instant
and `nemgan sample` runs without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Train, export and serve mode-matching GANs (NEMGAN, NEMGAN-P, MM-GAN).")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


@app.command()
def train(
    out: Annotated[str, typer.Option("--out", "-o", help="Run folder (options.json, stats.jsonl, samples/, last.pt, best.pt).")] = "runs/mnist",
    dataset: Annotated[str, typer.Option(help="Preset (mnist, fashion-mnist, mnist-2-70-30, mnist-2-90-10, mnist-5, fmnist-5, ...) or a path (IDX dir, .npz, image folder).")] = "mnist",
    steps: Annotated[int, typer.Option(help="Training steps (one d step + one g/h step each).")] = 5000,
    batch_size: Annotated[int, typer.Option(help="Minibatch size.")] = 64,
    latent: Annotated[str, typer.Option(help="Latent kind: nemgan | nemgan-p | mmgan-static | mmgan-dynamic.")] = "nemgan",
    priors: Annotated[str, typer.Option(help="uniform | data (true class frequencies) | learned | JSON list.")] = "uniform",
    labeled_fraction: Annotated[float, typer.Option(help="Fraction of training labels used to supervise h (0 = unsupervised; 000 sec. 4.5).")] = 0.0,
    gan_loss: Annotated[str, typer.Option(help="gan (non-saturating) | wgan-gp.")] = "gan",
    seed: Annotated[int, typer.Option(help="Random seed (data split, init, latents).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    config: Annotated[Optional[Path], typer.Option(help="JSON file with TrainConfig fields (command-line options win).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any TrainConfig field, e.g. --set latent_dim=64 --set c2=false. Repeatable.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if it exists (only --steps may change).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Run 3 steps on fake data: a cheap smoke test.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Train a model; writes a run folder and prints a JSON summary."""
    from training.config import TrainConfig
    from training.dataset import DataError
    from training.train import train as run_train

    base = json.loads(config.read_text()) if config else {}
    base.update(out_dir=out, dataset=dataset, steps=steps, batch_size=batch_size, latent_kind=latent,
                priors=_parse_value(priors) if priors.startswith("[") else priors, labeled_fraction=labeled_fraction,
                gan_loss=gan_loss, seed=seed, device=device, dry_run=dry_run)
    for item in set_ or []:
        if "=" not in item:
            _fail(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        base[k.strip()] = _parse_value(v.strip())
    try:
        cfg = TrainConfig.from_dict(base).validate()
        summary = run_train(cfg, resume=resume, progress=progress)
    except (ValueError, DataError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(json.dumps(summary, indent=2))


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Argument(help="Run folder, .pt checkpoint or exported model directory.")],
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names (see --list).")] = "cluster,gen_purity,fcd,prior_error",
    split: Annotated[str, typer.Option(help="Data split to evaluate on.")] = "test",
    algorithm2: Annotated[bool, typer.Option(help="Also cluster with 004 Algorithm 2 (classifier on generated samples).")] = False,
    max_samples: Annotated[Optional[int], typer.Option(help="Evaluate on a random subset of this size.")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Folder holding the data sets (default ../shared/data or $NEMGAN_DATA_DIR).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results to this JSON file.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the registered metrics and exit.")] = False,
):
    """Evaluate a model: Hungarian ACC / NMI / ARI / purity of h, FCD, per-mode purity, prior error."""
    from training.metrics import list_metrics

    if list_:
        typer.echo("\n".join(list_metrics()))
        raise typer.Exit(0)
    from training.evaluate import evaluate, load_any

    try:
        m = load_any(model)
        res = evaluate(m, [s.strip() for s in metrics.split(",") if s.strip()], split=split, data_root=data_root,
                       algorithm2=algorithm2, max_samples=max_samples)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    text = json.dumps(res, indent=2, default=float)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder (uses best.pt) or .pt checkpoint.")],
    out: Annotated[Path, typer.Argument(help="Model directory to write.")],
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the output folder's name).")] = None,
    version: Annotated[str, typer.Option(help="Model version.")] = "1",
    metrics_file: Annotated[Optional[Path], typer.Option("--metrics", help="JSON file of measured metrics to record in the manifest (e.g. from `nemgan eval --out`).")] = None,
    supervision: Annotated[Optional[str], typer.Option(help="Free text recorded in the manifest, e.g. 'semi-supervised, 5% labels'.")] = None,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
):
    """Export g, h1, h2 to TorchScript + ONNX with manifest.json, checked for parity against the eager model."""
    from training.export import export_model
    from training.model import NemganModel

    try:
        m = NemganModel.load(checkpoint)
        metrics = json.loads(metrics_file.read_text()) if metrics_file else None
        extra = {}
        summary = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "summary.json"
        if summary.is_file():
            extra["training_run"] = json.loads(summary.read_text())
        p = export_model(m, out, name or out.name, version, metrics=metrics, supervision=supervision,
                         extra=extra, overwrite=force)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        _fail(str(e))
    man = json.loads((p / "manifest.json").read_text())
    typer.echo(json.dumps({"model_dir": str(p), "parity": man["parity"]}, indent=2))


@app.command()
def sample(
    model_dir: Annotated[Path, typer.Argument(help="Exported model directory (manifest.json).")],
    out: Annotated[Path, typer.Option("--out", "-o", help=".png (grid) or .npz (key 'images', uint8 NCHW, plus 'modes').")],
    mode: Annotated[Optional[str], typer.Option(help="Mode index or label; omit to draw modes from the priors; 'all' = one grid row per mode.")] = None,
    n: Annotated[int, typer.Option(help="Number of images (per mode with --mode all).")] = 16,
    sigma: Annotated[float, typer.Option(help="Noise scale: 0 = mode centre, <1 quality, >1 diversity (004 sec. 4.3).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed: the same seed gives the same images.")] = None,
    nrow: Annotated[Optional[int], typer.Option(help="Images per grid row (default: n for --mode all, else 8).")] = None,
):
    """Generate images with the exported ONNX generator (no torch needed)."""
    import math

    import numpy as np

    from core.grid import save_grid
    from core.images import model_to_uint8
    from core.latent import sample_latents
    from core.manifest import ManifestError, load_manifest

    if out.suffix not in (".png", ".npz"):
        _fail("--out must end in .png or .npz")
    if n < 1 or not math.isfinite(sigma) or sigma < 0:
        _fail("n must be >= 1 and sigma a finite number >= 0")
    try:
        import onnxruntime as ort

        man = load_manifest(model_dir)
        spec = man.latent_spec()
        sess = ort.InferenceSession(str(man.onnx_path("g")), providers=["CPUExecutionProvider"])
        if mode == "all":
            zs = [sample_latents(spec, n, k, sigma, None if seed is None else seed + k) for k in range(man.n_modes)]
            z, modes = np.concatenate([a for a, _ in zs]), np.concatenate([b for _, b in zs])
            nrow = nrow or n
        else:
            k = man.resolve_mode(int(mode) if mode is not None and mode.lstrip("-").isdigit() else mode)
            z, modes = sample_latents(spec, n, k, sigma, seed)
        x = sess.run(None, {"z": z})[0]
    except (ManifestError, ValueError) as e:
        _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(x, out, nrow=nrow or 8)
    else:
        np.savez_compressed(out, images=model_to_uint8(x), modes=modes)
    typer.echo(json.dumps({"out": str(out), "n": int(len(x)), "modes": np.bincount(modes, minlength=man.n_modes).tolist()}))


@app.command("learn-priors")
def learn_priors_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Exported model directory.")],
    labeled: Annotated[Path, typer.Option(help="Small labeled set: .npz with x,y or an image folder with one sub-folder per mode.")],
    out: Annotated[Path, typer.Option(help="Where to write the new model directory.")],
    unlabeled: Annotated[Optional[str], typer.Option(help="Unlabeled real data (preset or path); default: the training data set in the manifest.")] = None,
    method: Annotated[str, typer.Option(help="kl (001 eq. 16) or l1 (003 eq. 5).")] = "kl",
    h_steps: Annotated[int, typer.Option(help="Steps of h retraining on the labeled set.")] = 300,
    alpha_steps: Annotated[int, typer.Option(help="Steps of prior fitting.")] = 500,
    version: Annotated[Optional[str], typer.Option(help="Version of the new model (default: old version + 1).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
):
    """Retrain h on a few labels and learn the mode priors; export the result as a new model directory."""
    import numpy as np
    from tqdm.auto import tqdm

    from training.config import TrainConfig
    from training.dataset import DataError, load_dataset, load_images
    from training.export import export_model, load_exported
    from core.manifest import load_manifest
    from training.priors import learn_priors
    from training.train import load_training_data

    try:
        man = load_manifest(model_dir)
        model = load_exported(model_dir)
        x_l, y_l, _ = load_images(labeled)
        if y_l is None:
            _fail(f"{labeled} has no labels")
        if unlabeled is None:  # the model's own training data (preset + any subset/ratio overrides)
            x_u = load_training_data(TrainConfig.from_dict(man.data["training"]), "train").x
        else:
            x_u = load_dataset(unlabeled, split="train").x
        bar = tqdm(total=100, desc="learn-priors", unit="%")

        def prog(f, msg):
            bar.n = int(100 * f)
            bar.set_postfix_str(msg)
            bar.refresh()

        res = learn_priors(model, x_l, y_l, x_u, method=method, h_steps=h_steps, alpha_steps=alpha_steps,
                           seed=seed, progress=prog)
        bar.close()
        new_version = version or (str(int(man.version) + 1) if man.version.isdigit() else man.version + ".1")
        export_model(model, out, man.name, new_version, metrics={**man.data.get("metrics", {}), "prior_learning": res.metrics},
                     overwrite=force)
    except (ValueError, DataError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    typer.echo(json.dumps({"model_dir": str(out), "version": new_version, "priors": np.round(res.priors, 4).tolist(),
                           "labeled_acc": res.metrics["labeled_acc"]}, indent=2))


def _register_service_commands() -> None:
    """serve / worker live in service/cli.py; registered only if the serving extra is importable."""
    try:
        from service.cli import serve, worker  # light module: fastapi/celery are imported inside
    except ImportError:
        return
    app.command(help=serve.__doc__)(serve)
    app.command(help=worker.__doc__)(worker)


_register_service_commands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
