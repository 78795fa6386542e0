"""Figures (matplotlib, Agg): readable at paper size, log axes where the physics is
multiplicative."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["staircase", "save", "emergence_vs_p", "loss_vs_step", "skill_heatmap", "loglog_fit", "exponent_vs_param"]

PAPER = {"font.size": 9, "axes.labelsize": 9, "legend.fontsize": 7, "xtick.labelsize": 8, "ytick.labelsize": 8}
plt.rcParams.update(PAPER)


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


def staircase(
    metrics: dict,
    observable: str = "skill",
    replica: int = 0,
    times=None,
    title: str = "",
    predicted=None,
    loss_model=None,
    xlim=None,
):
    """Per-direction ``observable`` vs step (log axis), coloured by ``p``, loss beneath.

    Args:
        metrics: a ``metrics.npz`` mapping.  replica: which replica to draw.
        times: optional ``(P,)`` emergence steps to mark (dotted).
        predicted: optional ``(P,)`` flow-theory emergence steps to mark (dashed ticks).
        loss_model: optional ``(label, (T,) curve)`` drawn under the loss.
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
        if predicted is not None and np.isfinite(predicted[p]):
            ax1.plot([predicted[p]] * 2, [1.06, 1.14], color=c, lw=1.6)
    if predicted is not None:
        ax1.text(
            0.99, 0.97, "ticks: flow theory $T_p=\\tau_p/\\mathrm{lr}$", transform=ax1.transAxes, ha="right", va="top", fontsize=7
        )
    ax1.set_xscale("log")
    ax1.set_ylabel(observable)
    ax1.set_ylim(-0.05, 1.15 if observable == "skill" else 1.05)
    ax1.legend(ncol=min(P, 4), fontsize=7, frameon=False, loc="upper left")
    ax1.set_title(title or f"emergence staircase (replica {replica})", fontsize=10)
    ax2.plot(step[sel], loss[sel], color="k", lw=1.4, label="measured")
    if loss_model is not None:
        ax2.plot(step[sel], np.asarray(loss_model[1])[sel], color="tab:red", lw=1.0, ls="--", label=loss_model[0])
        ax2.legend(frameon=False, loc="lower left")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("population MSE")
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
    if xlim is not None:
        ax2.set_xlim(*xlim)
    fig.tight_layout()
    return fig


def _theory_line(ax, x, slope, anchor_x, anchor_y, label, **kw):
    x = np.asarray(x, np.float64)
    ax.plot(x, anchor_y * (x / anchor_x) ** slope, color="tab:red", ls="--", lw=1.2, label=label, **kw)


def _fit_and_theory(ax, fit, theory_slope, theory_prefix, **kw):
    """The fitted power law over its window and, if given, a theory line of slope
    ``theory_slope`` through the fit at the window's geometric middle."""
    if fit is None or not np.isfinite(fit.slope):
        return
    xx = np.geomspace(fit.window[0], fit.window[1], 50)
    ax.plot(xx, fit.predict(xx), label=f"fit slope {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]", **kw)
    if theory_slope is not None and np.isfinite(theory_slope):
        xm = np.sqrt(fit.window[0] * fit.window[1])
        _theory_line(ax, xx, theory_slope, xm, fit.predict(xm), f"{theory_prefix} {theory_slope:.2f}")


def emergence_vs_p(times, fit=None, theory_slope=None, predicted=None, xlabel="direction p", x=None, title=""):
    """Emergence step vs ``p`` (log-log): replicas (dots), median with 10-90% bars, fit
    with its interval, theory slope, and the flow prediction from the initial overlaps.

    Args: ``times`` ``(R, P)``; ``fit`` a :class:`analysis.fit.PowerLawFit`.
    """
    from .emergence import log_quantiles

    R, P = times.shape
    x = np.arange(1, P + 1, dtype=np.float64) if x is None else np.asarray(x, np.float64)
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    jitter = 1.0 + 0.03 * (np.arange(R) - (R - 1) / 2) / max(R, 1)
    for r in range(R):
        ok = np.isfinite(times[r])
        ax.plot(x[ok] * jitter[r], times[r, ok], ".", color="0.6", ms=3, zorder=1)
    q = log_quantiles(times, [0.1, 0.5, 0.9], axis=0)
    ok = np.isfinite(q[1])
    hi = np.where(np.isfinite(q[2]), q[2], q[1])
    ax.errorbar(
        x[ok],
        q[1, ok],
        yerr=[q[1, ok] - q[0, ok], hi[ok] - q[1, ok]],
        fmt="o",
        color="k",
        ms=4,
        capsize=2,
        label="median (10-90%)",
        zorder=3,
    )
    if predicted is not None:
        pm = log_quantiles(predicted, 0.5, axis=0)
        ax.plot(x, pm, "s", mfc="none", color="tab:blue", ms=5, label="flow theory $\\tau_p/\\mathrm{lr}$ (median)")
    _fit_and_theory(ax, fit, theory_slope, "theory slope", color="k", lw=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("emergence step $T_p$")
    ax.set_title(title or "emergence time vs direction", fontsize=9)
    ax.legend(frameon=False)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def loss_vs_step(step, loss, fit=None, theory_slope=None, models=(), title="", xlim=None):
    """Loss vs step (log-log): replicas (thin), mean (thick), fit over its window with
    interval, theory slope, and model curves ``[(label, (T,) curve), ...]``."""
    step = np.asarray(step, np.float64)
    sel = step > 0
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    for row in np.asarray(loss):
        ax.plot(step[sel], row[sel], color="0.75", lw=0.6, zorder=1)
    mean = np.mean(loss, axis=0)
    ax.plot(step[sel], mean[sel], color="k", lw=1.5, label="mean over replicas")
    for (label, curve), c in zip(models, ["tab:green", "tab:purple", "tab:orange"]):
        ax.plot(step[sel], np.asarray(curve)[sel], color=c, lw=1.0, ls="-.", label=label)
    if fit is not None and np.isfinite(fit.slope):
        xx = np.geomspace(fit.window[0], fit.window[1], 50)
        ax.plot(
            xx,
            fit.predict(xx),
            color="tab:blue",
            lw=2.0,
            alpha=0.8,
            label=f"fit slope {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]",
        )
        ax.axvspan(fit.window[0], fit.window[1], color="tab:blue", alpha=0.06, lw=0)
        if theory_slope is not None and np.isfinite(theory_slope):
            _theory_line(ax, xx, theory_slope, xx[0], fit.predict(xx[0]), f"theory $-(2\\beta-1)/\\beta$ = {theory_slope:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("population MSE")
    ax.set_title(title or "loss vs step", fontsize=9)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.legend(frameon=False, loc="lower left")
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def skill_heatmap(step, y, observable="skill", times=None, xlim=None):
    """Heat map of ``y`` (direction x log step): replica 0 and the replica mean."""
    step = np.asarray(step, np.float64)
    sel = step > 0
    y = np.asarray(y)
    P = y.shape[-1]
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), sharey=True)
    for ax, img, name in ((axes[0], y[0], "replica 0"), (axes[1], y.mean(axis=0), f"mean of {y.shape[0]} replicas")):
        mesh = ax.pcolormesh(step[sel], np.arange(1, P + 1), img[sel].T, shading="nearest", cmap="magma", vmin=0.0, vmax=1.0)
        ax.set_xscale("log")
        ax.set_xlabel("SGD step")
        ax.set_title(name, fontsize=9)
        if times is not None:
            ok = np.isfinite(times)
            ax.plot(times[ok], np.arange(1, P + 1)[ok], "c|", ms=8, label="median $T_p$")
        if xlim is not None:
            ax.set_xlim(*xlim)
    axes[0].set_ylabel("direction p")
    axes[0].invert_yaxis()
    fig.colorbar(mesh, ax=axes, label=observable)
    return fig


def loglog_fit(x, y, fit=None, theory_slope=None, theory_label="", xlabel="", ylabel="", series_label="", yerr=None, title=""):
    """Points ``y(x)`` with a power-law fit and a theory line of the given slope."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    ax.errorbar(x, y, yerr=yerr, fmt="o", color="k", ms=4, capsize=2, label=series_label or None)
    _fit_and_theory(ax, fit, theory_slope, f"theory {theory_label} =", color="tab:blue", lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def exponent_vs_param(x, slopes, cis, theory_fn=None, theory_label="", xlabel="", ylabel="", title=""):
    """Fitted exponents (with intervals) against a swept parameter, with the theory curve."""
    x = np.asarray(x, np.float64)
    slopes = np.asarray(slopes, np.float64)
    cis = np.asarray(cis, np.float64).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    lo = np.where(np.isfinite(cis[:, 0]), slopes - cis[:, 0], 0.0)
    hi = np.where(np.isfinite(cis[:, 1]), cis[:, 1] - slopes, 0.0)
    ax.errorbar(x, slopes, yerr=[lo, hi], fmt="o", color="k", ms=4, capsize=2, label="fit (95% bootstrap)")
    if theory_fn is not None and x.size:
        xx = np.linspace(x.min(), x.max(), 100) if np.ptp(x) > 0 else x
        ax.plot(xx, theory_fn(xx), color="tab:red", ls="--", lw=1.2, label=f"theory {theory_label}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    return fig
