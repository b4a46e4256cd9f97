"""`nemgan calibrate-ood MODEL_DIR`: fit (or refit) a model directory's out-of-distribution score.

`nemgan export` does this itself; this command is for model directories exported before it existed, and
to calibrate on other in-distribution images or with other components (see core/ood.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, need


def calibrate_ood(
    model_dir: Annotated[Path, typer.Argument(help="Exported model directory (manifest.json).")],
    data: Annotated[Optional[str], typer.Option(help="In-distribution images: a preset or path (train split). Default: the model's training set, from its manifest.")] = None,
    components: Annotated[str, typer.Option(help="Comma-separated: latent_mahalanobis (no extra network call), pixel_pca (the image outside the training images' top principal components; one small matmul), pixel_mse (runs g on every clustered image).")] = "latent_mahalanobis,pixel_pca",
    fpr: Annotated[float, typer.Option(help="False-positive rate on held-out in-distribution images that sets the threshold.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the fit / held-out split.")] = 0,
    data_root: Annotated[Optional[Path], typer.Option(help="Data root (default: $NEMGAN_DATA_DIR or ../shared/data).")] = None,
):
    """Calibrate the OOD score on in-distribution images; writes ood.npz and the manifest's ood and input sections."""
    try:
        from training.calibrate import calibrate
        from training.dataset import DataError, load_dataset
    except ImportError as e:
        need("training", e)
    try:
        x = load_dataset(data, split="train", data_root=data_root).x if data else None
        sec = calibrate(model_dir, x, components=tuple(c.strip() for c in components.split(",") if c.strip()),
                        fpr=fpr, seed=seed, data_root=None if data_root is None else str(data_root),
                        source=f"train split of {data!r}" if data else None)
    except (ValueError, DataError, FileNotFoundError, OSError) as e:
        fail(str(e))
    typer.echo(json.dumps({"model_dir": str(model_dir), "ood": sec}, indent=2))
