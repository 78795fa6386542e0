"""2. Emergence time vs direction at a fixed lr: ``T_p ~ p^beta`` for each beta.

The betas are replicas of one compiled run (split into groups here); the slope is fitted
on the directions whose median emergence (over seeds) is observed.  Experiment 3 reads
the same runs.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis import theory
from scaling_sgd.analysis.core import select_replicas
from scaling_sgd.analysis.fit import fit_power_law
from scaling_sgd.analysis.plots import integer_ticks
from sims import load
from sims.checks import check, few, scope, trend
from sims.load import Experiment
from sims.output import Outcome, save_figure


def run(exp: Experiment, force: bool = False) -> Outcome:
    (r,) = load.run_sweep(exp, force=force)
    nb = int(exp.get("n_boot", 400))
    P = r.cfg["teacher"]["P"]
    p = np.arange(1, P + 1)
    checks, series = [], []
    for j, g in enumerate(r.groups()):
        b, T = g.common("beta"), g.times[g.ok]
        f = fit_power_law(p, T, stat="median", n_boot=nb, seed=j)
        med = np.median(T, axis=0)  # inf (censored) counts as larger than any step
        note = f"{T.shape[0]}/{g.ok.size} replicas stable; {int(np.isfinite(med).sum())}/{P} directions with a finite median"
        checks.append(
            check(
                f"slope of T_p vs p, beta={b:g}",
                b,
                f.slope,
                f.ci[0],
                f.ci[1],
                note=note,
                why="finite P and seeds",
                **scope(few(fit=f)),
            )
        )
        series.append((b, g, T, med, f))
    notes = [_censoring_note(r, series), _order_note(series)]
    scatter = _scatter_note(series)
    if scatter:
        notes.append(scatter)
    figure = _figure(exp, p, series)
    return Outcome(checks, figure, notes, [r], {"median_T": {str(b): med.tolist() for b, _, _, med, _ in series}})


def _censoring_note(r, series) -> str:
    cens = ", ".join(f"beta={b:g}: {int(np.sum(~np.isfinite(T)))}/{T.size}" for b, _, T, _, _ in series)
    return (
        f"Directions not learned within {r.cfg['train']['steps']:,} steps are censored (inf) - replica-directions "
        f"censored: {cens}. A median is finite only when more than half the seeds learned the direction, and the slope "
        "is fitted on finite medians."
    )


def _order_note(series) -> str:
    """Are the individual T_p ordered in p, or only their medians?"""
    parts = []
    for b, _, T, med, _ in series:
        ordered = sum(bool(np.all(np.diff(t[np.isfinite(t)]) > 0)) for t in T)
        parts.append(f"beta={b:g}: {ordered}/{T.shape[0]} seeds, and the median T_p {trend(med)} with p")
    return "Seeds whose own T_p (learned directions) increase with p: " + "; ".join(parts) + "."


def _scatter_note(series) -> str | None:
    """Does the seed-to-seed scatter of T_p follow the initial overlaps?  Correlation of
    log T_p with the one-neuron flow prediction from each seed's initial state, both
    measured from their direction's median (needs the logged cosines)."""
    rs = []
    for b, g, _, _, _ in series:
        init = select_replicas(g.at_start(), np.flatnonzero(g.ok))
        if "overlap" not in init:
            return None
        tp, an = g.cfg["teacher"], g.cfg["analysis"]
        coeffs = theory.kernel_coeffs(tp["activation"], tp["activation_degree"])
        pred, _ = theory.predicted_emergence_steps(init, coeffs, init["a"], an["threshold"], an["observable"])
        T = np.where(g.times[g.ok] > 0, g.times[g.ok], np.nan)
        both = np.isfinite(T) & np.isfinite(pred)
        x, y = (np.where(both, np.log(v), np.nan) for v in (pred, T))
        with np.errstate(invalid="ignore"):
            x, y = x - np.nanmedian(x, axis=0), y - np.nanmedian(y, axis=0)
        keep = np.isfinite(x) & np.isfinite(y)
        rs.append((b, float(np.corrcoef(x[keep], y[keep])[0, 1]) if keep.sum() > 2 else np.nan))
    finite = [v for _, v in rs if np.isfinite(v)]
    if not finite:
        return None
    if all(v > 0.5 for v in finite):
        verdict = "the seed scatter of T_p follows the random initial overlaps m0 (T_p ~ 1/(8 a_p m0^2 lr))."
    else:
        verdict = "at least one r <= 0.5: the initial overlaps explain only part of the seed scatter."
    return (
        "Correlation over seeds of log T_p with the exact one-neuron flow prediction from each seed's initial "
        "overlaps, neurons assigned to directions one-to-one (both about their direction's median; too few learned "
        "directions where nan): " + ", ".join(f"beta={b:g}: r = {v:.2f}" for b, v in rs) + " - " + verdict
    )


def _figure(exp, p, series):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for j, (b, _, T, med, f) in enumerate(series):
        c = plt.get_cmap("plasma")(j / 4)
        for t in T:
            a1.plot(p, t, ".", color=c, alpha=0.35, ms=4)
        a1.plot(p, med, "o-", color=c, label=f"beta={b:g}: slope {f.slope:.2f} [{f.ci[0]:.2f}, {f.ci[1]:.2f}]")
        fin = np.isfinite(med)
        if fin.any():
            c0 = np.exp(np.mean(np.log(med[fin]) - b * np.log(p[fin])))
            a1.plot(p, c0 * p**b, ":", color=c, lw=1)
        a2.plot(p, med / med[0] if np.isfinite(med[0]) else med, "o-", color=c, label=f"beta={b:g}")
        a2.plot(p, p.astype(float) ** b, ":", color=c, lw=1)
    a1.set(xscale="log", yscale="log", xlabel="direction p", ylabel="emergence step T_p", title="T_p (dots: seeds, line: median)")
    a1.legend(fontsize=7)
    a2.set(
        xscale="log", yscale="log", xlabel="direction p", ylabel="median T_p / median T_1", title="normalised; dotted = p^beta"
    )
    for ax in (a1, a2):
        integer_ticks(ax, p)  # plain 1, 2, ..., P: no 2x10^0 labels running into each other
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
