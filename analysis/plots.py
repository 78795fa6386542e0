"""Figures: readable at paper size, log axes where the physics is multiplicative.

Importing this module changes nothing in matplotlib (no backend switch, no rcParams):
each figure function draws inside ``plt.rc_context(PAPER)`` and returns its figure, so
that it shows inline in a notebook like any other; :func:`save` writes it (and closes it
only when asked, as the command line does).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd._src.files import atomic_write_bytes

__all__ = [
    "staircase",
    "save",
    "emergence_vs_p",
    "emergence_vs_p_groups",
    "loss_vs_step",
    "skill_heatmap",
    "loglog_fit",
    "exponent_vs_param",
]

PAPER = {"font.size": 9, "axes.labelsize": 9, "legend.fontsize": 7, "xtick.labelsize": 8, "ytick.labelsize": 8}

# Okabe & Ito's colour-blind-safe palette: theory in vermillion, fits in blue, models in
# green / orange / purple; nothing relies on telling red from green.
COLORS = {
    "theory": "#D55E00",
    "fit": "#0072B2",
    "model": ("#009E73", "#E69F00", "#CC79A7"),
    "data": "black",
    "replica": "0.65",
    "flow": "#56B4E9",
}


def integer_ticks(ax, values, axis: str = "x"):
    """Ticks at integer ``values`` (thinned to at most ~8, keeping 1-2-5 steps on a log
    axis) with plain integer labels, and no minor ticks: no ``2x10^0`` on a width axis."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.unique(np.asarray(values, np.float64)[np.isfinite(values)]).astype(int)
    if v.size > 8:
        nice = [k * 10**e for e in range(0, 7) for k in (1, 2, 5)]
        keep = [x for x in nice if v.min() <= x <= v.max()]
        v = np.asarray(keep if len(keep) >= 2 else v[:: int(np.ceil(v.size / 8))])
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(v))
    a.set_major_formatter(FuncFormatter(lambda t, _: f"{int(round(t)):,}"))
    a.set_minor_locator(NullLocator())


def fit_label(fit, replicas: int | None = None) -> str:
    """``fit slope s [lo, hi]``, with the caveats a reader needs (see :func:`.fit.caveats`)."""
    from .fit import caveats

    text = f"fit slope {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]"
    c = caveats(fit, replicas)
    return text + (f" ({'; '.join(c)})" if c else "")


def _paper_style(fn):
    """Draw ``fn``'s figure in the paper style, leaving the global rcParams alone."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with plt.rc_context(PAPER):
            return fn(*args, **kwargs)

    return wrapped


def save(fig, path_stem: str | Path, formats=("png", "pdf"), close: bool = False):
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf``; return the paths.  ``close``
    releases the figure (for scripts that draw many; a notebook keeps it to show)."""
    path_stem = Path(path_stem)
    out = []
    for ext in formats:
        p = path_stem.parent / f"{path_stem.name}.{ext}"  # not with_suffix: a stem may hold dots (lr=0.001)
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=200 if ext == "png" else None, bbox_inches="tight")
        # a new file renamed into place: the old figure stays whole on a full disk, and a
        # link named like the figure is replaced, never written through
        atomic_write_bytes(p, buf.getvalue())
        out.append(p)
    if close:
        plt.close(fig)
    return out


@_paper_style
def staircase(
    metrics: dict,
    observable: str = "skill",
    replica: int = 0,
    times=None,
    title: str = "",
    predicted=None,
    loss_model=None,
    xlim=None,
    threshold: float = 0.5,
):
    """Per-direction ``observable`` vs step (log axis), coloured by ``p``, loss beneath.

    Args:
        metrics: a ``metrics.npz`` mapping.  replica: which replica to draw.
        times: optional ``(P,)`` emergence steps to mark (dotted vertical lines).
        predicted: optional ``(P,)`` flow-theory emergence steps to mark (ticks at the top).
        loss_model: optional ``(label, (T,) curve)`` drawn under the loss.
        threshold: the emergence threshold (drawn as a thin horizontal line).
    Returns:
        the matplotlib figure.
    """
    from matplotlib.lines import Line2D

    step = np.asarray(metrics["step"])
    y = np.asarray(metrics[observable])[replica]
    loss = np.asarray(metrics["loss"])[replica]
    P = y.shape[-1]
    sel = step > 0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    cmap = plt.get_cmap("viridis")
    for p in range(P):
        c = cmap(p / max(P - 1, 1))
        ax1.plot(step[sel], y[sel, p], color=c, lw=1.4, label=f"p={p + 1}")
        if times is not None and np.isfinite(times[p]):
            ax1.axvline(times[p], color=c, lw=0.6, ls=":")
        if predicted is not None and np.isfinite(predicted[p]):
            ax1.plot([predicted[p]] * 2, [1.06, 1.14], color=c, lw=1.6)
    ax1.axhline(threshold, color="0.5", lw=0.5)
    ax1.set_xscale("log")
    ax1.set_ylabel(observable)
    ax1.set_ylim(-0.05, 1.15 if observable == "skill" else 1.05)
    # directions beside the axes, so that they never cover the curves or the ticks
    shown = P if P <= 16 else 0
    leg = ax1.legend(
        *(ax1.get_legend_handles_labels() if shown else ([], [])),
        ncol=1 + (P > 8),
        fontsize=7,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="direction" if shown else None,
    )
    marks = [Line2D([], [], color="0.5", lw=0.5, label=f"threshold {threshold:g}")]
    if times is not None:
        marks.append(Line2D([], [], color="0.3", lw=0.6, ls=":", label="emergence step $T_p$ (crossing)"))
    if predicted is not None:
        marks.append(
            Line2D([], [], color="0.3", lw=1.6, marker="|", ls="none", ms=8, label="flow theory $T_p=\\tau_p/\\mathrm{lr}$")
        )
    ax1.add_artist(leg)
    ax1.legend(handles=marks, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 0.25 if shown else 1.0))
    ax1.set_title(title or f"emergence staircase (replica {replica})", fontsize=10)
    ax2.plot(step[sel], loss[sel], color=COLORS["data"], lw=1.4, label="measured")
    if loss_model is not None:
        ax2.plot(step[sel], np.asarray(loss_model[1])[sel], color=COLORS["theory"], lw=1.0, ls="--", label=loss_model[0])
    ax2.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
    ax.plot(x, anchor_y * (x / anchor_x) ** slope, color=COLORS["theory"], ls="--", lw=1.2, label=label, **kw)


def _no_theory(ax, theory_slope, reason: str) -> None:
    """Where theory predicts no power law (``theory_slope`` ``None``), say why in the
    legend (an empty entry), instead of drawing a line."""
    if reason and (theory_slope is None or not np.isfinite(theory_slope)):
        ax.plot([], [], " ", label=f"theory: {reason}")


def _fit_and_theory(ax, fit, theory_slope, theory_prefix, replicas=None, theory_reason="", **kw):
    """The fitted power law over its window and, if given, a theory line of slope
    ``theory_slope`` through the fit at the window's geometric middle (else the reason
    there is none, ``theory_reason``)."""
    _no_theory(ax, theory_slope, theory_reason)
    if fit is None or not np.isfinite(fit.slope):
        return
    xx = np.geomspace(fit.window[0], fit.window[1], 50)
    ax.plot(xx, fit.predict(xx), label=fit_label(fit, replicas), **kw)
    if theory_slope is not None and np.isfinite(theory_slope):
        xm = np.sqrt(fit.window[0] * fit.window[1])
        _theory_line(ax, xx, theory_slope, xm, fit.predict(xm), f"{theory_prefix} {theory_slope:.2f}")


@_paper_style
def emergence_vs_p(
    times, fit=None, theory_slope=None, predicted=None, xlabel="direction p", x=None, title="", budget=None, integer_x=None
):
    """Emergence step vs ``p`` (log-log): replicas (dots), median with 10-90% bars, fit
    with its interval, theory slope, and the flow prediction from the initial overlaps.

    A direction that a replica never learned (right-censored) is drawn as an arrow at
    the budget (the last step, ``budget``), never silently left out.

    Args: ``times`` ``(R, P)`` (``inf`` = censored); ``fit`` a :class:`.fit.PowerLawFit`;
    ``budget`` the run's last step (default: the largest finite time); ``integer_x``
    integer ticks on x (default: when ``x`` is the direction index).
    """
    from .emergence import log_quantiles

    R, P = times.shape
    integer_x = x is None if integer_x is None else integer_x
    x = np.arange(1, P + 1, dtype=np.float64) if x is None else np.asarray(x, np.float64)
    fin = times[np.isfinite(times)]
    budget = float(budget) if budget is not None else (float(fin.max()) if fin.size else 1.0)
    fig, ax = plt.subplots(figsize=(4.4, 3.4))
    jitter = 1.0 + 0.03 * (np.arange(R) - (R - 1) / 2) / max(R, 1)
    for r in range(R):
        ok = np.isfinite(times[r])
        ax.plot(
            x[ok] * jitter[r], times[r, ok], ".", color=COLORS["replica"], ms=3, zorder=1, label="replicas" if r == 0 else None
        )
    cens = ~np.isfinite(times)
    if cens.any():
        rr, pp = np.nonzero(cens)
        ax.plot(
            x[pp] * jitter[rr],
            np.full(pp.size, budget),
            "^",
            color=COLORS["replica"],
            ms=4,
            zorder=1,
            label=f"not learned by step {budget:,.0f} (censored)",
        )
    q = log_quantiles(times, [0.1, 0.5, 0.9], axis=0)
    ok = np.isfinite(q[1])
    hi = np.where(np.isfinite(q[2]), q[2], q[1])
    ax.errorbar(
        x[ok],
        q[1, ok],
        yerr=[q[1, ok] - q[0, ok], hi[ok] - q[1, ok]],
        fmt="o",
        color=COLORS["data"],
        ms=4,
        capsize=2,
        label="median (10-90%)",
        zorder=3,
    )
    if (~ok).any():
        ax.plot(
            x[~ok], np.full((~ok).sum(), budget), "^", color=COLORS["data"], ms=6, zorder=3, label="median not learned (censored)"
        )
    if predicted is not None:
        pm = log_quantiles(predicted, 0.5, axis=0)
        ax.plot(x, pm, "s", mfc="none", color=COLORS["flow"], ms=5, label="flow theory $\\tau_p/\\mathrm{lr}$ (median)")
    _fit_and_theory(ax, fit, theory_slope, "theory slope", replicas=R, color=COLORS["fit"], lw=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if integer_x:
        integer_ticks(ax, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("emergence step $T_p$")
    ax.set_title(title or "emergence time vs direction", fontsize=9)
    ax.legend(frameon=False, fontsize=6)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


@_paper_style
def loss_vs_step(step, loss, fit=None, theory_slope=None, models=(), title="", xlim=None, theory_reason=""):
    """Loss vs step (log-log): replicas (thin), mean (thick), fit over its window with
    interval, theory slope (or, where there is none, ``theory_reason`` in the legend), and
    model curves ``[(label, (T,) curve), ...]``."""
    step = np.asarray(step, np.float64)
    sel = step > 0
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    loss = np.asarray(loss)
    for i, row in enumerate(loss):
        ax.plot(step[sel], row[sel], color=COLORS["replica"], lw=0.6, zorder=1, label="replicas" if i == 0 else None)
    mean = np.mean(loss, axis=0)
    ax.plot(step[sel], mean[sel], color=COLORS["data"], lw=1.5, label="mean over replicas")
    for (label, curve), c in zip(models, COLORS["model"]):
        ax.plot(step[sel], np.asarray(curve)[sel], color=c, lw=1.0, ls="-.", label=label)
    _no_theory(ax, theory_slope, theory_reason)
    if fit is not None and np.isfinite(fit.slope):
        xx = np.geomspace(fit.window[0], fit.window[1], 50)
        ax.plot(xx, fit.predict(xx), color=COLORS["fit"], lw=2.0, alpha=0.8, label=fit_label(fit, loss.shape[0]))
        ax.axvspan(fit.window[0], fit.window[1], color=COLORS["fit"], alpha=0.06, lw=0, label="fit window")
        if theory_slope is not None and np.isfinite(theory_slope):
            _theory_line(ax, xx, theory_slope, xx[0], fit.predict(xx[0]), f"theory $-(2\\beta-1)/\\beta$ = {theory_slope:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("population MSE")
    ax.set_title(title or "loss vs step", fontsize=9)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.legend(frameon=False, loc="lower left", fontsize=6)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


@_paper_style
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
            ax.plot(
                times[ok], np.arange(1, P + 1)[ok], "|", color=COLORS["flow"], ms=8, mew=1.5, label="median emergence step $T_p$"
            )
        if xlim is not None:
            ax.set_xlim(*xlim)
    if times is not None:  # below the panels, where it hides no data
        axes[1].legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    axes[0].set_ylabel("direction p")
    axes[0].invert_yaxis()
    if P <= 20:
        integer_ticks(axes[0], np.arange(1, P + 1), axis="y")
    fig.colorbar(mesh, ax=axes, label=observable)
    return fig


@_paper_style
def loglog_fit(
    x,
    y,
    fit=None,
    theory_slope=None,
    theory_label="",
    xlabel="",
    ylabel="",
    series_label="",
    yerr=None,
    title="",
    integer_x=False,
    replicas=None,
    theory_reason="",
):
    """Points ``y(x)`` with a power-law fit and a theory line of the given slope
    (``integer_x``: integer ticks, for widths or dimensions)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    ax.errorbar(x, y, yerr=yerr, fmt="o", color=COLORS["data"], ms=4, capsize=2, label=series_label or "measured")
    _fit_and_theory(
        ax,
        fit,
        theory_slope,
        f"theory {theory_label} =",
        replicas=replicas,
        theory_reason=theory_reason,
        color=COLORS["fit"],
        lw=1.2,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    if integer_x:
        integer_ticks(ax, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


@_paper_style
def exponent_vs_param(x, slopes, cis, theory_fn=None, theory_label="", xlabel="", ylabel="", title=""):
    """Fitted exponents (with intervals) against a swept parameter, with the theory curve."""
    x = np.asarray(x, np.float64)
    slopes = np.asarray(slopes, np.float64)
    cis = np.asarray(cis, np.float64).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4.2, 3.3))
    lo = np.where(np.isfinite(cis[:, 0]), slopes - cis[:, 0], 0.0)
    hi = np.where(np.isfinite(cis[:, 1]), cis[:, 1] - slopes, 0.0)
    ax.errorbar(x, slopes, yerr=[lo, hi], fmt="o", color=COLORS["data"], ms=4, capsize=2, label="fit (95% bootstrap)")
    if theory_fn is not None and x.size:
        xx = np.linspace(x.min(), x.max(), 100) if np.ptp(x) > 0 else x
        ax.plot(xx, theory_fn(xx), color=COLORS["theory"], ls="--", lw=1.2, label=f"theory {theory_label}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    return fig


@_paper_style
def emergence_vs_p_groups(groups, title=""):
    """Emergence step vs ``p`` for several groups (e.g. one per ``beta``), one colour
    each: the Kaplan-Meier median per direction (an arrow at the budget where it is
    censored), the group's censored fit over its window, and its own theory line (dashed,
    slope ``theory["emergence_time_vs_p"]``, through the fit at the window's middle).

    Args: ``groups`` ``[(label, RunAnalysis), ...]``.
    """
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    allp = []
    for i, (label, a) in enumerate(groups):
        col = colors[i % len(colors)]
        P = a.times.shape[1]
        p = np.arange(1, P + 1, dtype=np.float64)
        allp.append(p)
        med = a.spread["median"]
        ok = np.isfinite(med)
        ax.plot(p[ok], med[ok], "o", color=col, ms=4, label=f"{label}: median")
        if (~ok).any():
            ax.plot(p[~ok], np.full((~ok).sum(), a.step[-1]), "^", color=col, ms=5, mfc="none")
        fit, th = a.fits.get("emergence_time_vs_p"), a.theory.get("emergence_time_vs_p")
        if fit is not None and np.isfinite(fit.slope):
            xx = np.geomspace(fit.window[0], fit.window[1], 50)
            ax.plot(xx, fit.predict(xx), "-", color=col, lw=1.0, label=f"fit {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]")
            if th is not None and np.isfinite(th):
                xm = np.sqrt(fit.window[0] * fit.window[1])
                ax.plot(xx, fit.predict(xm) * (xx / xm) ** th, "--", color=col, lw=1.0, label=f"theory {th:.2f}")
        elif a.windows.get("emergence_time_vs_p", {}).get("no_fit"):
            ax.plot([], [], " ", label=f"{label}: no fit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if allp:
        integer_ticks(ax, np.concatenate(allp))
    ax.set_xlabel("direction p")
    ax.set_ylabel("emergence step $T_p$")
    ax.set_title(title or "emergence time vs direction, by group (arrows: censored)", fontsize=9)
    ax.legend(frameon=False, fontsize=6)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig
