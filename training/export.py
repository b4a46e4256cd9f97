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


# --------------------------------------------------------------------------- pruning dead modes
#
# A model trained with more modes than the data supports (n_modes=20 with learned priors) ends with modes that h
# never picks. `export_pruned` keeps the modes h gives at least `min_usage` of the training images (label-free: h's
# argmax on the training split, the images the model was trained on; the learned priors are the alternative,
# usage_from="priors") and exports a model that has only those: h2's last Linear sliced to the kept rows (argmax
# over live modes, the kept logits unchanged), the latent's centres / scales / priors sliced (priors renormalised),
# one label per kept mode. The manifest's "pruning" section records which original mode each kept mode was and
# the usage of every original mode. The service, the CLI and the playground read the mode count from the latent
# and the labels from the manifest, so a pruned model shows only its live modes everywhere.

MIN_USAGE = 0.01
USAGE_SOURCES = ("train", "priors")


def mode_usage(model: NemganModel, x_uint8: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Share of the images (uint8 [N,C,H,W]) whose argmax of h is each mode: [K] floats summing to 1."""
    from core.images import uint8_to_model

    if len(x_uint8) == 0:
        raise ValueError("no images to measure the modes' usage on")
    model = model.cpu().eval()
    counts = np.zeros(model.n_modes, np.int64)
    for i in range(0, len(x_uint8), batch_size):
        ids, _ = model.cluster(torch.from_numpy(np.ascontiguousarray(uint8_to_model(x_uint8[i:i + batch_size]))))
        counts += np.bincount(ids, minlength=model.n_modes)
    return counts / counts.sum()


def live_modes(usage, min_usage: float = MIN_USAGE) -> list[int]:
    """Indices of the modes whose usage is >= min_usage; refuses to keep fewer than 2."""
    usage = np.asarray(usage, dtype=np.float64)
    if usage.ndim != 1 or not np.all(np.isfinite(usage)) or np.any(usage < 0):
        raise ValueError(f"usage must be one non-negative number per mode, got {usage.tolist()}")
    if not 0 <= min_usage < 1:
        raise ValueError(f"min_usage must be in [0, 1), got {min_usage}")
    kept = [int(k) for k in np.flatnonzero(usage >= min_usage)]
    if len(kept) < 2:
        raise ValueError(f"pruning at min_usage={min_usage:g} keeps {len(kept)} of {len(usage)} modes "
                         f"(usage {np.round(usage, 4).tolist()}); a model needs at least 2 modes: lower --min-usage "
                         "or export without --prune-modes")
    return kept


def _supervised(cfg) -> bool:
    return bool(getattr(cfg, "semi_supervised", False) or getattr(cfg, "supervised_mmgan", False))


def _last_linear(mod: torch.nn.Module) -> str:
    names = [n for n, m in mod.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError("h2 has no Linear layer to slice")
    return names[-1]


def prune_model(model: NemganModel, kept, mode_labels: list[str] | None = None) -> NemganModel:
    """A new eager model with only the modes `kept` (original indices, in order): mode j is original mode kept[j].

    h2's last Linear keeps rows `kept` (so h2's logits for kept modes are the original ones); the latent's
    mode-indexed tensors (alpha, centres, scales / mu, log_s) keep rows `kept`, so sampling mode j draws exactly
    what original mode kept[j] drew and the priors are the original ones renormalised over the kept modes.
    Labels: `mode_labels` (one per original mode, or one per kept mode) when given; else the class names sliced
    when labels trained the model; else neutral m0..m{K'-1}. The discriminator is dropped (as in every export)."""
    import copy

    K = model.n_modes
    kept = [int(k) for k in kept]
    if len(kept) < 2:
        raise ValueError(f"pruning would keep {len(kept)} mode(s); a model needs at least 2")
    if sorted(set(kept)) != kept or kept[0] < 0 or kept[-1] >= K:
        raise ValueError(f"kept modes must be distinct increasing indices in 0..{K - 1}, got {kept}")
    n = len(kept)
    if mode_labels is not None:
        labels = [str(v) for v in mode_labels]
        if len(labels) == K:
            labels = [labels[k] for k in kept]
        if len(labels) != n or len(set(labels)) != n or "" in labels:
            raise ValueError(f"mode labels must be {n} (kept) or {K} (all) distinct non-empty names, got {mode_labels}")
    elif _supervised(model.cfg) and model.class_names and len(model.class_names) == K:
        labels = [model.class_names[k] for k in kept]
    else:
        labels = [f"m{j}" for j in range(n)]

    cfg = copy.deepcopy(model.cfg)
    if isinstance(cfg.priors, list) and len(cfg.priors) == K:
        cfg.priors = [float(cfg.priors[k]) for k in kept]
    data_priors = None
    if model.data_priors is not None and len(model.data_priors) == K:
        dp = np.asarray([model.data_priors[k] for k in kept], np.float64)
        data_priors = (dp / dp.sum()).tolist() if dp.sum() > 0 else None
    new = NemganModel(cfg, n, model.image_shape, labels, data_priors)

    idx = torch.as_tensor(kept, dtype=torch.long)
    h2_last = f"h.h2.{_last_linear(model.h.h2)}."
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("d."):
            continue
        if (k.startswith("latent.") and v.dim() >= 1 and v.shape[0] == K) or k.startswith(h2_last):
            v = v.index_select(0, idx.to(v.device))
        state[k] = v.detach().clone()
    missing, unexpected = new.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("d.")] + list(unexpected)
    if bad:
        raise ValueError(f"cannot prune this model: state does not match at {bad[:5]}")
    return new.eval()


def export_pruned(model: NemganModel, out_dir: str | Path, name: str, version: str | int = "1", *,
                  min_usage: float = MIN_USAGE, usage=None, usage_from: str = "train",
                  x_usage: np.ndarray | None = None, data_root: str | None = None,
                  mode_labels: list[str] | None = None, extra: dict[str, Any] | None = None,
                  **export_kw) -> Path:
    """Export `model` with its dead modes pruned (see the section comment above); returns the model directory.

    Usage of each mode: `usage` when given (one number per mode, e.g. measured elsewhere); else with
    usage_from="train" (default) the share of the training images (`x_usage`, default the model's training split,
    loaded from its config; `data_root` overrides where) that h assigns to each mode by argmax; with
    usage_from="priors" the latent's priors (meaningful for learned priors). Modes with usage >= min_usage are
    kept; fewer than 2 is refused (ValueError). Other keywords go to export_model."""
    K = model.n_modes
    if usage is not None:
        source = "given"
        usage = np.asarray(usage, dtype=np.float64)
        if usage.shape != (K,):
            raise ValueError(f"usage has shape {usage.shape}, the model has {K} modes")
        n_images = None
    elif usage_from == "train":
        if x_usage is None:
            from .calibrate import training_images

            x_usage = training_images({"training": model.cfg.to_dict()}, data_root)
        usage = mode_usage(model, x_usage)
        source, n_images = "h argmax on the training split", int(len(x_usage))
        if export_kw.get("calibrate_ood", True) and export_kw.get("calibration_x") is None:
            export_kw["calibration_x"] = x_usage  # the same images: no second load
    elif usage_from == "priors":
        usage = model.latent.spec().priors
        source, n_images = "the latent's priors softmax(alpha)", None
    else:
        raise ValueError(f"usage_from must be one of {USAGE_SOURCES}, got {usage_from!r}")
    kept = live_modes(usage, min_usage)
    original_labels = model.class_names if model.class_names and len(model.class_names) == K else None
    pruned = prune_model(model, kept, mode_labels)
    pruning = {
        "criterion": f"usage >= min_usage; usage = {source}",
        "min_usage": float(min_usage),
        "n_images": n_images,
        "original_n_modes": K,
        "kept": kept,
        "dropped": [k for k in range(K) if k not in kept],
        "usage": [float(u) for u in usage],
        "original_priors": model.latent.spec().priors.tolist(),
        "original_mode_labels": original_labels,
        "note": "mode j of this model is mode kept[j] of the model as trained: h2's last layer and the latent's "
                "centres/scales/priors keep those rows (priors renormalised), so kept logits and latents are unchanged",
    }
    return export_model(pruned, out_dir, name, version, extra={**(extra or {}), "pruning": pruning}, **export_kw)
