"""13. The per-task step size: loss vs samples with ``eta(n) = eta0 (1 + n/n0)^(-1/2)``.

The same fit as experiment 9 (seed-mean loss over the loss fit window, the 2nd to the
P/10-th median emergence, bootstrap over seeds), now against the number of samples ``n`` (steps x batch)
under the ``inverse_sqrt`` schedule, compared with ``(1 - 2 beta)/(2 beta)``; the
constant-lr exponent of experiment 9 is shown beside it.  For the flow the schedule only
changes the clock, ``tau(n) = 2 n0 (sqrt(1 + n/n0) - 1) ~ sqrt(n)``, so the exponent is half
the constant-lr one once ``n >> n0``: the experiment shows that the engine runs the schedule
and how far the finite window is from that limit; at a finite lr (SGD) the noise would add
to it.

Every row stays out of the count.  On the flow the schedule only relabels time (a
tautology); the paper's remark is about SGD, whose step size must stay below
``a_p / d^(k/2)`` to learn direction ``p``.  A note reads experiment 12's SGD runs to say
which limit binds there: at ``d = 256`` the divergence limit comes first (the largest
stable lr follows the flow), and the per-task limit falls faster with ``d`` (``d^-2``
against the ``d^-1.46`` of experiment 4's divergence lr), so it can bind only at a larger
``d``, where the steps to the last emergence at the stable lr grow as ``~d^2.46``
(docs/model.md, "SGD's two step-size limits").
"""

from __future__ import annotations

import importlib
import math

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd._src import schedules
from scaling_sgd.analysis.emergence import log_scatter
from scaling_sgd.analysis.fit import MIN_SEEDS, loss_exponent
from sims import load
from sims.checks import ASYMPTOTE_TOL, additive_near_asymptote, check, fmt_steps, theory_value
from sims.load import Experiment
from sims.output import Outcome, save_figure

# On the flow a schedule only relabels time, loss_13(n) = loss_09(tau(n)): the row measures
# the clock, and the step-size limit of SGD that the paper's per-task remark is about does
# not exist there.  Decided from the model, before and whatever the fits.
FLOW_SCOPE = (
    "flow: a schedule only relabels the flow's time (a tautology here; the per-task remark is about SGD's step-size limit)"
)


def _sgd_limit_note(name: str, mode: str) -> str:
    """Which step-size limit binds for SGD, from the SGD-vs-flow experiment ``name``'s runs
    (paired by seed as that experiment pairs them): per lr, the seeds that diverged and the
    median ``T_p(SGD) / T_p(flow)`` over the (seed, direction) pairs both engines learned.
    The per-task remark needs a lr at which SGD is stable but no longer follows the flow;
    when the largest stable lr still follows it (within ``name``'s ``ratio_tol``), the
    divergence limit binds first at that ``d``."""
    sgd_vs_flow = importlib.import_module(f"sims.experiments.{name}")
    exp = load.load_experiment(name, mode)
    groups_s, groups_f = sgd_vs_flow.engine_groups(load.run_sweep(exp))
    parts, ratios = [], {}
    for lr, g in sorted(groups_s.items()):
        ratio = sgd_vs_flow.paired(g, groups_f[lr])[2]
        learned = np.isfinite(ratio)
        if learned.any():
            ratios[lr] = float(np.median(ratio[learned]))
            parts.append(
                f"lr = {lr:g}: {int((~g.ok).sum())} of {g.ok.size} seeds diverged, "
                f"median T_p(SGD) / T_p(flow) {ratios[lr]:.3f} over {int(learned.sum())} pairs"
            )
        else:
            parts.append(f"lr = {lr:g}: {int((~g.ok).sum())} of {g.ok.size} seeds diverged, no pair")
    cfg = next(iter(groups_s.values())).cfg
    text = f"On SGD (experiment {name}: reduced engine, P = m = {cfg['teacher']['P']}, d = {cfg['data']['d']}): "
    text += "; ".join(parts) + "."
    stable = [lr for lr, g in groups_s.items() if g.ok.all() and lr in ratios]
    if not stable:
        return text
    top, tol = max(stable), float(exp.get("ratio_tol", 0.05))
    text += f" The largest lr with no divergence ({top:g}) "
    if abs(ratios[top] - 1.0) > tol:
        return text + (
            f"departs from the flow by {ratios[top] - 1:+.1%}, more than {tol:g}: a finite-lr effect is visible "
            "below the divergence limit."
        )
    text += f"follows the flow within {tol:g}: no per-task limit binds up to it"
    if all(not g.ok.all() for lr, g in groups_s.items() if lr > top):
        return (
            text + ", and every larger lr of the grid diverged in some seed, so the per-task remark cannot be tested at this d."
        )
    return text + "."


def _theory(beta: float) -> float:
    """The per-task samples exponent (1 - 2 beta)/(2 beta): half the fixed-lr exponent, and
    no power law for beta <= 1/2 (:func:`sims.checks.theory_value`)."""
    value, _ = theory_value("loss_vs_step", beta)
    return 0.5 * value


def _clock_slope(n_lo: float, n_hi: float, n0: float) -> float:
    """Mean log-slope of the flow clock of the ``inverse_sqrt`` schedule,
    ``tau(n) / lr = 2 n0 (sqrt(1 + n/n0) - 1)`` (:func:`schedules.tau_over_lr`), between the
    steps ``n_lo`` and ``n_hi``: ``ln(tau(n_hi)/tau(n_lo)) / ln(n_hi/n_lo)``.  It tends to
    1/2 for ``n >> n0`` and to 1 for ``n << n0``; nan for an empty window."""
    if not (math.isfinite(n_lo) and math.isfinite(n_hi) and 0 < n_lo < n_hi):
        return math.nan
    t_lo, t_hi = schedules.tau_over_lr("inverse_sqrt", np.array([n_lo, n_hi]), n_hi, n0)
    return math.log(t_hi / t_lo) / math.log(n_hi / n_lo)


def run(exp: Experiment, force: bool = False) -> Outcome:
    (r,) = load.run_sweep(exp, force=force)
    nb = int(exp.get("n_boot", 400))
    B = int(r.cfg["train"]["batch_size"])
    P = int(r.cfg["teacher"]["P"])
    const = {}
    name = exp.get("constant_lr")
    if name:  # reused when computed (never recomputed from here unless missing)
        (rc,) = load.run_sweep(load.load_experiment(name, exp.mode))
        const = {
            g.common("beta"): loss_exponent(g.step, g.times[g.ok], g.metrics["loss"][g.ok], n_boot=nb, seed=50 + j)
            for j, g in enumerate(rc.groups())
        }
    n0 = float(r.cfg["train"]["schedule_n0"])
    checks, rows = [], []
    for j, g in enumerate(r.groups()):
        b = g.common("beta")
        th, th_why = theory_value("loss_vs_step", b)
        fit = loss_exponent(g.step, g.times[g.ok], g.metrics["loss"][g.ok], x=g.step * B, n_boot=nb, seed=j)
        c = const.get(b)
        # What the rows can test, from models only (never from the fit): the constant-lr
        # exponent is near its asymptote at this P (the additive model with the scatter of
        # the emergence times on the flow clock, as in experiment 9), and the schedule's
        # clock grows as ~sqrt(n) over the fitted window.
        T_tau = schedules.tau_over_lr("inverse_sqrt", g.times[g.ok], float(g.step[-1]), n0)
        additive, near = additive_near_asymptote(b, P, log_scatter(T_tau), th) if not th_why else (math.nan, False)
        clock = _clock_slope(fit["wlo"] / B, fit["whi"] / B, n0)
        scope = [th_why] if th_why else []
        if fit["seeds"] < MIN_SEEDS:
            scope.append(f"{fit['seeds']} seeds < {MIN_SEEDS}")
        if not th_why and not near:
            scope.append(f"P = {P}: finite-P")
        if not th_why and not abs(th * clock - 0.5 * th) <= ASYMPTOTE_TOL:
            scope.append("window too close to n0")
        if r.cfg["train"]["engine"] == "flow":
            scope.append(FLOW_SCOPE)
        checks.append(
            check(
                f"loss vs samples exponent, per-task step size, beta={b:g}, P={P}",
                _theory(b),
                fit["est"],
                fit["lo"],
                fit["hi"],
                why="finite window: tau(n) grows faster than sqrt(n) there (next row)",
                discriminates=not scope,
                scope="; ".join(scope),
                note=f"window [{fmt_steps(fit['wlo'])}, {fmt_steps(fit['whi'])}] samples (n0 = {n0:,.0f}, "
                f"{fit['wlo'] / n0:.0f}x to {fit['whi'] / n0:.0f}x n0), where the clock tau(n) grows as n^{clock:.3f} "
                f"on average (1/2 for n >> n0); the additive model gives a constant-lr exponent of {additive:.3f} "
                f"at P = {P}"
                + (f"; the constant-lr exponent (experiment 9) is {c['est']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]" if c else ""),
            )
        )
        if c and math.isfinite(c["est"]) and math.isfinite(clock):
            checks.append(
                check(
                    f"loss vs samples exponent, per-task step size, beta={b:g}, P={P}: "
                    "experiment 9's exponent x the clock's mean log-slope",
                    c["est"] * clock,
                    fit["est"],
                    fit["lo"],
                    fit["hi"],
                    why="the flow runs another clock than the schedule's tau(n)",
                    discriminates=False,
                    scope="finite-window reference built from experiment 9's fitted exponent",
                    note=f"{c['est']:.3f} x {clock:.3f}: for the flow the schedule only changes the clock, so "
                    "the two fits differ by the clock's mean log-slope over the window",
                )
            )
        rows.append({"beta": b, "fit": fit, "const": c, "g": g, "clock": clock})
    notes = [_sgd_limit_note(exp.get("sgd_at_finite_lr"), exp.mode)] if exp.get("sgd_at_finite_lr") else []
    for w in rows:
        if w["const"] and math.isfinite(w["const"]["est"]) and w["const"]["est"] != 0:
            f = w["fit"]
            notes.append(
                f"beta = {w['beta']:g}: per-task / constant-lr exponent = {f['est'] / w['const']['est']:.3f} "
                "(the remark on discretization predicts 1/2 for n >> n0); over this window the schedule's "
                f"clock tau(n) grows as n^{w['clock']:.3f} on average, so the constant-lr exponent predicts "
                f"{w['const']['est'] * w['clock']:.3f} here."
            )
    return Outcome(checks, _figure(exp, rows, B, n0), notes, [r], {"exponents": {str(w["beta"]): w["fit"] for w in rows}})


def _figure(exp, rows, B, n0):
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for j, w in enumerate(rows):
        c = plt.get_cmap("viridis")(0.85 * j / max(len(rows) - 1, 1))  # not the pale yellow end
        g, f = w["g"], w["fit"]
        n = g.step * B
        pos = n > 0
        loss = np.mean(g.metrics["loss"][g.ok], axis=0)
        ax.plot(
            n[pos], loss[pos], color=c, lw=1.4, label=f"beta={w['beta']:g}: fit {f['est']:.2f} [{f['lo']:.2f}, {f['hi']:.2f}]"
        )
        if math.isfinite(f["wlo"]):
            sel = (n >= f["wlo"]) & (n <= f["whi"])
            xm = np.sqrt(f["wlo"] * f["whi"])
            ym = np.exp(np.interp(np.log(xm), np.log(n[pos]), np.log(loss[pos])))
            ax.plot(n[sel], ym * (n[sel] / xm) ** _theory(w["beta"]), "--", color="#D55E00", lw=1)
            if w["const"] and math.isfinite(w["clock"]):
                ax.plot(n[sel], 0.6 * ym * (n[sel] / xm) ** (w["const"]["est"] * w["clock"]), ":", color="0.25", lw=1.2)
    ax.plot([], [], "--", color="#D55E00", label="theory (1-2beta)/(2beta)")
    if any(w["const"] for w in rows):
        ax.plot([], [], ":", color="0.25", lw=1.2, label="exp. 9 exponent x clock slope (shifted down)")
    ax.axvline(n0 * B, color="0.5", lw=0.8, alpha=0.6)  # the schedule's n0: tau(n) ~ sqrt(n) only well after it
    ax.text(n0 * B, 0.6, " n0", transform=ax.get_xaxis_transform(), fontsize=7, color="0.4")
    ax.set(xscale="log", yscale="log", xlabel="samples n", ylabel="seed-mean population MSE", title=exp.get("title"))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
