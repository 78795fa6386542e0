"""7. The three engines on one case: ``sgd`` (full dimension), ``reduced`` (the same SGD,
exact in law, at a cost independent of d) and ``flow`` (lr -> 0, against tau / lr).

Predictions: reduced = sgd in distribution (emergence-step ratio 1); flow = the small-lr
limit (ratio 1 up to O(lr d^(k/2)) corrections).  The ratio is paired by seed: when two
engines share the initial student of a seed, it isolates the dynamics.
"""

from __future__ import annotations

import math
import warnings

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis.emergence import log_quantiles
from scaling_sgd.analysis.fit import bootstrap
from sims import load
from sims.checks import check, few, scope
from sims.load import Experiment
from sims.output import Outcome, save_figure

REF = "sgd"


def run(exp: Experiment, force: bool = False) -> Outcome:
    runs = [r.single() for r in load.run_sweep(exp, force=force)]
    nb = int(exp.get("n_boot", 400))
    by = {r.settings["train.engine"]: r for r in runs}
    Ts = {e: np.where(r.ok[:, None], r.times, np.nan) for e, r in by.items()}  # diverged: nan
    checks, notes = [], []
    for e in ("reduced", "flow"):
        if e not in by or REF not in by:
            checks.append(
                check(f"median T_p ratio {e}/sgd", 1.0, math.nan, math.nan, math.nan, note="not run (not in the sweep)")
            )
            continue
        A, B = Ts[e], Ts[REF]
        R = min(A.shape[0], B.shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            lratio = np.log(A[:R] / B[:R])
        lratio = np.where(np.isfinite(lratio), lratio, np.nan)

        def stat(ii, x=lratio):  # geometric mean over p of the per-direction median ratio
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return float(np.exp(np.nanmean(np.nanmedian(x[ii], axis=0))))

        est, lo, hi = bootstrap(stat, R, nb)
        o_e, o_s = by[e].first("overlap"), by[REF].first("overlap")
        same = o_e is not None and o_s is not None and np.allclose(o_e[:R], o_s[:R], atol=1e-4)
        notes.append(f"{e} and sgd {'share' if same else 'do not share'} the initial student of each seed (overlap at step 0).")
        checks.append(
            check(
                f"median T_p ratio {e}/sgd",
                1.0,
                est,
                lo,
                hi,
                why="finite lr (flow) or engine mismatch",
                note=f"paired by seed; geometric mean over p of the per-direction median ratio; {R} seeds",
                **scope(few(seeds=R)),
            )
        )
    ndiv = {e: int((~r.ok).sum()) for e, r in by.items() if (~r.ok).any()}
    if ndiv:
        notes.append("Diverged replicas (excluded): " + ", ".join(f"{e}: {n}" for e, n in ndiv.items()) + ".")
    extra = {e: {"median_T": np.nanmedian(T, 0).tolist()} for e, T in Ts.items()}
    return Outcome(checks, _figure(exp, by, Ts), notes, runs, extra)


def _figure(exp, by, Ts):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    styles = {"sgd": ("C0", "-", "o"), "reduced": ("C1", "--", "s"), "flow": ("k", ":", "x")}
    first = np.inf
    for j, (e, r) in enumerate(by.items()):
        st, col, (c, ls, mk) = r.metrics["step"], r.ok, styles[e]
        sel = st > 0
        axes[0].plot(
            st[sel], np.median(r.metrics["loss"][col][:, sel], 0), color=c, ls=ls, lw=1.8, label=f"{e} (median over seeds)"
        )
        T = Ts[e]
        p = np.arange(1, T.shape[1] + 1) * (1 + 0.04 * (j - 1))
        Tc = np.where(np.isnan(T), np.inf, T)  # diverged replicas count as censored here
        q25, q50, q75 = (np.asarray(log_quantiles(Tc, q, axis=0), float) for q in (0.25, 0.5, 0.75))
        fin = np.isfinite(q50)
        if fin.any():
            with np.errstate(invalid="ignore"):
                lo, up = q50[fin] - q25[fin], np.where(np.isfinite(q75[fin]), q75[fin] - q50[fin], 0.0)
            axes[1].errorbar(p[fin], q50[fin], yerr=[lo, up], color=c, marker=mk, ls=ls, capsize=3, label=f"{e}: median, IQR")
        if np.isfinite(T).any():
            first = min(first, float(np.min(T[np.isfinite(T)])))
    axes[0].set(xscale="log", yscale="log", xlabel="SGD step (flow: tau / lr)", ylabel="population MSE", title=exp.get("title"))
    axes[1].set(xlabel="direction p", ylabel="emergence step T_p", title="emergence steps over seeds (agree in law)")
    if np.isfinite(first):
        axes[0].set_xlim(first / 10, None)
        axes[1].set(xscale="log", yscale="log")
    else:
        axes[1].text(0.5, 0.5, "no direction emerged within the steps", transform=axes[1].transAxes, ha="center")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, exp)
