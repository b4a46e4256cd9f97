"""Export a trained NemganModel to a model directory (the contract in core/manifest.py).

g, h1 and h2 are written as TorchScript (traced in eval mode) and ONNX (dynamic batch axis), then
checked for parity against the eager model on random batches; the measured max abs errors go into
the manifest and an error above the tolerance aborts the export. The directory is built under a
temporary name and renamed into place, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.images import ImageSpec
from core.manifest import ONNX_FUSED_IO, ONNX_IO, load_manifest, write_manifest
from .model import NemganModel

# float32 through different kernels (oneDNN via ORT vs ATen): differences are ~1e-6; 1e-4 leaves
# margin for CUDA / other CPUs while still catching any real graph mismatch.
PARITY_ATOL = 1e-4
OPSET = 17


def _modules(model: NemganModel) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    c, h, w = model.image_shape
    return {"g": (model.g, (model.cfg.latent_dim,)), "h1": (model.h.h1, (c, h, w)), "h2": (model.h.h2, (model.cfg.latent_dim,))}


def _fused(model: NemganModel) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """Fused graphs (ONNX only): "h" is the Inverter itself, x -> (z, logits) = (h1(x), h2(h1(x)))."""
    c, h, w = model.image_shape
    return {"h": (model.h, (c, h, w))}


def _example(net: str, shape: tuple[int, ...], n: int, gen: torch.Generator) -> torch.Tensor:
    if net == "h1":
        return torch.rand(n, *shape, generator=gen) * 2 - 1
    return torch.randn(n, *shape, generator=gen)


def _export_onnx(mod: torch.nn.Module, x: torch.Tensor, path: Path, io: dict[str, list[str]]) -> None:
    """One ONNX graph with the contract's input/output names and a dynamic batch axis on each of them."""
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export, but it handles
        # these plain conv/linear graphs exactly and needs no extra packages.
        warnings.simplefilter("ignore")
        torch.onnx.export(mod, (x,), str(path), input_names=io["inputs"], output_names=io["outputs"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={k: {0: "batch"} for k in (*io["inputs"], *io["outputs"])})


def check_parity(model_dir: str | Path, model: NemganModel, n: int = 64, seed: int = 0) -> dict[str, dict[str, float]]:
    """Max abs difference of ONNX Runtime and TorchScript outputs vs the eager model, per network."""
    import onnxruntime as ort

    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, float]] = {}
    for net, (mod, shape) in _modules(model).items():
        x = _example(net, shape, n, gen)
        with torch.no_grad():
            ref = mod(x).numpy()
            ts = torch.jit.load(str(Path(model_dir) / f"{net}.ts"))(x).numpy()
        sess = ort.InferenceSession(str(Path(model_dir) / f"{net}.onnx"), providers=["CPUExecutionProvider"])
        onx = sess.run(None, {ONNX_IO[net]["inputs"][0]: x.numpy()})[0]
        out[net] = {"onnx_max_abs_err": float(np.abs(onx - ref).max()), "torchscript_max_abs_err": float(np.abs(ts - ref).max())}
    for net, (mod, shape) in _fused(model).items():
        path = Path(model_dir) / f"{net}.onnx"
        if not path.is_file():  # model directories exported before the fused graph existed
            continue
        x = _example("h1", shape, n, gen)
        with torch.no_grad():
            refs = [r.numpy() for r in mod(x)]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = sess.run(ONNX_FUSED_IO[net]["outputs"], {ONNX_FUSED_IO[net]["inputs"][0]: x.numpy()})
        out[net] = {"onnx_max_abs_err": max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))}
    return out


def export_model(model: NemganModel, out_dir: str | Path, name: str, version: str | int = "1",
                 metrics: dict[str, Any] | None = None, supervision: str | None = None,
                 dataset: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 overwrite: bool = False, atol: float = PARITY_ATOL, calibrate_ood: bool = True,
                 calibration_x: np.ndarray | None = None, calibration_source: str | None = None) -> Path:
    """Write the model directory. `calibrate_ood`: fit the OOD score (training/calibrate.py) on
    `calibration_x` (uint8 [N,C,H,W] in-distribution images; default: the training set of model.cfg)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--force) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
    try:
        model = model.cpu().eval()
        gen = torch.Generator().manual_seed(0)
        for net, (mod, shape) in _modules(model).items():
            x = _example(net, shape, 4, gen)
            with torch.no_grad():
                torch.jit.trace(mod, x).save(str(tmp / f"{net}.ts"))
            _export_onnx(mod, x, tmp / f"{net}.onnx", ONNX_IO[net])
        for net, (mod, shape) in _fused(model).items():
            _export_onnx(mod, _example("h1", shape, 4, gen), tmp / f"{net}.onnx", ONNX_FUSED_IO[net])
        spec = model.latent.spec()
        spec.save(tmp / "latent.npz")
        # Weights without the discriminator (not needed to serve or to retrain h): keeps the directory small.
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("d.")}
        torch.save({**model.meta(), "model": state}, tmp / "checkpoint.pt")

        parity = check_parity(tmp, model)
        worst = max(max(v.values()) for v in parity.values())
        if worst > atol:
            raise RuntimeError(f"export parity failed: max abs error {worst:.3g} > {atol} ({parity})")

        c, h, w = model.image_shape
        cfg = model.cfg
        manifest = {
            "name": name,
            "version": str(version),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model_kind": cfg.latent_kind if cfg.c1 else "unimodal",
            "supervision": supervision or ("semi-supervised" if cfg.semi_supervised else "unsupervised"),
            "latent": {"kind": spec.kind, "dim": spec.dim, "n_modes": spec.n_modes, "noise": spec.noise,
                       "priors": spec.priors.tolist(), "file": "latent.npz",
                       "formula": "z = centres[mode] + sigma * scales[mode] * eps; eps ~ U(-1,1) if noise == "
                                  "'uniform' else N(0,1); mode ~ Categorical(priors) when not given"},
            "mode_labels": model.class_names if model.class_names and len(model.class_names) == spec.n_modes else None,
            "image": ImageSpec(c, h, w).to_dict(),
            "onnx": {net: {"file": f"{net}.onnx", **ONNX_IO[net], "opset": OPSET,
                           "note": "h2 outputs logits; probabilities = softmax(logits)" if net == "h2" else None}
                     for net in ONNX_IO}
                    | {net: {"file": f"{net}.onnx", **ONNX_FUSED_IO[net], "opset": OPSET,
                             "note": "h2 . h1 fused: z = h1(x), logits = h2(z); probabilities = softmax(logits)"}
                       for net in ONNX_FUSED_IO},
            "torchscript": {net: f"{net}.ts" for net in ONNX_IO},
            "checkpoint": "checkpoint.pt",
            "parity": {"atol": atol, "batch": 64, **parity},
            "dataset": dataset or {"name": cfg.dataset, "classes": cfg.classes, "ratios": cfg.ratios,
                                   "groups": cfg.groups},
            "training": cfg.to_dict(),
            "metrics": metrics or {},
            **(extra or {}),
        }
        write_manifest(tmp, manifest)
        if calibrate_ood:
            # The OOD score and the input declaration, fitted on the training data through the exported graphs.
            from .calibrate import calibrate

            try:
                calibrate(tmp, calibration_x, source=calibration_source)
            except (OSError, ValueError) as e:
                raise RuntimeError(f"cannot calibrate the out-of-distribution score: {e} (pass the in-distribution "
                                   "images, or export with calibrate_ood=False / --no-calibrate-ood)") from e
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    load_manifest(out_dir, verify=True)
    return out_dir


def load_exported(model_dir: str | Path) -> NemganModel:
    """The eager model behind an exported directory (used to retrain h for prior learning)."""
    m = load_manifest(model_dir)
    return NemganModel.load(m.root / m.data.get("checkpoint", "checkpoint.pt"))
