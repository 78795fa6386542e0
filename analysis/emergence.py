"""Emergence times, their spread over seeds, sharpness, and the emergence score.

All functions are pure NumPy on the arrays of ``metrics.npz`` (docs/model.md §4), so they
work on the output of any engine.  The emergence time itself (and log-quantiles of
censored times) is defined with the model, in ``scaling_sgd._src.emergence``.
"""

from __future__ import annotations

import numpy as np

from scaling_sgd._src.emergence import emergence_times, log_median, log_quantiles, run_emergence_times

__all__ = [
    "emergence_times",
    "run_emergence_times",
    "log_median",
    "log_quantiles",
    "spread",
    "sharpness",
    "emergence_score",
    "resample_log",
    "loss_fit_ranks",
    "loss_fit_needs",
    "loss_fit_window",
    "loss_fit_rule",
    "window_scores",
    "replica_window_scores",
    "log_scatter",
]


def spread(times, quantiles=(0.1, 0.9)):
    """Median and quantiles over replicas (axis 0) of emergence times ``(R, P)``.

    Returns a dict of ``(P,)`` arrays: ``median``, ``q_lo``, ``q_hi``, ``n_censored``,
    and ``quantiles`` (the levels used).
    """
    times = np.asarray(times, np.float64)
    qs = log_quantiles(times, list(quantiles), axis=0)
    return {
        "median": log_median(times, axis=0),
        "q_lo": qs[0],
        "q_hi": qs[-1],
        "n_censored": np.sum(~np.isfinite(times), axis=0),
        "quantiles": tuple(float(v) for v in quantiles),
    }


def sharpness(step, y, lo: float = 0.1, hi: float = 0.9):
    """Width of the transition in decades: ``log10(t_hi / t_lo)`` with ``t_x`` the first
    crossing of level ``x`` (log-interpolated).  ``inf`` if ``hi`` is never reached.

    Args: ``step`` ``(T,)``, ``y`` ``(..., T, P)``.  Returns ``(..., P)``.
    """
    t_lo, _ = emergence_times(step, y, lo)
    t_hi, _ = emergence_times(step, y, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.log10(t_hi) - np.log10(np.maximum(t_lo, 1.0))
    return np.where(np.isfinite(t_hi), w, np.inf)


def emergence_score(y, axis: int = -1):
    """Emergence score of Schaeffer, Miranda & Koyejo (2023, "Are emergent abilities of
    large language models a mirage?"), eq. (1), along ``axis`` (ordered by the scale
    variable, here ``log step``)::

        sign(argmax_i y_i - argmin_i y_i) (max_i y_i - min_i y_i) / sqrt(median_i (y_i - y_{i-1})^2)

    Large ``|score|``: the change happens in few of the steps (a jump); a curve that
    changes by comparable amounts at every step scores about ``sqrt(n)``-ish or less.
    Positive for rising curves (skill), negative for falling ones (loss).  ``inf`` when
    the typical increment is exactly zero (a pure step, e.g. a yes/no metric of one seed).
    """
    y = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    sign = np.sign(np.argmax(y, axis=-1) - np.argmin(y, axis=-1))
    rng = np.max(y, axis=-1) - np.min(y, axis=-1)
    med = np.sqrt(np.median(np.diff(y, axis=-1) ** 2, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = sign * rng / med
    return np.where(rng == 0, 0.0, s)


def resample_log(step, y, grid, axis: int = -1):
    """Values of ``y`` on the positive steps ``grid``, linear in ``log step``.

    Args:
        step: ``(T,)`` log steps.  y: array with the time axis ``axis`` of length ``T``.
        grid: ``(G,)`` positive steps inside ``[min positive step, max step]``.
    Returns:
        ``y`` with the time axis replaced by ``G`` grid values.
    """
    step = np.asarray(step, np.float64)
    pos = step > 0
    yy = np.moveaxis(np.asarray(y, np.float64), axis, -1)[..., pos]
    ls, lg = np.log(step[pos]), np.log(np.asarray(grid, np.float64))
    flat = yy.reshape(-1, yy.shape[-1])
    out = np.stack([np.interp(lg, ls, row) for row in flat]).reshape(*yy.shape[:-1], lg.size)
    return np.moveaxis(out, -1, axis)


def loss_fit_ranks(P: int, lo_rank: int = 2, hi_rank: int | None = None) -> tuple[int, int]:
    """The ranks (1-based, among the finite median emergence steps in increasing order)
    between which the loss power law is fitted, for ``P`` directions.

    By default from the 2nd to the ``max(P // 10, lo_rank + 2)``-th (docs/model.md, "The
    loss fit window").  A negative ``hi_rank`` counts from the largest finite median
    (``-1`` the largest, ``-2`` the next-to-last).
    """
    if lo_rank < 1:
        raise ValueError(f"lo_rank must be >= 1, got {lo_rank}")
    if hi_rank is None:
        hi_rank = max(P // 10, lo_rank + 2)
    if hi_rank == 0:
        raise ValueError("hi_rank must be nonzero (1-based, or negative from the largest)")
    return lo_rank, hi_rank


def loss_fit_needs(P: int, lo_rank: int = 2, hi_rank: int | None = None) -> int:
    """How many directions need a finite median emergence step for :func:`loss_fit_window`
    to give a window."""
    lo, hi = loss_fit_ranks(P, lo_rank, hi_rank)
    return max(hi, lo) if hi > 0 else lo - 1 - hi


def loss_fit_window(median_times, lo_rank: int = 2, hi_rank: int | None = None) -> tuple[float, float]:
    """The steps between which the loss power law is fitted: the ``lo_rank``-th and the
    ``hi_rank``-th smallest finite median emergence step (:func:`loss_fit_ranks`; by
    default the 2nd and the ``max(P // 10, 4)``-th).

    Before the 2nd emergence the loss is the untrained plateau and at most one drop; past
    about the ``P/10``-th the finite number of directions bends the sum of drops below the
    power law (docs/model.md, "The loss fit window").

    Args:
        median_times: ``(P,)`` median emergence steps over seeds (``inf``: censored).
    Returns:
        ``(lo, hi)``, or ``(nan, nan)`` when fewer than :func:`loss_fit_needs` directions
        have a finite median: too few directions learned for a power law, so no fit.
    """
    t = np.asarray(median_times, np.float64)
    P = t.shape[-1]
    lo, hi = loss_fit_ranks(P, lo_rank, hi_rank)
    fin = np.sort(t[np.isfinite(t)])
    if fin.size < loss_fit_needs(P, lo_rank, hi_rank):
        return float("nan"), float("nan")
    return float(fin[lo - 1]), float(fin[hi - 1] if hi > 0 else fin[hi])


def loss_fit_rule(P: int, lo_rank: int = 2, hi_rank: int | None = None) -> str:
    """The window of :func:`loss_fit_window` in words, e.g. ``"the 2nd to the 25th median emergence"``."""
    lo, hi = loss_fit_ranks(P, lo_rank, hi_rank)
    end = {-1: "last", -2: "next-to-last"}.get(hi, f"{-hi}th from last") if hi < 0 else _ordinal(hi)
    return f"the {_ordinal(lo)} to the {end} median emergence"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def window_scores(step, skill, loss, T, pad: float):
    """Emergence scores (:func:`emergence_score`) of one replica on its log-step grid
    inside the learning window ``[min T / pad, max T * pad]`` (the plateau before any
    learning would make any curve look abrupt).

    Args: ``step`` ``(T,)``, ``skill`` ``(T, P)``, ``loss`` ``(T,)``, ``T`` ``(P,)`` the
    replica's emergence steps.  Returns ``(per-direction skill scores (P,), loss score)``;
    the loss is scored as the gain ``-loss``, so that both are positive for learning.
    ``nan`` without a window (fewer than 3 log points in it).
    """
    fin = T[np.isfinite(T)]
    sel = (step >= fin.min() / pad) & (step <= fin.max() * pad) if fin.size else np.zeros(step.shape, bool)
    if sel.sum() < 3:
        return np.full(skill.shape[-1], np.nan), float("nan")
    return emergence_score(skill[sel], axis=0), float(emergence_score(-loss[sel]))


def replica_window_scores(step, skill, loss, T, pad: float):
    """Per replica: the median skill score over its learned directions and its loss score
    (:func:`window_scores`).

    Args: ``step`` ``(T,)``, ``skill`` ``(R, T, P)``, ``loss`` ``(R, T)``, ``T`` ``(R, P)``.
    Returns ``(skill (R,), loss (R,))``; ``nan`` skill score for a replica that learned
    no direction.
    """
    sk, sl = [], []
    for i in range(np.shape(T)[0]):
        s_skill, s_loss = window_scores(step, skill[i], loss[i], T[i], pad)
        learned = np.isfinite(T[i])
        sk.append(np.nanmedian(s_skill[learned]) if learned.any() else np.nan)
        sl.append(s_loss)
    return np.array(sk, np.float64), np.array(sl, np.float64)


def log_scatter(times) -> float:
    """Seed-to-seed scatter of emergence times ``(R, P)``: the standard deviation of
    ``log T_p`` around each direction's median over replicas, pooled over directions.

    Only finite (uncensored) times count; a direction that no replica learned is ignored.
    This is the ``sigma`` of the log-normal scatter in the additive model
    (:func:`.theory.additive_emergence_times`).
    """
    import warnings

    t = np.asarray(times, np.float64)
    lt = np.log(np.where(np.isfinite(t) & (t > 0), t, np.nan))
    with warnings.catch_warnings():  # a direction no replica learned has no median
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanstd(lt - np.nanmedian(lt, axis=0, keepdims=True)))
