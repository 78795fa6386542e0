"""3. Loss vs steps: ``MSE(t) ~ t^(-(2 beta - 1)/beta)`` at a fixed lr.

No runs of its own: it reads the sweeps of the experiments in ``runs_of`` (reused, never
recomputed from here).  With finite P the power law can hold only between the first and
the last emergences, so the loss is fitted from the 2nd to the next-to-last median
emergence, and two references are computed for each series: the additive model with each
seed's measured emergence steps, and the additive model with ``T_p = T_1 p^beta`` and the
measured log-normal scatter, at the simulated P and at P = 1024.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis import theory
from scaling_sgd.analysis.emergence import log_scatter, loss_fit_rule, loss_fit_window
from scaling_sgd.analysis.fit import bootstrap, window_slope
from sims import load
from sims.checks import check, few, finite_p, fmt_steps, scope, theory_value
from sims.load import Experiment, Run
from sims.output import Outcome, save_figure


def run(exp: Experiment, force: bool = False) -> Outcome:
    sources = exp.get("runs_of", ["02_emergence_vs_p"])
    sources = [sources] if isinstance(sources, str) else list(sources)
    runs, groups = [], []
    for name in sources:  # --force reruns them in their own experiment, not here
        rr = load.run_sweep(load.load_experiment(name, exp.mode), force=False)
        runs += rr
        groups += [g for r in rr for g in r.groups()]
    nb = int(exp.get("n_boot", 400))
    checks, rows = [], []
    for j, g in enumerate(groups):
        row = _fit_series(g, nb, seed=j)
        rows.append(row)
        b, P = row["beta"], row["P"]
        seeds = few(seeds=row["seeds"])
        checks.append(
            check(
                f"loss exponent, beta={b:g}, P={P}",
                row["theory"],
                row["est"],
                row["lo"],
                row["hi"],
                why="finite P: the power law needs many directions (see the additive-model row)",
                **scope(finite_p(P), seeds),
                note=(f"no theory value: {row['no_law']}; " if row["no_law"] else "")
                + f"{row['seeds']} seeds; fit window [{fmt_steps(row['wlo'])}, {fmt_steps(row['whi'])}] steps (2nd to "
                f"next-to-last median emergence, {row['whi'] / row['wlo']:.1f}x in t). The additive model with T_p = T_1 p^beta "
                f"exp(sigma xi) (sigma = {row['sigma']:.2f}, the measured seed scatter) gives {row['finite_P']:.2f} at P = {P} "
                f"over such a window and {row['P1024']:.2f} at P = 1024 (fitted from {loss_fit_rule(1024)})",
            )
        )
        checks.append(
            check(
                f"loss exponent, beta={b:g}, P={P}: additive model with the measured T_p",
                row["additive"],
                row["est"],
                row["lo"],
                row["hi"],
                why="seed noise of the emergence steps",
                note="sum_p a_p^2 1{t < T_p} with each seed's measured emergence steps, averaged and fitted like the loss. "
                "It tests that the simulated loss is the sum of its per-direction drops at the measured T_p (the paper's "
                "mechanism)"
                + (
                    f"; at P = {P} any beta gives about the same slope (the additive model with T_p = T_1 p^beta gives "
                    f"{row['finite_P']:.2f} here), so it does not test the exponent's dependence on beta"
                    if finite_p(P)
                    else ""
                ),
                **scope(finite_p(P, "the additive-model exponent"), seeds),
            )
        )
    figure = _figure(exp, groups, rows)
    return Outcome(checks, figure, _notes(rows), runs, {"runs_of": sources})


def _fit_series(g: Run, nb: int, seed: int) -> dict:
    b, step, T, a = g.common("beta"), g.step, g.times, g.metrics["a"]
    idx = np.flatnonzero(g.ok)

    def fit(ii, use_additive=False):
        sub = idx[ii]
        lo, hi = loss_fit_window(np.median(T[sub], axis=0), hi_rank=-2)
        curve = theory.additive_loss(step, T[sub], a[sub]) if use_additive else g.metrics["loss"][sub]
        return window_slope(step, np.mean(curve, axis=0), lo, hi)

    est, lo, hi = bootstrap(fit, idx.size, nb, seed=seed)
    med = np.median(T[idx], axis=0)
    wlo, whi = loss_fit_window(med, hi_rank=-2)
    sigma = log_scatter(T[idx])
    P = T.shape[-1]
    th, no_law = theory_value("loss_vs_step", b)
    return {
        "beta": b,
        "P": P,
        "seeds": idx.size,
        "theory": th,
        "no_law": no_law,
        "est": est,
        "lo": lo,
        "hi": hi,
        "additive": fit(np.arange(idx.size), use_additive=True),
        "wlo": wlo,
        "whi": whi,
        "sigma": sigma,
        "finite_P": theory.additive_loss_exponent(b, P, float(med[0]), sigma, hi_rank=-2),
        "P1024": theory.additive_loss_exponent(b, 1024, float(med[0]), sigma, n_seeds=50),
    }


def _notes(rows) -> list[str]:
    def lab(r):
        return f"beta={r['beta']:g}, P={r['P']}"

    missing = [lab(r) for r in rows if not math.isfinite(r["est"])]
    no_law = [lab(r) for r in rows if r["no_law"]]
    rows = [r for r in rows if math.isfinite(r["est"]) and not r["no_law"]]
    pre = []
    if missing:
        pre.append(
            f"No loss exponent for {', '.join(missing)}: fewer than three directions with a finite median emergence, "
            "or fewer than 4 log points in the window."
        )
    if no_law:
        pre.append(f"No theory exponent for {', '.join(no_law)}: {theory.NO_POWER_LAW}.")
    if not rows:
        return pre
    inside = sum(r["lo"] <= r["additive"] <= r["hi"] for r in rows)
    closer = sum(abs(r["finite_P"] - r["est"]) < abs(r["theory"] - r["est"]) for r in rows)
    asym = sum(abs(r["P1024"] - r["theory"]) <= 0.1 for r in rows)
    spans = [r["whi"] / r["wlo"] for r in rows if math.isfinite(r["whi"] / r["wlo"])]
    notes = [
        f"The additive model with each seed's measured emergence steps lies inside the interval of the simulated exponent "
        f"in {inside} of {len(rows)} series ("
        + ", ".join(f"{lab(r)}: {r['additive']:.2f} vs {r['est']:.2f}" for r in rows)
        + ").",
        f"The additive model with T_p = T_1 p^beta and the measured scatter, at the simulated P, is closer to the simulated "
        f"exponent than -(2beta-1)/beta is in {closer} of {len(rows)} series; at P = 1024 it lies within 0.1 of "
        f"-(2beta-1)/beta in {asym} of {len(rows)}"
        + (
            ": the distance from the asymptotic exponent is the finite number of directions."
            if closer == asym == len(rows)
            else "."
        ),
    ]
    if spans:
        notes.append(f"The fit windows span a factor {min(spans):.1f} to {max(spans):.1f} in t.")
    notes = pre + notes
    steep = [(r, r["P1024"] - r["finite_P"]) for r in rows]
    most = max(steep, key=lambda x: x[1])[0]
    notes.append(
        "The cut at the simulated P changes the additive-model exponent from its P = 1024 value by "
        + ", ".join(f"{-s:+.2f} ({lab(r)})" for r, s in steep)
        + (f"; the most at the smallest beta ({most['beta']:g})" if most["beta"] == min(r["beta"] for r in rows) else "")
        + "."
    )
    return notes


def _figure(exp, groups, rows):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    left = []
    for j, (g, r) in enumerate(zip(groups, rows)):
        step, idx, th = g.step, np.flatnonzero(g.ok), r["theory"]
        c = plt.get_cmap("plasma")(j / max(len(rows), 1))
        mean = np.mean(g.metrics["loss"][idx], axis=0)
        sel = step > 0
        lab = f"beta={r['beta']:g}, P={r['P']}"
        th_text = f"{th:.2f}" if math.isfinite(th) else "none (beta <= 1/2)"
        axes[0].plot(step[sel], mean[sel], color=c, label=f"{lab}: fit {r['est']:.2f}, theory {th_text}")
        additive = theory.additive_loss(step, g.times[idx], g.metrics["a"][idx]).mean(axis=0)
        axes[0].plot(step[sel], additive[sel], ":", color=c, lw=1)
        wlo, whi = r["wlo"], r["whi"]
        if math.isfinite(wlo) and math.isfinite(r["est"]) and math.isfinite(th):
            left.append(wlo / 10)
            w = (step >= wlo) & (step <= whi)
            k = np.exp(np.mean(np.log(mean[w]) - th * np.log(step[w])))
            axes[0].plot(step[w], 1.5 * k * step[w] ** th, "--", color=c, lw=1.5, alpha=0.7)
        if math.isfinite(th):  # no compensation without a theory exponent (beta <= 1/2)
            axes[1].plot(step[sel] / (wlo if math.isfinite(wlo) else 1.0), mean[sel] * (step[sel] ** -th), color=c, label=lab)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlim=(min(left) if left else None, None),
        xlabel="SGD step",
        ylabel="mean population MSE",
        title="solid: loss, dotted: additive model, dashed: theory slope",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlim=(0.1, None),
        xlabel="step / (2nd emergence)",
        ylabel="MSE x t^((2beta-1)/beta)",
        title="compensated: flat where the power law holds",
    )
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
