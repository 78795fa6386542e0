"""Figures (matplotlib, Agg): readable at paper size, log axes where the physics is
multiplicative."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["staircase", "save"]


def save(fig, path_stem: str | Path, formats=("png", "pdf")):
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf``; return the paths."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in formats:
        p = path_stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=200 if ext == "png" else None, bbox_inches="tight")
        out.append(p)
    plt.close(fig)
    return out


def staircase(metrics: dict, observable: str = "skill", replica: int = 0, times=None, title: str = ""):
    """Per-direction ``observable`` vs step (log axis), coloured by ``p``, loss beneath.

    Args:
        metrics: a ``metrics.npz`` mapping.  replica: which replica to draw.
        times: optional ``(P,)`` emergence steps to mark.
    Returns:
        the matplotlib figure.
    """
    step = np.asarray(metrics["step"])
    y = np.asarray(metrics[observable])[replica]
    loss = np.asarray(metrics["loss"])[replica]
    P = y.shape[-1]
    sel = step > 0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.0, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    cmap = plt.get_cmap("viridis")
    for p in range(P):
        c = cmap(p / max(P - 1, 1))
        ax1.plot(step[sel], y[sel, p], color=c, lw=1.4, label=f"p={p + 1}")
        if times is not None and np.isfinite(times[p]):
            ax1.axvline(times[p], color=c, lw=0.6, ls=":")
    ax1.set_xscale("log")
    ax1.set_ylabel(observable)
    ax1.set_ylim(-0.05, 1.15 if observable == "skill" else 1.05)
    ax1.legend(ncol=min(P, 4), fontsize=7, frameon=False, loc="upper left")
    ax1.set_title(title or f"emergence staircase (replica {replica})", fontsize=10)
    ax2.plot(step[sel], loss[sel], color="k", lw=1.4)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("population MSE")
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig
