"""12. SGD at a finite lr against the flow, paired by seed.

The ``reduced`` engine (online SGD, exact in law) and the ``flow`` engine start from the same
``P + m`` coordinates for a seed, so each direction's emergence step can be compared seed by
seed: ``T_p(SGD, lr) / T_p(flow)`` for the directions both learned, with a bootstrap over
seeds of the median ratio.  The flow is the ``lr -> 0`` limit, so the ratio should tend to 1
as lr falls; the seed-mean loss curves are compared over the learning window.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis.fit import MIN_SEEDS, bootstrap
from sims import load
from sims.checks import check, fmt_steps
from sims.load import Experiment
from sims.output import Outcome, save_figure


def engine_groups(runs: list[load.Run]) -> tuple[dict, dict]:
    """``({lr: SGD group}, {lr: flow group})`` of the sweep's two points (SGD and flow)."""
    sgd = next(r for r in runs if r.cfg["train"]["engine"] != "flow")
    flow = next(r for r in runs if r.cfg["train"]["engine"] == "flow")
    return ({g.common("lr"): g for g in r.groups()} for r in (sgd, flow))


def paired(gs: load.Run, gf: load.Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeds that neither engine's replica diverged in ``(S,)``, the flow's emergence
    steps of those seeds ``(S, P)``, and ``T_p(SGD) / T_p(flow)`` ``(S, P)`` (nan where
    either engine did not learn the direction)."""
    seeds = np.intersect1d(gs.metrics["seed"][gs.ok], gf.metrics["seed"][gf.ok])
    Ts = gs.times[np.searchsorted(gs.metrics["seed"], seeds)]
    Tf = gf.times[np.searchsorted(gf.metrics["seed"], seeds)]
    both = np.isfinite(Ts) & np.isfinite(Tf)
    return seeds, Tf, np.where(both, Ts / np.where(both, Tf, 1.0), np.nan)


def run(exp: Experiment, force: bool = False) -> Outcome:
    runs = load.run_sweep(exp, force=force)
    nb, tol = int(exp.get("n_boot", 400)), float(exp.get("ratio_tol", 0.05))
    groups_s, groups_f = engine_groups(runs)
    checks, rows = [], []
    for lr in sorted(groups_s):
        gs, gf = groups_s[lr], groups_f[lr]
        seeds, Tf, ratio = paired(gs, gf)
        both = np.isfinite(ratio)

        def med(ii, ratio=ratio):
            return float(np.nanmedian(ratio[ii])) if np.isfinite(ratio[ii]).any() else math.nan

        est, lo, hi = bootstrap(med, seeds.size, nb)
        enough = seeds.size >= MIN_SEEDS
        n_div = int(np.sum(gs.metrics["diverged"]))
        div_step = gs.metrics["diverged_step"][gs.metrics["diverged"]]
        checks.append(
            check(
                f"median T_p(SGD) / T_p(flow), lr={lr:g}, P={gs.metrics['a'].shape[1]}",
                1.0,
                est,
                lo,
                hi,
                tol=tol,
                why="finite-lr correction (compare the two lr)",
                discriminates=enough,
                scope="" if enough else f"{seeds.size} seeds < {MIN_SEEDS}" + (f" ({n_div} diverged)" if n_div else ""),
                note=f"{int(both.sum())} (seed, direction) pairs learned by both engines of {both.size}; "
                f"tolerance {tol} (the precision at which the flow is taken to stand for SGD)",
            )
        )
        if seeds.size:
            Ls = np.mean(gs.metrics["loss"][np.searchsorted(gs.metrics["seed"], seeds)], axis=0)
            Lf = np.mean(gf.metrics["loss"][np.searchsorted(gf.metrics["seed"], seeds)], axis=0)
        else:  # every SGD seed diverged: no pair to average
            Ls = Lf = np.full(gs.step.shape, np.nan)
        fin = Tf[np.isfinite(Tf)]
        win = (gs.step >= fin.min()) & (gs.step <= fin.max()) if fin.size else np.zeros(gs.step.shape, bool)
        # the median gap over the window: at a drop a shift of a few % in time is a large gap
        dev = float(np.median(np.abs(Ls[win] / Lf[win] - 1))) if win.any() else math.nan
        rows.append(
            {
                "lr": lr,
                "n_div": n_div,
                "n": int(gs.ok.size),
                "div_step": div_step,
                "est": est,
                "lo": lo,
                "hi": hi,
                "dev": dev,
                "Ls": Ls,
                "Lf": Lf,
                "step": gs.step,
                "ratio": ratio,
            }
        )
    judged = [w for w in rows if math.isfinite(w["est"])]
    notes = [
        ", ".join(f"lr = {w['lr']:g}: median ratio {w['est']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}]" for w in judged)
        + (
            f"; halving lr moves the ratio {'toward' if abs(judged[0]['est'] - 1) < abs(judged[-1]['est'] - 1) else 'away from'} 1."
            if len(judged) > 1
            else " (one lr only: no trend with lr can be read)."
        )
        if judged
        else "No lr has a finite median ratio.",
        "Median relative gap between the seed-mean loss curves of SGD and the flow over the learning window "
        "(log points from the first to the last emergence of the flow): "
        + ", ".join(f"lr = {w['lr']:g}: {w['dev']:.1%}" for w in judged)
        + ".",
    ]
    for w in rows:
        if w["n_div"]:
            notes.append(
                f"lr = {w['lr']:g}: {w['n_div']} of {w['n']} SGD seeds diverged (frozen and flagged, left out of every "
                f"fit), at steps {fmt_steps(float(np.min(w['div_step'])))} to {fmt_steps(float(np.max(w['div_step'])))}: "
                "this lr is above the stable step size at this d, P and m."
            )
    return Outcome(checks, _figure(exp, rows), notes, runs, {"ratio": {str(w["lr"]): [w["est"], w["lo"], w["hi"]] for w in rows}})


def _figure(exp, rows):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for j, w in enumerate(rows):
        c = plt.get_cmap("viridis")(0.85 * j / max(len(rows) - 1, 1))  # not the pale yellow end
        pos = w["step"] > 0
        gone = " (every seed diverged)" if w["n_div"] == w["n"] else ""
        a1.plot(w["step"][pos], w["Ls"][pos], color=c, lw=1.4, label=f"SGD (reduced), lr={w['lr']:g}{gone}")
        if np.isfinite(w["Lf"]).any():  # the flow's curve is shown over the seeds SGD kept
            a1.plot(w["step"][pos], w["Lf"][pos], "--", color=c, lw=1, label=f"flow at the same lr, lr={w['lr']:g}")
        r = w["ratio"]
        p = np.arange(1, r.shape[1] + 1)
        med = [np.median(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan for col in r.T]
        if np.isfinite(med).any():
            a2.plot(p, med, "o-", color=c, ms=3, label=f"lr={w['lr']:g}: median over seeds{gone}")
    a2.axhline(1.0, color="#D55E00", lw=1, ls="--", label="flow limit")
    a1.set(xscale="log", yscale="log", xlabel="SGD step", ylabel="seed-mean population MSE", title="loss: SGD vs flow")
    a2.set(xlabel="direction p", ylabel="T_p(SGD) / T_p(flow)", title="emergence steps, paired by seed")
    for ax in (a1, a2):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
