"""The analysis of one run, as numbers: emergence times, fits beside theory, scores.

:func:`analyze_metrics` is the pure core (arrays in, a :class:`RunAnalysis` out), shared
by a run (:mod:`.report`) and every replica group of a sweep (:mod:`.aggregate`).  It
reads only the ``metrics.npz`` arrays (docs/model.md, "Results"); of those, ``overlap``,
``a``, ``beta`` and ``lr`` are optional (``a`` is then computed from the config).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from scaling_sgd import Result, load_run
from scaling_sgd._src.config import replica_grid
from scaling_sgd._src.model import teacher_coefficients

from . import theory
from .censored import censored_power_law, km_median_ci
from .emergence import (
    emergence_score,
    loss_fit_needs,
    loss_fit_rule,
    loss_fit_window,
    resample_log,
    run_emergence_times,
    sharpness,
    spread,
)
from .fit import PowerLawFit, fit_from_draws, fit_power_law

__all__ = [
    "RunAnalysis",
    "analyze_one",
    "partial_text",
    "analyze_metrics",
    "teacher_a",
    "replica_values",
    "replica_groups",
    "select_replicas",
]


# -- inputs --------------------------------------------------------------------------
def analyze_one(result, observable: str | None = None, threshold: float | None = None, n_boot: int = 1000, seed: int = 0):
    """Analyse one run as one group: a :class:`scaling_sgd.Result` (from ``run`` or
    ``load_run``) or a run directory.  Returns a :class:`RunAnalysis` (emergence times,
    fits beside theory, emergence scores, and ``plot_*`` figures).  Diverged replicas are
    excluded; an interrupted run is analysed and named ``partial``."""
    if not isinstance(result, Result):
        result = load_run(result)
    observable, threshold = result.criterion(observable, threshold)
    return analyze_metrics(result.metrics, result.config, observable, threshold, n_boot, seed, meta=result.meta)


def partial_text(cfg: dict, meta: dict | None, step) -> str | None:
    """``"partial: stopped at step N of M"`` for an interrupted run, else ``None``."""
    if not (meta or {}).get("partial"):
        return None
    last = meta.get("last_step", float(np.asarray(step)[-1]))
    return f"partial: stopped at step {int(last):,} of {int(cfg['train']['steps']):,}"


def _pooled_reason(beta, cfg) -> str | None:
    """Why the beta-dependent fits are not made over these replicas: several values of
    ``beta`` (each with its own theory exponents), unless the teacher's ``a_p`` are given."""
    if cfg["teacher"].get("a") is not None:
        return None
    vals = np.unique(np.asarray(beta, np.float64)[np.isfinite(beta)])
    if vals.size <= 1:
        return None
    return (
        f"the replicas have {vals.size} values of beta ({', '.join(f'{v:g}' for v in vals)}), whose theory "
        'exponents differ: not pooled; use analyze(result, by="beta")'
    )


def teacher_a(cfg: dict, metrics: dict, R: int) -> np.ndarray:
    """``(R, P)`` teacher coefficients: ``metrics['a']``, else those of the config's
    ``[teacher]`` table for each replica's ``beta``
    (:func:`scaling_sgd._src.model.teacher_coefficients`)."""
    if "a" in metrics:
        return np.asarray(metrics["a"], np.float64)
    beta = replica_values(cfg, metrics, "beta", R)
    if np.isnan(beta).any():  # the replica grid does not give one beta per replica
        beta = np.full(R, float(np.ravel(cfg["teacher"]["beta"])[0]))
    return teacher_coefficients(cfg["teacher"], beta)


def replica_values(cfg, metrics, name, R):
    """``(R,)`` float values of the replicated setting ``name`` (``beta``, ``lr``, ``seed``):
    from ``metrics`` or, where ``metrics`` lacks it, from the config's replica grid (``nan``
    when that grid does not have ``R`` values)."""
    if name in metrics:
        return np.asarray(metrics[name], np.float64).reshape(R)
    v = np.asarray(replica_grid(cfg)[name], np.float64)
    return v if v.size == R else np.full(R, np.nan)


def replica_groups(cfg, metrics) -> list[tuple[tuple[float, float], np.ndarray]]:
    """Split a run's replicas into groups of one physical setting.

    The traced settings ``beta`` and ``lr`` are replicas inside one run (a sweep folds
    their lists into every point); a group is the replicas that share both, so its
    replicas differ only in ``seed``.  Returns ``[((beta, lr), replica indices), ...]``
    sorted by ``beta`` then ``lr``.
    """
    R = np.asarray(metrics["loss"]).shape[0]
    keys = np.stack([replica_values(cfg, metrics, "beta", R), replica_values(cfg, metrics, "lr", R)], axis=1)
    return [((float(bl[0]), float(bl[1])), np.flatnonzero(np.all(keys == bl[None, :], axis=1))) for bl in np.unique(keys, axis=0)]


def select_replicas(metrics, idx) -> dict:
    """The ``metrics`` of the replicas ``idx`` only: every per-replica array (leading axis
    ``R``) is indexed, ``step`` and the other arrays are kept as they are."""
    R = np.asarray(metrics["loss"]).shape[0]
    return {k: (np.asarray(v)[idx] if k != "step" and np.ndim(v) >= 1 and np.shape(v)[0] == R else v) for k, v in metrics.items()}


def _single(v):
    """The common value of a per-replica array, or ``None`` if they differ."""
    v = np.asarray(v, np.float64)
    return float(v[0]) if v.size and np.allclose(v, v[0]) else None


@dataclasses.dataclass(frozen=True)
class RunAnalysis:
    """The analysis of one run (its non-diverged replicas).

    Attributes:
        step: ``(T,)`` log steps.  observable, threshold: the emergence criterion.
        y: ``(R, T, P)`` the observable.  loss: ``(R, T)``.  a: ``(R, P)`` teacher
            coefficients.  beta, lr: ``(R,)``.
        times: ``(R, P)`` emergence steps (``inf`` = censored).  censored: ``(R, P)``.
        spread: median and 10-90% log-quantiles over replicas (``(P,)`` each).
        sharpness: ``(R, P)`` decades of step from 0.1 to 0.9.
        predicted: ``(R, P)`` flow-theory emergence steps, or ``None``;
            predicted_source: how ``m0`` was obtained.
        fits: name -> :class:`.fit.PowerLawFit`; windows: name -> window and rule, with
            ``no_fit`` (the reason) for a fit that could not be made.
        theory: name -> theory exponent (``None`` where none is predicted).
        theory_reasons: name -> why its theory exponent is ``None`` (e.g. "no power law
            for beta <= 1/2").
        beta_value: the common beta, or ``None``.  k: information exponent.  K1: ``K(1)``.
        models: ``[(label, (T,) curve)]`` additive-model losses.
        scores: emergence scores (Schaeffer et al.).
        replicas: analysed replicas.  diverged: excluded replicas.
        plateau: mean final loss.
        partial: ``"partial: stopped at step N of M"`` for an interrupted run, else ``None``.
        group: the setting this analysis is one group of (``{"beta": 1.5}``), else ``{}``.
    """

    step: np.ndarray
    observable: str
    threshold: float
    y: np.ndarray
    loss: np.ndarray
    a: np.ndarray
    beta: np.ndarray
    lr: np.ndarray
    times: np.ndarray
    censored: np.ndarray
    spread: dict
    sharpness: np.ndarray
    predicted: np.ndarray | None
    predicted_source: str | None
    fits: dict[str, PowerLawFit]
    windows: dict
    theory: dict
    theory_reasons: dict
    beta_value: float | None
    k: int | None
    K1: float
    models: list
    scores: dict
    replicas: int
    diverged: int
    plateau: float
    partial: str | None = None
    group: dict = dataclasses.field(default_factory=dict)

    # -- figures (scaling_sgd.analysis.plots), each returned for a notebook to show --------
    def plot_staircase(self, replica: int = 0):
        """Per-direction observable and the loss vs step of one replica (non-diverged
        replicas are numbered as in this analysis), with the emergence steps and the
        flow-theory marks."""
        from . import plots

        pred = self.predicted[replica] if self.predicted is not None else None
        curves = {"step": self.step, self.observable: self.y, "loss": self.loss}
        return plots.staircase(curves, self.observable, replica, self.times[replica], predicted=pred, threshold=self.threshold)

    def plot_emergence(self):
        """Emergence step vs direction with the fit, its interval and theory."""
        from . import plots

        fit, th = self.fits.get("emergence_time_vs_p"), self.theory["emergence_time_vs_p"]
        return plots.emergence_vs_p(self.times, fit, th, self.predicted, budget=float(self.step[-1]))

    def plot_loss(self):
        """Loss vs step with the fit over its window, theory and the additive models."""
        from . import plots

        return plots.loss_vs_step(
            self.step,
            self.loss,
            self.fits.get("loss_vs_step"),
            self.theory["loss_vs_step"],
            self.models,
            theory_reason=self.theory_reasons.get("loss_vs_step", ""),
        )

    def plot_heatmap(self):
        """The observable as a heat map (direction x log step)."""
        from . import plots

        return plots.skill_heatmap(self.step, self.y, self.observable, self.spread["median"])


def analyze_metrics(
    metrics: dict,
    cfg: dict,
    observable: str = "skill",
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    meta: dict | None = None,
    group: dict | None = None,
) -> RunAnalysis:
    """Everything the report needs, from ``metrics.npz`` arrays and the resolved config
    (``meta``: the run's ``config.json`` fields, for ``partial``).

    Diverged replicas are excluded (and counted).  The beta-dependent fits are refused,
    with the reason, over replicas of several ``beta``.  Raises ``ValueError`` when every
    replica diverged.
    """
    step = np.asarray(metrics["step"], np.float64)
    R_all = np.asarray(metrics["loss"]).shape[0]
    diverged = np.asarray(metrics.get("diverged", np.zeros(R_all, bool)), bool).reshape(R_all)
    keep = ~diverged
    if not keep.any():
        raise ValueError("every replica diverged: nothing to analyse")
    sub = {k: np.asarray(v)[keep] for k, v in metrics.items() if k != "step" and np.ndim(v) >= 1 and np.shape(v)[0] == R_all}
    a = teacher_a(cfg, metrics, R_all)[keep]
    R, P = a.shape
    beta = replica_values(cfg, metrics, "beta", R_all)[keep]
    lr = replica_values(cfg, metrics, "lr", R_all)[keep]
    y = np.asarray(sub[observable], np.float64)
    loss = np.asarray(sub["loss"], np.float64)
    m_width = int(cfg["student"]["m"])
    coeffs = theory.kernel_coeffs(cfg["teacher"]["activation"], int(cfg["teacher"].get("activation_degree", 12)))
    K1 = float(np.sum(coeffs**2))
    k = next((j for j in range(1, coeffs.size) if coeffs[j] != 0.0), None)
    b = _single(beta) if cfg["teacher"].get("a") is None else None
    if b is not None:
        th, th_why = theory.exponents(b, k), theory.exponent_reasons(b, k)
    else:  # several betas, or the teacher's a_p given explicitly: only the beta-free laws
        why_b = (
            "no single beta: the teacher's a_p are given explicitly"
            if cfg["teacher"].get("a") is not None
            else "the replicas have several values of beta (analyse each group)"
        )
        th, th_why = theory.exponents(1.0, k), theory.exponent_reasons(1.0, k)
        for key in ("emergence_time_vs_p", "loss_vs_step", "plateau_vs_m", "compute_frontier"):
            th[key], th_why[key] = None, why_b

    times, censored = run_emergence_times({**sub, "step": step}, cfg, observable, threshold)
    spr = spread(times)
    width = sharpness(step, y)
    predicted, pred_source = None, None
    if "norm2" in sub:
        try:
            predicted, pred_source = theory.predicted_emergence_steps(
                {**sub, "lr": lr}, coeffs, a, threshold, observable, d=int(cfg["data"]["d"])
            )
        except ValueError:
            predicted = None

    p = np.arange(1, P + 1, dtype=np.float64)
    med = spr["median"]
    _, spr["median_lo"], spr["median_hi"] = km_median_ci(times, n_boot=min(n_boot, 400), seed=seed)
    learned = np.isfinite(med)
    fits, windows = {}, {}
    pooled = _pooled_reason(beta, cfg)
    # emergence time vs p (and vs a_p): censored regression over every direction with an
    # observed time; a direction no seed learned is left out, named, as a bound only
    rule = "censored regression (Tobit) of log T on log p over the directions with an observed time"
    a_med = np.median(a, axis=0)
    for name, x, lab in (("emergence_time_vs_p", p, "p"), ("emergence_time_vs_a", a_med, "a_p")):
        if pooled:
            windows[name] = {"rule": rule, "no_fit": pooled}
            continue
        f = censored_power_law(x, times, float(step[-1]), None, n_boot, seed=seed, label=lab, paired=True)
        windows[name] = {"rule": rule.replace("log p", f"log {lab}"), "excluded": list(f.excluded)}
        if f.no_fit:
            windows[name]["no_fit"] = f.no_fit
        else:
            fits[name] = f
            windows[name][lab] = list(f.window)
    # loss vs step: over the loss fit window (docs/model.md, "The loss fit window")
    additive = theory.additive_loss(step, times, a, K1).mean(axis=0)
    models = [("additive model, measured $T_p$", additive)]
    if predicted is not None:
        models.append(("additive model, flow-theory $T_p$", theory.additive_loss(step, predicted, a, K1).mean(axis=0)))
    lw = loss_fit_window(med)
    rule = (
        f"from {loss_fit_rule(P)}: after the untrained plateau and the first drop, before the "
        f"finite-P cut-off bends the sum of drops (and the width plateau at m = {m_width})"
    )
    if pooled:
        windows["loss_vs_step"] = {"step": None, "rule": rule, "no_fit": pooled}
    elif math.isfinite(lw[0]):
        fits["loss_vs_step"] = fit_power_law(step, loss, lw, "mean", n_boot, seed=seed)
        windows["loss_vs_step"] = {
            "step": list(lw),
            "rule": rule,
            "additive_model_slope_same_window": fit_from_draws(step, additive, None, lw).slope,
        }
    else:
        windows["loss_vs_step"] = {
            "step": None,
            "rule": rule,
            "no_fit": f"{int(learned.sum())} of {P} directions have a finite median emergence time; "
            f"the window needs {loss_fit_needs(P)}",
        }

    # emergence scores (Schaeffer et al.) on a grid of 10 points per decade over the emergence range
    fin = times[np.isfinite(times)]
    scores = {}
    if fin.size:
        lo = max(float(fin.min()) / 2.0, float(step[step > 0].min()))
        hi = min(float(fin.max()) * 2.0, float(step.max()))
        if hi > lo:
            grid = np.geomspace(lo, hi, max(int(10 * math.log10(hi / lo)) + 1, 4))
            yg = resample_log(step, y, grid, axis=-2)  # (R, G, P)
            lg = resample_log(step, loss, grid, axis=-1)  # (R, G)
            rec = (yg >= threshold).astype(np.float64)
            scores = {
                "grid": {"from": lo, "to": hi, "points": int(grid.size), "spacing": "10 per decade"},
                "continuous_mean_curve": emergence_score(yg.mean(axis=0), axis=0),
                "discrete_mean_curve": emergence_score(rec.mean(axis=0), axis=0),
                "continuous_median_replica": np.median(emergence_score(yg, axis=1), axis=0),
                "loss_mean_curve": float(emergence_score(lg.mean(axis=0), axis=0)),
                "loss_median_replica": float(np.median(emergence_score(lg, axis=1))),
            }

    return RunAnalysis(
        step=step,
        observable=observable,
        threshold=threshold,
        y=y,
        loss=loss,
        a=a,
        beta=beta,
        lr=lr,
        times=times,
        censored=censored,
        spread=spr,
        sharpness=width,
        predicted=predicted,
        predicted_source=pred_source,
        fits=fits,
        windows=windows,
        theory=th,
        theory_reasons=th_why,
        beta_value=b,
        k=k,
        K1=K1,
        models=models,
        scores=scores,
        replicas=int(R),
        diverged=int(diverged.sum()),
        plateau=float(np.mean(loss[:, -1])),
        partial=partial_text(cfg, meta, step),
        group=dict(group or {}),
    )
