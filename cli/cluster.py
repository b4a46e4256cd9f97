"""`nemgan cluster MODEL DIR_OR_NPZ --out results.csv`: offline batch clustering with ONNX Runtime and numpy.

No torch and no server: the same preprocessing (core/images.py), the same fused h graph and the same
out-of-distribution score (core/ood.py) as POST /v1/cluster, so a file gets the same mode, probability and
OOD flag here as over HTTP (tests/cli/test_cluster_cmd.py compares them).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, need

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
COLUMNS = ("item", "mode", "label", "probability", "ood_score", "ood")


def _inputs(src: Path, image, input_range) -> tuple[list[str], object]:
    """(item names, float32 NCHW batch in the model's range) from an image folder, an image, .npy or .npz."""
    import numpy as np

    from core.images import decode_image, prepare_array_batch, uint8_to_model

    if src.is_dir() or src.suffix.lower() in IMAGE_SUFFIXES:
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else [src]
        if not files:
            raise ValueError(f"{src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        u8 = np.empty((len(files), image.channels, image.height, image.width), np.uint8)
        for i, f in enumerate(files):
            try:
                u8[i] = decode_image(f.read_bytes(), image)
            except ValueError as e:
                raise ValueError(f"{f}: {e}") from None
        names = [str(f.relative_to(src)) if src.is_dir() else f.name for f in files]
        return names, uint8_to_model(u8)
    if src.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"{src}: expected an image folder, an image, or an .npy / .npz array of images")
    if src.suffix.lower() == ".npy":
        x = np.load(src, allow_pickle=False)
    else:
        with np.load(src, allow_pickle=False) as f:
            if "x" in f.files:
                x = f["x"]
            elif len(f.files) == 1:
                x = f[f.files[0]]
            else:
                raise ValueError(f"{src}: an .npz needs the images under 'x' (it holds {f.files})")
    try:
        xf = prepare_array_batch(x, image, input_range)
    except ValueError as e:  # the shared message names the API's field; here it is an option
        raise ValueError(str(e).replace("input_range=", "--input-range ").replace(" (query or form field)", "")) from None
    return [str(i) for i in range(len(x))], np.ascontiguousarray(xf, dtype=np.float32)


def cluster(
    model_dir: Annotated[Path, typer.Argument(help="Exported model directory (manifest.json).")],
    images: Annotated[Path, typer.Argument(help="A folder of images (searched recursively; any size or colour), one image, or an .npy / .npz batch (key 'x'; uint8 0..255 unless --input-range).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write: item, mode, label, probability, ood_score, ood (one row per image).")],
    input_range: Annotated[Optional[str], typer.Option(help="Value range of a float array, e.g. 0-1 or -1-1 (as the API's input_range); integers are pixels 0..255 without it.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per ONNX Runtime call.")] = 256,
):
    """Cluster images offline with the exported h (ONNX Runtime, no torch): mode, probability, OOD flag per image."""
    import numpy as np

    from core.inputs import parse_range
    from core.manifest import ONNX_FUSED_IO, ONNX_IO, ManifestError, load_manifest
    from core.modes import softmax
    from core.ood import OodCalibration

    if out.suffix.lower() != ".csv":
        fail("--out must end in .csv")
    if batch_size < 1:
        fail("--batch-size must be >= 1")
    try:
        import onnxruntime as ort
    except ImportError as e:
        need("serving", e)
    try:
        rng = parse_range(input_range)
        man = load_manifest(model_dir)
        ood = OodCalibration.load(man.data["ood"], man.root) if "ood" in man.data else None
        names, x = _inputs(images, man.image, rng)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3

        def session(net):
            return ort.InferenceSession(str(man.onnx_path(net)), opts, providers=["CPUExecutionProvider"])

        if man.has_onnx("h"):  # the fused h2 . h1 graph: one call per batch, as the service runs it
            h, io = session("h"), ONNX_FUSED_IO["h"]

            def run_h(b):
                return h.run(io["outputs"], {io["inputs"][0]: b})
        else:  # exported before the fused graph existed
            h1, h2 = session("h1"), session("h2")

            def run_h(b):
                z = h1.run(None, {ONNX_IO["h1"]["inputs"][0]: b})[0]
                return z, h2.run(None, {ONNX_IO["h2"]["inputs"][0]: z})[0]
        g = session("g") if ood is not None and ood.needs_reconstruction else None
        labels = man.mode_labels
        rows = []
        for s in range(0, len(x), batch_size):
            b = x[s:s + batch_size]
            z, logits = run_h(b)
            probs = softmax(logits)
            modes = probs.argmax(1)
            if ood is not None:
                recon = g.run(None, {ONNX_IO["g"]["inputs"][0]: z})[0] if g is not None else None
                score = ood.score(z, logits, b, recon)
                flag = ood.flag(score)
            for i, k in enumerate(modes):
                rows.append((names[s + i], int(k), labels[k], f"{probs[i, k]:.6f}",
                             f"{score[i]:.6f}" if ood is not None else "",
                             str(bool(flag[i])).lower() if ood is not None else ""))
    except (ManifestError, ValueError, OSError) as e:
        fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    counts = np.bincount([r[1] for r in rows], minlength=man.n_modes).tolist()
    summary = {"out": str(out), "n": len(rows), "modes": dict(zip(labels, counts))}
    if ood is not None:
        summary["ood"] = sum(r[5] == "true" for r in rows)
    else:
        summary["ood"] = None
        typer.echo(f"note: {model_dir} has no OOD calibration (nemgan calibrate-ood adds it); ood columns are empty",
                   err=True)
    typer.echo(json.dumps(summary))
