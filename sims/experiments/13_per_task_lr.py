"""13. The per-task step size: loss vs samples with ``eta(n) = eta0 (1 + n/n0)^(-1/2)``.

The same fit as experiment 9 (seed-mean loss between the 2nd and the P/10-th median
emergence, bootstrap over seeds), now against the number of samples ``n`` (steps x batch)
under the ``inverse_sqrt`` schedule, compared with ``(1 - 2 beta)/(2 beta)``; the
constant-lr exponent of experiment 9 is shown beside it.  For the flow the schedule only
changes the clock, ``tau(n) = 2 n0 (sqrt(1 + n/n0) - 1) ~ sqrt(n)``, so the exponent is half
the constant-lr one once ``n >> n0``: the experiment shows that the engine runs the schedule
and how far the finite window is from that limit; at a finite lr (SGD) the noise would add
to it.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from sims import common as C


def _theory(beta: float) -> float:
    """The per-task samples exponent (1 - 2 beta)/(2 beta): half the fixed-lr exponent, and
    no power law for beta <= 1/2 (:func:`sims.common.theory_value`)."""
    value, _ = C.theory_value("loss_vs_step", beta)
    return 0.5 * value


def run(exp: C.Experiment, force: bool = False) -> C.Outcome:
    (r,) = C.run_sweep(exp, force=force)
    nb = int(exp.get("n_boot", 400))
    B = int(r.cfg["train"]["batch_size"])
    const = {}
    name = exp.get("constant_lr")
    if name:  # reused when computed (never recomputed from here unless missing)
        (rc,) = C.run_sweep(C.load_experiment(name, exp.mode))
        const = {g.common("beta"): C.loss_exponent(g, n_boot=nb, seed=50 + j) for j, g in enumerate(rc.groups())}
    n0 = float(r.cfg["train"]["schedule_n0"])
    checks, rows = [], []
    for j, g in enumerate(r.groups()):
        b = g.common("beta")
        fit = C.loss_exponent(g, x=g.step * B, n_boot=nb, seed=j)
        c = const.get(b)
        enough = fit["seeds"] >= C.MIN_SEEDS
        beta_ok = math.isfinite(_theory(b))
        checks.append(
            C.check(
                f"loss vs samples exponent, per-task step size, beta={b:g}, P={g.metrics['a'].shape[1]}",
                _theory(b),
                fit["est"],
                fit["lo"],
                fit["hi"],
                why="the window starts near n0, where tau(n) is not yet ~ sqrt(n)",
                discriminates=enough and beta_ok,
                scope=C.theory_value("loss_vs_step", b)[1] or ("" if enough else f"{fit['seeds']} seeds < {C.MIN_SEEDS}"),
                note=f"window [{C.fmt_steps(fit['wlo'])}, {C.fmt_steps(fit['whi'])}] samples (n0 = {n0:,.0f}, "
                f"{fit['wlo'] / n0:.0f}x to {fit['whi'] / n0:.0f}x n0)"
                + (f"; the constant-lr exponent (experiment 9) is {c['est']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]" if c else ""),
            )
        )
        rows.append({"beta": b, "fit": fit, "const": c, "g": g})
    notes = []
    for w in rows:
        if w["const"] and math.isfinite(w["const"]["est"]) and w["const"]["est"] != 0:
            notes.append(
                f"beta = {w['beta']:g}: per-task / constant-lr exponent = {w['fit']['est'] / w['const']['est']:.3f} "
                "(the remark on discretization predicts 1/2)."
            )
    return C.Outcome(checks, _figure(exp, rows, B), notes, [r], {"exponents": {str(w["beta"]): w["fit"] for w in rows}})


def _figure(exp, rows, B):
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
    ax.plot([], [], "--", color="#D55E00", label="theory (1-2beta)/(2beta)")
    ax.set(xscale="log", yscale="log", xlabel="samples n", ylabel="seed-mean population MSE", title=exp.get("title"))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return C.save_figure(fig, exp)
