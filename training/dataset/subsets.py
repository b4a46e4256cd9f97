"""Subsetting: classes, groups, exact ratios, stratified caps; and the labeled subset for semi-supervision."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from core.errors import DataError

from .arrays import as_labels
from .spec import DataSpec


def _allocate(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder), each <= cap."""
    share = total * weights / weights.sum()
    n = np.minimum(np.floor(share).astype(np.int64), caps)
    # Hand out what rounding down left over, biggest fractional part first, where room remains.
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while n.sum() < total:
        progressed = False
        for k in order:
            if n.sum() >= total:
                break
            if n[k] < caps[k]:
                n[k] += 1
                progressed = True
        if not progressed:
            break
    return n


def _exact_ratio_counts(counts: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per-class sample counts matching ``ratios`` as closely as integers allow, with the largest total."""
    p = ratios / ratios.sum()
    # The class that runs out first bounds the total; rounding may push a class one over its
    # count, in which case shrink the total until everything fits.
    total = int(np.floor(np.min(counts[p > 0] / p[p > 0])))
    while total > 0:
        share = total * p
        n = np.floor(share).astype(np.int64)
        rest = total - int(n.sum())
        for k in np.argsort(-(share - n), kind="stable")[:rest]:
            n[k] += 1
        if np.all(n <= counts):
            return n
        total -= 1
    return np.zeros_like(counts)


def _pick(rng: np.random.Generator, y: np.ndarray, n_per_class: np.ndarray) -> np.ndarray:
    """Random ``n_per_class[k]`` indices of each class k, returned in original order."""
    chosen = [
        rng.choice(np.flatnonzero(y == k), size=int(m), replace=False)
        for k, m in enumerate(n_per_class)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def apply_spec(x, y, names, spec: DataSpec, where: str, return_index: bool = False):
    """Apply classes/groups/ratios/max_samples to loaded arrays; returns (x, y, names), and with
    ``return_index`` also the kept rows' indices into the input (to carry per-image extras along)."""
    rows = np.arange(len(x))
    wants_labels = spec.classes is not None or spec.groups is not None or spec.ratios is not None
    if wants_labels and y is None:
        raise DataError(f"{where}: classes/groups/ratios need labels, but the data has none")

    if y is not None:
        present = sorted(set(np.unique(y).tolist()))

        def check_labels(labels: Sequence[Any], what: str) -> list[int]:
            if not all(is_int(c) for c in labels):
                raise DataError(f"{where}: {what} must be integer labels, got {list(labels)}")
            labels = [int(c) for c in labels]
            missing = [c for c in labels if c not in present]
            if missing:
                raise DataError(
                    f"{where}: {what} {missing} not present in the data (labels present: {present})"
                )
            if len(set(labels)) != len(labels):
                raise DataError(f"{where}: {what} lists a label more than once: {labels}")
            return labels

        if spec.groups is not None:
            groups = [list(g) for g in spec.groups]
            if not groups or any(len(g) == 0 for g in groups):
                raise DataError(f"{where}: groups must be non-empty lists of labels, got {spec.groups}")
            flat = check_labels([c for g in groups for c in g], "groups label(s)")
            if spec.classes is not None and sorted(spec.classes) != sorted(flat):
                raise DataError(f"{where}: give either classes or groups (they disagree: {spec.classes} vs {groups})")
            mapping = {c: k for k, g in enumerate(groups) for c in g}
            names = ["+".join(names[c] for c in g) for g in groups]
        elif spec.classes is not None:
            if len(spec.classes) == 0:
                raise DataError(f"{where}: classes must not be empty")
            classes = check_labels(spec.classes, "class(es)")
            mapping = {c: k for k, c in enumerate(classes)}
            names = [names[c] for c in classes]
        else:
            mapping = None
        if mapping is not None:
            keep = np.isin(y, list(mapping))
            lut = np.full(int(y.max()) + 1, -1, dtype=np.int64)
            for c, k in mapping.items():
                lut[c] = k
            x, y, rows = x[keep], lut[y[keep]], rows[keep]

    rng = np.random.default_rng(spec.seed)

    if spec.ratios is not None:
        n_classes = len(names)
        ratios = np.asarray(spec.ratios, dtype=np.float64)
        if ratios.ndim != 1 or len(ratios) != n_classes:
            raise DataError(
                f"{where}: ratios has {ratios.size} entries but there are {n_classes} "
                f"classes/groups ({names})"
            )
        if not np.all(np.isfinite(ratios)) or np.any(ratios <= 0):
            raise DataError(f"{where}: ratios must all be positive numbers, got {list(spec.ratios)}")
        counts = np.bincount(y, minlength=n_classes)
        idx = _pick(rng, y, _exact_ratio_counts(counts, ratios))
        x, y, rows = x[idx], y[idx], rows[idx]

    if spec.max_samples is not None:
        if not is_int(spec.max_samples) or spec.max_samples < 1:
            raise DataError(f"{where}: max_samples must be a positive integer, got {spec.max_samples!r}")
        if len(x) > spec.max_samples:
            if y is None:
                idx = np.sort(rng.choice(len(x), size=spec.max_samples, replace=False))
            else:
                counts = np.bincount(y, minlength=len(names))
                n = _allocate(spec.max_samples, counts.astype(np.float64), counts)
                # Stratified means every class survives the cap when the cap allows it.
                if spec.max_samples >= np.count_nonzero(counts):
                    n = _ensure_one_each(n, counts)
                idx = _pick(rng, y, n)
            x, rows = x[idx], rows[idx]
            y = None if y is None else y[idx]
    if return_index:
        return np.ascontiguousarray(x), y, names, rows
    return np.ascontiguousarray(x), y, names


def _ensure_one_each(n: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Give every non-empty class at least one sample, taking from the largest, keeping the sum."""
    n = n.copy()
    for k in np.flatnonzero((n == 0) & (counts > 0)):
        n[int(np.argmax(n))] -= 1
        n[k] = 1
    return n


def labeled_indices(
    y: np.ndarray,
    fraction: float | None = None,
    count: int | None = None,
    per_class: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the samples whose labels the semi-supervised objective may see.

    Give exactly one of ``fraction`` (of all samples, in (0, 1]) or ``count`` (total number of
    labeled samples). With ``per_class`` the subset is stratified and holds at least one sample
    of every class present: a class with no labeled example cannot be tied to a mode.
    Returns sorted int64 indices, deterministic for a given seed.
    """
    if y is None:
        raise DataError("labeled_indices needs labels, but y is None")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"labeled_indices needs a non-empty 1-D label array, got shape {y.shape}")
    y = as_labels(y, len(y), "labeled_indices")
    if (fraction is None) == (count is None):
        raise DataError("labeled_indices: give exactly one of fraction or count")
    n = len(y)
    counts = np.bincount(y)
    n_present = int(np.count_nonzero(counts))

    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
                or not (0.0 < float(fraction) <= 1.0):
            raise DataError(f"labeled_indices: fraction must be in (0, 1], got {fraction!r}")
        total = max(1, int(round(float(fraction) * n)))
        if per_class:
            total = max(total, n_present)  # "at least one per class" wins over a tiny fraction
    else:
        if not is_int(count) or not (1 <= count <= n):
            raise DataError(f"labeled_indices: count must be an integer in 1..{n}, got {count!r}")
        total = int(count)
        if per_class and total < n_present:
            raise DataError(
                f"labeled_indices: count={total} cannot cover all {n_present} classes with one label each"
            )

    rng = np.random.default_rng(seed)
    if not per_class:
        return np.sort(rng.choice(n, size=total, replace=False)).astype(np.int64)
    alloc = _ensure_one_each(_allocate(total, counts.astype(np.float64), counts), counts)
    return _pick(rng, y, alloc).astype(np.int64)
