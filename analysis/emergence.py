"""Emergence times, their spread over seeds, sharpness, and the emergence score.

All functions are pure NumPy on the arrays of ``metrics.npz`` (SPEC section 4), so they
work on the output of any engine.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "emergence_times",
    "log_median",
    "log_quantiles",
    "spread",
    "sharpness",
    "emergence_score",
    "resample_log",
]


def emergence_times(step, y, threshold: float = 0.5):
    """First time each curve reaches ``threshold``, located between log points by linear
    interpolation in ``log(step)`` (SPEC section 1).

    Args:
        step: ``(T,)`` increasing log steps (``0`` allowed first).
        y: ``(..., T, P)`` observable (``skill`` or ``alignment``).
        threshold: crossing level.
    Returns:
        ``times`` ``(..., P)`` float (``inf`` when never reached: right-censored) and
        ``censored`` ``(..., P)`` bool.
    """
    step = np.asarray(step, np.float64)
    y = np.asarray(y, np.float64)
    yt = np.moveaxis(y, -2, -1)  # (..., P, T)
    above = yt >= threshold
    hit = above.any(axis=-1)
    k = np.argmax(above, axis=-1)  # first index at/above threshold
    km1 = np.maximum(k - 1, 0)
    y1 = np.take_along_axis(yt, k[..., None], -1)[..., 0]
    y0 = np.take_along_axis(yt, km1[..., None], -1)[..., 0]
    s1 = step[k]
    s0 = step[km1]
    # log-interpolation needs s0 > 0; a crossing in the first interval (from step 0) is
    # reported at the first positive log point.
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip((threshold - y0) / (y1 - y0), 0.0, 1.0)
        ls = np.log(np.where(s0 > 0, s0, 1.0)) + frac * (np.log(np.maximum(s1, 1.0)) - np.log(np.where(s0 > 0, s0, 1.0)))
    t = np.where((k == 0) | (s0 <= 0), s1, np.exp(ls))
    t = np.where(hit, t, np.inf)
    return t, ~hit


_BIG = 1e300  # stands for log(inf) inside quantile interpolation (inf * 0 would be nan)


def log_quantiles(t, q, axis=0):
    """Quantiles of positive, possibly right-censored (``inf``) times, interpolated in
    ``log t``.  A quantile that falls among censored values is ``inf``.

    Args:
        t: array with ``inf`` for censored entries.  q: scalar or sequence in ``[0, 1]``.
    Returns:
        ``np.quantile``'s shape, ``q`` axis first.
    """
    with np.errstate(divide="ignore"):
        lt = np.log(np.asarray(t, np.float64))
    lt = np.where(np.isposinf(lt), _BIG, lt)
    out = np.quantile(lt, q, axis=axis)
    with np.errstate(over="ignore"):
        return np.where(out > _BIG / 2, np.inf, np.exp(out))


def log_median(t, axis=0):
    """Median in ``log t`` (geometric mean of the two middle values for an even count);
    ``inf`` when at least half of the values are censored."""
    return log_quantiles(t, 0.5, axis=axis)


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
