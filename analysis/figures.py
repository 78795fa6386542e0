"""The figures of one run's analysis (staircase, emergence vs p, loss vs step, heatmap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots, theory
from .core import RunAnalysis

__all__ = ["make_figures"]


def make_figures(res: RunAnalysis, out_dir: Path, title: str = "") -> list[str]:
    """Draw the run's four figures into ``out_dir`` (PNG and PDF); return the paths."""
    out = []
    med = res.spread["median"]
    # start a decade before the first emergence: the untrained plateau carries no information
    fin = res.times[np.isfinite(res.times)]
    pos = res.step[res.step > 0]
    xlim = (max(float(fin.min()) / 10.0, float(pos.min())), float(pos.max()) * 1.05) if fin.size else None
    pred0 = res.predicted[0] if res.predicted is not None else None
    add0 = theory.additive_loss(res.step, res.times[0], res.a[0], res.K1)
    fig = plots.staircase(
        {"step": res.step, res.observable: res.y, "loss": res.loss},
        res.observable,
        0,
        res.times[0],
        title=title,
        predicted=pred0,
        loss_model=("additive model $\\sum_p a_p^2K(1)1\\{t<T_p\\}$", add0),
        xlim=xlim,
    )
    out += plots.save(fig, out_dir / "staircase", close=True)
    fig = plots.emergence_vs_p(
        res.times,
        res.fits.get("emergence_time_vs_p"),
        res.theory["emergence_time_vs_p"],
        res.predicted,
        budget=float(res.step[-1]),
    )
    out += plots.save(fig, out_dir / "emergence_vs_p", close=True)
    fig = plots.loss_vs_step(
        res.step,
        res.loss,
        res.fits.get("loss_vs_step"),
        res.theory["loss_vs_step"],
        res.models,
        xlim=xlim,
        theory_reason=res.theory_reasons.get("loss_vs_step", ""),
    )
    out += plots.save(fig, out_dir / "loss_vs_step", close=True)
    fig = plots.skill_heatmap(res.step, res.y, res.observable, med, xlim=xlim)
    out += plots.save(fig, out_dir / "heatmap", close=True)
    return [str(p) for p in out]
