"""1. Emergence staircase: each direction's skill jumps abruptly while the total loss, the
sum of P such jumps at different times, decreases smoothly.

Measured by the emergence score (Schaeffer et al.; a steady ramp over n log points scores
about n) on the log-step grid inside the learning window: the prediction is
``log10(skill score / loss score) > 0``, the whole bootstrap interval above 0.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from scaling_sgd.analysis.emergence import replica_window_scores
from scaling_sgd.analysis.fit import bootstrap
from sims import load
from sims.checks import check, few, scope
from sims.load import Experiment
from sims.output import Outcome, draw_skills, save_figure


def run(exp: Experiment, force: bool = False) -> Outcome:
    (r,) = [run.single() for run in load.run_sweep(exp, force=force)]
    T, ok = r.times, r.ok
    P = T.shape[-1]
    pad = float(exp.get("window_pad", 3.0))
    sk, sl = replica_window_scores(r.step, r.metrics["skill"][ok], r.metrics["loss"][ok], T[ok], pad)
    ratio = np.log10(sk / sl)
    est, lo, hi = bootstrap(lambda idx: np.median(ratio[idx]), ratio.size, int(exp.get("n_boot", 400)))
    checks = [
        check(
            "log10(skill score / loss score) > 0",
            0.0,
            est,
            lo,
            hi,
            note=f"median per-direction skill score {np.median(sk):.1f} vs loss score {np.median(sl):.1f} "
            f"(a steady ramp over n log points scores ~n); agreement = interval entirely above 0",
            above=True,
            **scope(few(seeds=int(np.isfinite(ratio).sum()))),
        )
    ]
    nlearn = [int(np.isfinite(T[i]).sum()) for i in np.flatnonzero(ok)]
    notes = [
        f"{int(ok.sum())}/{ok.size} replicas without divergence; directions learned per replica: {nlearn} of {P}.",
        f"The skill score exceeds the loss score in {int(np.sum(sk > sl))} of {sk.size} replicas "
        f"(scores on the log-step grid inside [first emergence / {pad:g}, last emergence x {pad:g}]).",
    ]
    figure = _figure(exp, r, T, ok, sk, sl)
    extra = {"skill_scores": sk.tolist(), "loss_scores": sl.tolist(), "emergence_steps": np.where(np.isfinite(T), T, -1).tolist()}
    return Outcome(checks, figure, notes, [r], extra)


def _figure(exp, r, T, ok, sk, sl):
    """The staircase of the first stable replica over the losses of all replicas."""
    m, step = r.metrics, r.step
    P = T.shape[-1]
    i0 = int(np.flatnonzero(ok)[0]) if ok.any() else 0
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    title = f"{exp.get('title')} - seed {int(m['seed'][i0])}; colour = p (1 dark ... {P} light)"
    draw_skills(a1, step, m["skill"][i0], title)
    a1.title.set_fontsize(9)
    a1.set_ylim(-0.05, 1.2)
    sel = step > 0
    for i in np.flatnonzero(ok):
        a2.plot(step[sel], m["loss"][i, sel], lw=0.8, alpha=0.5 if i != i0 else 1.0, color="k" if i == i0 else "gray")
    a2.set(yscale="log", xlabel="SGD step", ylabel="population MSE")
    a2.text(0.02, 0.08, f"median emergence score: skill {np.median(sk):.0f}, loss {np.median(sl):.0f}", transform=a2.transAxes)
    fin = T[ok][np.isfinite(T[ok])]
    if fin.size:
        a2.set_xlim(fin.min() / 30, step[-1] * 1.2)  # the plateau before learning carries no information
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, exp)
