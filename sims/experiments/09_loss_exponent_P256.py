"""9. The loss exponent where the scaling law exists: P = m = 256, beta in {0.75, 1, 1.5}.

One compiled flow run (betas and seeds are replicas).  Per beta: the seed-mean loss is
fitted against the step over the loss fit window, the 2nd to the P/10-th median emergence
(:func:`scaling_sgd.analysis.fit.loss_exponent`, a bootstrap over seeds that recomputes the
window), and
compared with ``-(2 beta - 1)/beta``; beside it, the additive model with ``T_p = T_1 p^beta``
and the measured log-normal scatter at the same P over the same ranks (what a finite P
predicts).  The emergence slope ``T_p ~ p^beta`` is fitted over every direction whose
median emergence is observed.  A row can discriminate when it has at least 8 seeds and
the P is large enough for the additive model to sit near the asymptote.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis.emergence import log_scatter, loss_fit_rule
from scaling_sgd.analysis.fit import MIN_SEEDS, caveats, fit_power_law, loss_exponent
from sims import load
from sims.checks import additive_near_asymptote, check, fmt_steps, sizes_label, theory_value
from sims.load import Experiment, Run
from sims.output import Outcome, save_figure


def run(exp: Experiment, force: bool = False) -> Outcome:
    r = load.pooled(load.run_sweep(exp, force=force))  # one point, or one point per seed
    nb = int(exp.get("n_boot", 400))
    P, m = int(r.cfg["teacher"]["P"]), int(r.cfg["student"]["m"])
    p = np.arange(1, P + 1)
    at = sizes_label(P, m)
    checks, rows = [], []
    for j, g in enumerate(r.groups()):
        b = g.common("beta")
        th, th_why = theory_value("loss_vs_step", b, 4)
        fit = loss_exponent(g.step, g.times[g.ok], g.metrics["loss"][g.ok], n_boot=nb, seed=j)
        T = g.times[g.ok]
        sigma = log_scatter(T)
        # the additive model at this P over the same window
        additive, near = additive_near_asymptote(b, P, sigma, th) if not th_why else (math.nan, False)
        enough = fit["seeds"] >= MIN_SEEDS
        scope = th_why or (
            "" if (near and enough) else (f"{fit['seeds']} seeds < {MIN_SEEDS}" if not enough else f"P = {P}: finite-P")
        )
        checks.append(
            check(
                f"loss exponent, beta={b:g}, {at}",
                th,
                fit["est"],
                fit["lo"],
                fit["hi"],
                why="finite P (see the additive-model value in the note)",
                discriminates=near and enough,
                scope=scope,
                note=f"{fit['seeds']} seeds; window [{fmt_steps(fit['wlo'])}, {fmt_steps(fit['whi'])}] steps ("
                f"{loss_fit_rule(P).removeprefix('the ')}, {fit['whi'] / fit['wlo']:.1f}x in t). The additive model "
                f"sum_p a_p^2 1{{t < T_p}} with T_p = T_1 p^beta exp(sigma xi) (sigma = {sigma:.2f}, measured) gives "
                f"{additive:.3f} over the same ranks at P = {P}",
            )
        )
        med = np.median(T, axis=0)
        learned = np.isfinite(med)
        fp = fit_power_law(p[learned], T[:, learned], stat="median", n_boot=nb, seed=100 + j)
        warn = caveats(fp)
        checks.append(
            check(
                f"slope of T_p vs p, beta={b:g}, {at}",
                b,
                fp.slope,
                fp.ci[0],
                fp.ci[1],
                why=f"finite width m = {'' if m == P else f'{m / P:g}'}P: the later directions get the neurons left over "
                "by the earlier ones (experiment 15, the race model)",
                discriminates=not warn,
                scope="; ".join(warn),
                note=f"{int(learned.sum())}/{P} directions with a finite median emergence step",
            )
        )
        rows.append({"beta": b, "theory": th, "fit": fit, "additive": additive, "g": g, "med": med, "slope": fp})
    notes = _notes(r, rows)
    extra = {
        "loss_exponent": {
            str(w["beta"]): {k: w["fit"][k] for k in ("est", "lo", "hi", "wlo", "whi", "seeds")} | {"additive": w["additive"]}
            for w in rows
        }
    }
    return Outcome(checks, _figure(exp, rows), notes, [r], extra)


def _notes(r: Run, rows) -> list[str]:
    out = []
    for w in rows:
        f, th = w["fit"], w["theory"]
        inside = math.isfinite(f["lo"]) and f["lo"] <= th <= f["hi"]
        learned = int(np.isfinite(w["med"]).sum())
        out.append(
            f"beta = {w['beta']:g}: fitted {f['est']:.3f} [{f['lo']:.3f}, {f['hi']:.3f}] against {th:.3f} "
            f"({'inside' if inside else 'outside'} the interval; the additive model at this P gives {w['additive']:.3f}); "
            f"{learned} of {len(w['med'])} directions have a finite median emergence step by step "
            f"{fmt_steps(float(r.step[-1]))}."
        )
    if len(rows) < 2:  # one beta (experiment 14): nothing to tell apart
        return out
    ests = [w["fit"]["est"] for w in rows]
    order = "falls" if all(np.diff(ests) < 0) else "does not fall monotonically"
    sep = all(rows[i]["fit"]["hi"] < rows[i - 1]["fit"]["lo"] for i in range(1, len(rows)))
    betas = ", ".join(f"{w['beta']:g}" for w in rows)
    out.append(
        f"Across beta = {betas} the fitted exponent {order} "
        f"({', '.join(f'{e:.3f}' for e in ests)}); the 95% intervals "
        + ("do not overlap: at this P the loss exponent tells these betas apart." if sep else "overlap for at least one pair.")
    )
    return out


def _figure(exp, rows):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for j, w in enumerate(rows):
        c = plt.get_cmap("viridis")(0.85 * j / max(len(rows) - 1, 1))  # not the pale yellow end
        g, f = w["g"], w["fit"]
        step = g.step
        pos = step > 0
        loss = np.mean(g.metrics["loss"][g.ok], axis=0)
        a1.plot(
            step[pos], loss[pos], color=c, lw=1.4, label=f"beta={w['beta']:g}: fit {f['est']:.2f} [{f['lo']:.2f}, {f['hi']:.2f}]"
        )
        if math.isfinite(f["wlo"]):
            sel = (step >= f["wlo"]) & (step <= f["whi"])
            xm = np.sqrt(f["wlo"] * f["whi"])
            ym = np.exp(np.interp(np.log(xm), np.log(step[pos]), np.log(loss[pos])))
            a1.plot(step[sel], ym * (step[sel] / xm) ** w["theory"], "--", color="#D55E00", lw=1)
            a1.axvspan(f["wlo"], f["whi"], color=c, alpha=0.05, lw=0)
        p = np.arange(1, w["med"].size + 1)
        a2.plot(p, w["med"], ".", color=c, ms=3, label=f"beta={w['beta']:g}: slope {w['slope'].slope:.2f}")
        fin = np.isfinite(w["med"])
        if fin.any():
            c0 = np.exp(np.mean(np.log(w["med"][fin]) - w["beta"] * np.log(p[fin])))
            a2.plot(p, c0 * p ** w["beta"], ":", color=c, lw=1)
    a1.plot([], [], "--", color="#D55E00", label="theory -(2beta-1)/beta over the fit window")
    a1.set(
        xscale="log",
        yscale="log",
        xlabel="SGD step (tau / lr)",
        ylabel="seed-mean population MSE",
        title=f"loss vs step, P = {rows[0]['g'].cfg['teacher']['P']}, m = {rows[0]['g'].cfg['student']['m']}",
    )
    wlo = [w["fit"]["wlo"] for w in rows if math.isfinite(w["fit"]["wlo"])]
    if wlo:  # the plateau before the first emergences is flat: start two decades before the fits
        a1.set_xlim(left=min(wlo) / 100)
    a2.set(xscale="log", yscale="log", xlabel="direction p", ylabel="median emergence step", title="T_p (dotted: p^beta)")
    for ax in (a1, a2):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
