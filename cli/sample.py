"""`nemgan sample`: images from an exported model with ONNX Runtime and numpy (no torch).

It samples exactly as the service does (core.latent.sample_latents), so a seed gives the same images here,
over HTTP and in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, need


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
        fail("--out must end in .png or .npz")
    if n < 1 or not math.isfinite(sigma) or sigma < 0:
        fail("n must be >= 1 and sigma a finite number >= 0")
    try:
        import onnxruntime as ort
    except ImportError as e:
        need("serving", e)
    try:
        man = load_manifest(model_dir)
        spec = man.latent_spec()
        sess = ort.InferenceSession(str(man.onnx_path("g")), providers=["CPUExecutionProvider"])
        if mode == "all":
            zs = [sample_latents(spec, n, k, sigma, None if seed is None else seed + k) for k in range(man.n_modes)]
            z, modes = np.concatenate([a for a, _ in zs]), np.concatenate([b for _, b in zs])
            nrow = nrow or n
        else:
            k = man.resolve_mode(mode)
            z, modes = sample_latents(spec, n, k, sigma, seed)
        x = sess.run(None, {"z": z})[0]
    except (ManifestError, ValueError) as e:
        fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(x, out, nrow=nrow or 8)
    else:
        np.savez_compressed(out, images=model_to_uint8(x), modes=modes)
    typer.echo(json.dumps({"out": str(out), "n": int(len(x)), "modes": np.bincount(modes, minlength=man.n_modes).tolist()}))
