"""11. Width floor at P = 256: a width-m student plateaus at ``sum_{p>m} a_p^2 ~ m^(1-2 beta)``.

Flow runs (no SGD fluctuation on the plateau) at widths 4 to 128 of P = 256 directions.
The plateau is the mean loss over the last ``plateau_frac`` of the steps; the slope of the
median plateau against m is fitted over ``fit_m`` with a bootstrap over seeds, beside the
exact finite-P tail ``sum_{p>m}^P a_p^2`` over the same widths.  A second row tests the
additive picture directly: plateau / ``sum`` of ``a_p^2`` over the directions the student
did not learn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis.fit import MIN_SEEDS, bootstrap, fit_from_draws
from scaling_sgd.analysis.plots import integer_ticks
from sims import load
from sims.checks import check, theory_value
from sims.load import Experiment
from sims.output import Outcome, save_figure


def run(exp: Experiment, force: bool = False) -> Outcome:
    runs = [r.single() for r in load.run_sweep(exp, force=force)]
    nb, frac = int(exp.get("n_boot", 400)), float(exp.get("plateau_frac", 0.1))
    lo_m, hi_m = exp.get("fit_m", [4, 64])
    beta = runs[0].common("beta")
    a = runs[0].metrics["a"][0]
    P = a.size
    ms = np.array([int(r.settings["student.m"]) for r in runs], float)
    late = [r.step >= (1.0 - frac) * r.step[-1] for r in runs]
    plateaus = [np.where(r.ok, np.mean(r.metrics["loss"][:, w], axis=1), np.nan) for r, w in zip(runs, late)]
    learned = [r.last("skill") > 0.5 for r in runs]
    unlearned = [np.sum(np.where(got, 0.0, r.metrics["a"] ** 2), axis=1) for r, got in zip(runs, learned)]
    # still moving: the loss fell by more than 1% over the plateau stretch (then it is no plateau yet)
    moving = [int(np.sum(r.metrics["loss"][:, -1] < 0.99 * r.metrics["loss"][:, int(np.argmax(w))])) for r, w in zip(runs, late)]
    sel = (ms >= lo_m) & (ms <= hi_m)
    R = min(p.size for p in plateaus)
    est, lo, hi = bootstrap(
        lambda ii: fit_from_draws(ms[sel], [np.nanmedian(p[ii]) for p, s in zip(plateaus, sel) if s]).slope, R, nb
    )
    tail = np.array([np.sum(a[int(m) :] ** 2) for m in ms])
    s_tail = fit_from_draws(ms[sel], tail[sel]).slope
    ratios = np.concatenate([p / u for p, u in zip(plateaus, unlearned)])
    ratios = ratios[np.isfinite(ratios)]
    u_est, u_lo, u_hi = bootstrap(lambda ii: np.median(ratios[ii]), ratios.size, nb, seed=1)
    theory, th_why = theory_value("plateau_vs_m", beta)
    enough = R >= MIN_SEEDS
    near = not th_why and abs(s_tail - theory) <= 0.1
    checks = [
        check(
            f"slope of plateau vs m, beta={beta:g}, P={P}",
            theory,
            est,
            lo,
            hi,
            why="the finite-P tail (see the note)",
            discriminates=enough and near and int(sel.sum()) >= 3,
            scope=th_why
            or ("" if (enough and near) else (f"{R} seeds < {MIN_SEEDS}" if not enough else f"P = {P}: finite-P tail")),
            note=f"widths {ms[sel].astype(int).tolist()} (of {ms.astype(int).tolist()}); the exact finite-P tail "
            f"sum_{{p>m}}^{P} a_p^2 has slope {s_tail:.3f} over the same widths; {R} seeds",
        ),
        check(
            "plateau / sum of a_p^2 over the unlearned directions",
            1.0,
            u_est,
            u_lo,
            u_hi,
            tol=0.01,
            why="a neuron shared between directions, or a plateau not reached",
            discriminates=enough,
            scope="" if enough else f"{R} seeds < {MIN_SEEDS}",
            note=f"median over {ratios.size} runs (all widths and seeds); tolerance 0.01 for the flow's rtol and the "
            "averaging window",
        ),
    ]
    top = [float(np.mean(np.all(got[:, : int(m)], axis=1))) for got, m in zip(learned, ms)]
    notes = [
        "Fraction of seeds whose width-m student learned all of its top m directions: "
        + ", ".join(f"m={int(m)}: {t:.2f}" for m, t in zip(ms, top))
        + ".",
        "Runs whose loss still fell by more than 1% over the plateau window (not yet at their floor): "
        + (", ".join(f"m={int(m)}: {k}" for m, k in zip(ms, moving) if k) or "none")
        + ".",
    ]
    med = np.array([np.nanmedian(p) for p in plateaus])
    return Outcome(
        checks, _figure(exp, ms, plateaus, med, tail, est, lo, hi, theory, sel), notes, runs, {"median_plateau": med.tolist()}
    )


def _figure(exp, ms, plateaus, med, tail, est, lo, hi, theory, sel):
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for m, p in zip(ms, plateaus):
        ax.plot(np.full(p.size, m), p, ".", color="0.65", ms=4)
    ax.plot(ms, med, "o", color="black", label=f"median plateau: slope {est:.2f} [{lo:.2f}, {hi:.2f}] (fit widths)")
    ax.plot(ms, tail, "s", mfc="none", color="#009E73", label="finite-P tail sum_{p>m} a_p^2")
    if sel.any() and np.isfinite(med[sel]).all():
        k = np.exp(np.mean(np.log(med[sel]) - theory * np.log(ms[sel])))
        ax.plot(ms, k * ms**theory, "--", color="#D55E00", label=f"theory slope {theory:.0f}")
    ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="loss plateau", title=exp.get("title"))
    integer_ticks(ax, ms)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
