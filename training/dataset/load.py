"""The entry point: a preset name, a path or a DataSpec -> ImageDataset."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from core.data import PRESETS, default_data_root, resolve_path
from core.errors import DataError

from .sources import load_images
from .spec import DataSpec, ImageDataset
from .subsets import apply_spec


def load_dataset(
    spec: DataSpec | str, split: str | None = None, data_root: str | os.PathLike | None = None
) -> ImageDataset:
    """Load a preset name, a path, or a :class:`DataSpec`, applying its subsetting.

    ``split`` overrides the spec's split. The returned data set's ``spec`` is the spec as used
    (path kept as given, so it stays portable across machines with different data roots).
    """
    preset_name = None
    if isinstance(spec, str):
        key = spec.lower()
        if key in PRESETS:
            preset_name = key
            spec = DataSpec(**PRESETS[key], name=key)
        else:
            spec = DataSpec(path=spec)
    elif not isinstance(spec, DataSpec):
        raise DataError(f"expected a DataSpec, preset name or path, got {type(spec).__name__}")
    if split is not None:
        spec = dataclasses.replace(spec, split=split)

    root = Path(data_root) if data_root is not None else default_data_root()
    path = resolve_path(spec.path, root)
    if not path.exists():
        hint = "" if preset_name is None and Path(spec.path).is_absolute() else (
            f" (looked relative to the data root {root}; set NEMGAN_DATA_DIR or pass data_root; "
            f"presets: {sorted(PRESETS)})"
        )
        raise DataError(f"{path}: no such file or directory{hint}")

    x, y, names = load_images(path, spec.split)
    if spec.class_names is not None:
        names = [str(c) for c in spec.class_names]
        if y is not None and len(y) and int(y.max()) >= len(names):
            raise DataError(f"{path}: label {int(y.max())} has no entry in class_names ({len(names)} names)")
    x, y, names = apply_spec(x, y, names, spec, where=str(path))
    if len(x) == 0:
        raise DataError(f"{path}: no samples left after subsetting with {spec}")

    name = spec.name or (path.stem if path.is_file() else path.name)
    return ImageDataset(x=x, y=y, class_names=names, name=name, spec=spec)
