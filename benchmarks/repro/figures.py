"""The report's figures (matplotlib, written only when there is something to draw).
"""

from __future__ import annotations

import math
from pathlib import Path

from .util import read_stats, resolve


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display; imported only when a report is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves_figure(rows: list[dict], path: Path, title: str) -> bool:
    plt = _pyplot()

    series = [(r, read_stats(resolve(r["run_dir"]))) for r in rows if r.get("run_dir")]
    series = [(r, s) for r, s in series if s]
    if not series:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for r, stats in series:
        label = f"{r['row']}"
        ev = [s for s in stats if "val_acc" in s]
        if ev:
            axes[0].plot([s["step"] for s in ev], [s["val_acc"] for s in ev], marker=".", label=label)
        mk = "." if len(stats) < 5 else None
        line = axes[1].plot([s["step"] for s in stats], [s.get("loss_d", math.nan) for s in stats], marker=mk,
                            label=f"{label} d")
        axes[1].plot([s["step"] for s in stats], [s.get("loss_g", math.nan) for s in stats], ls="--", marker=mk,
                     color=line[0].get_color(), label=f"{label} g")
        axes[2].plot([s["step"] for s in stats], [s.get("loss_mode", math.nan) for s in stats], marker=mk, label=label)
    axes[0].set(title="held-out val ACC (Hungarian)", xlabel="step", ylabel="ACC", ylim=(0, 1.02))
    axes[1].set(title="adversarial losses (solid d, dashed g)", xlabel="step")
    axes[2].set(title="mode loss (CE of h on g's samples)", xlabel="step", yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    _save_figure(fig, path)
    return True


def sigma_figure(rows: list[dict], path: Path) -> bool:
    plt = _pyplot()

    rows = [r for r in rows if r.get("sigma_sweep")]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for r in rows:
        s = r["sigma_sweep"]
        for ax, key in zip(axes, ("quality", "diversity", "combined")):
            ax.plot(s["sigma"], s[key], marker="o", label=r["model"])
    for ax, key, eq in zip(axes, ("quality", "diversity", "combined"), ("3.2-3.3", "3.6", "3.7")):
        ax.set(title=f"{key} score (004 eq. {eq})", xlabel="sampling σ (trained at σ = 1)")
        vals = [v for r in rows for v in r["sigma_sweep"][key]]
        if vals and min(vals) > 0 and max(vals) < 0.05:
            ax.set_yscale("log")  # the quality score is exp(-distance): tiny for poor samples
        ax.axvline(1.0, color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=8)
    fig.suptitle("004 sec. 4.3: the quality / diversity trade-off vs σ (MNIST)")
    _save_figure(fig, path)
    return True


def alg2_figure(rows: list[dict], path: Path) -> bool:
    plt = _pyplot()

    rows = [r for r in rows if r.get("status") == "ok" and r.get("algorithm2")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.8))
    w = 0.35
    xs = range(len(rows))
    ax.bar([x - w / 2 for x in xs], [r["headline_h"]["acc"] for r in rows], w, label="h (inverter)")
    ax.bar([x + w / 2 for x in xs], [r["algorithm2"]["acc"] for r in rows], w, label="Algorithm 2")
    paper = rows[0]["paper"].get("acc")
    if paper is not None:
        ax.axhline(paper, color="k", ls="--", lw=1, label=f"paper (Table 5.1) {paper:.4f}")
    ax.set_xticks(list(xs), [r["model"] for r in rows])
    ax.set(ylabel="test ACC (Hungarian)", ylim=(0, 1.05), title="004: clustering with h vs Algorithm 2 (MNIST)")
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    return True
