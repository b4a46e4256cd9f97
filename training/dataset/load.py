"""The entry point: a preset name, a path or a DataSpec -> ImageDataset."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from core.data import DATASETS, default_data_root, resolve_path
from core.errors import DataError

from .colored import colorize
from .sources import FORMATS, load_images, resize_images
from .spec import DataSpec, ImageDataset
from .subsets import apply_spec

# "FORMAT:REST" names: folder:PATH, cifar10:PATH, stl10:PATH, npz:PATH, ..., celeba:ATTR[@PATH].
_DEFAULT_PATHS = {"cifar10": "cifar-10-batches-bin", "stl10": "stl10_binary", "celeba": "celeba",
                  "colored-mnist": "mnist"}


def spec_kwargs(name: str) -> dict:
    """DataSpec keyword arguments for a data-set name: a preset (core/data.py), ``FORMAT:PATH`` (e.g.
    ``folder:my_images``: an image folder however its files look; ``cifar10:/data/cifar-10-batches-bin``),
    ``celeba:ATTR`` or ``celeba:ATTR@PATH`` (CelebA with attribute(s) ATTR as the label, e.g.
    ``celeba:Eyeglasses``; PATH default <data root>/celeba), or a plain path (format detected)."""
    key = name.lower()
    if key in DATASETS:
        return dict(DATASETS[key], name=key)
    fmt, sep, rest = name.partition(":")
    if sep and fmt.lower() in FORMATS:
        fmt = fmt.lower()
        if fmt == "celeba":
            attr, _, path = rest.partition("@")
            return dict(path=path or _DEFAULT_PATHS["celeba"], format=fmt, attribute=attr or None)
        return dict(path=rest or _DEFAULT_PATHS.get(fmt, rest), format=fmt)
    return dict(path=name)


def load_dataset(
    spec: DataSpec | str, split: str | None = None, data_root: str | os.PathLike | None = None,
    size: int | None = None, channels: int | None = None,
) -> ImageDataset:
    """Load a preset name, a path, or a :class:`DataSpec`, applying its subsetting.

    ``split`` overrides the spec's split, ``size``/``channels`` (the model's input) its size and channels.
    The returned data set's ``spec`` is the spec as used (path kept as given, so it stays portable across
    machines with different data roots).
    """
    preset_name = None
    if isinstance(spec, str):
        kwargs = spec_kwargs(spec)
        preset_name = kwargs.get("name")
        spec = DataSpec(**kwargs)
    elif not isinstance(spec, DataSpec):
        raise DataError(f"expected a DataSpec, preset name or path, got {type(spec).__name__}")
    if split is not None:
        spec = dataclasses.replace(spec, split=split)
    if size or channels:
        spec = dataclasses.replace(spec, size=size or spec.size, channels=channels or spec.channels)

    root = Path(data_root) if data_root is not None else default_data_root()
    path = resolve_path(spec.path, root)
    if not path.exists():
        hint = "" if preset_name is None and Path(spec.path).is_absolute() else (
            f" (looked relative to the data root {root}; set NEMGAN_DATA_DIR or pass data_root; "
            f"presets: {sorted(DATASETS)})"
        )
        raise DataError(f"{path}: no such file or directory{hint}")

    extras = None
    if spec.format == "colored-mnist":
        # Colour the digits first (the colours are per file row), then bring them to the asked size.
        x, y, names = load_images(path, spec.split, format="idx" if path.is_dir() else None)
        x, extras = colorize(x, spec.split)
        x = resize_images(x, spec.size, spec.channels, path)
    else:
        x, y, names = load_images(path, spec.split, size=spec.size, channels=spec.channels, format=spec.format,
                                  attribute=spec.attribute)
    if spec.class_names is not None:
        names = [str(c) for c in spec.class_names]
        if y is not None and len(y) and int(y.max()) >= len(names):
            raise DataError(f"{path}: label {int(y.max())} has no entry in class_names ({len(names)} names)")
    x, y, names, rows = apply_spec(x, y, names, spec, where=str(path), return_index=True)
    if len(x) == 0:
        raise DataError(f"{path}: no samples left after subsetting with {spec}")
    if extras is not None:
        extras = {k: v[rows] for k, v in extras.items()}

    name = spec.name or (path.stem if path.is_file() else path.name)
    return ImageDataset(x=x, y=y, class_names=names, name=name, spec=spec, extras=extras)
