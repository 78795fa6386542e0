"""Emergence times (docs/model.md §1): when each direction's observable first reaches a
threshold, and quantiles of such (possibly right-censored) times.

Part of the model's definitions, so that a :class:`~.api.Result` can report emergence
times by itself; :mod:`scaling_sgd.analysis.emergence` builds the spread, sharpness and
emergence scores on top of it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["criterion", "emergence_times", "run_emergence_times", "log_quantiles", "log_median"]

#: ``[analysis]`` defaults: emergence is ``skill`` reaching 0.5
DEFAULT_CRITERION = ("skill", 0.5)


def criterion(config: dict, observable: str | None = None, threshold: float | None = None) -> tuple[str, float]:
    """The emergence criterion ``(observable, threshold)``: the given one, else the config's
    ``[analysis]`` (else ``skill`` and 0.5)."""
    an = config.get("analysis", {})
    observable = observable or an.get("observable", DEFAULT_CRITERION[0])
    return observable, float(threshold if threshold is not None else an.get("threshold", DEFAULT_CRITERION[1]))


def emergence_times(step, y, threshold: float = 0.5):
    """First time each curve reaches ``threshold``, located between log points by linear
    interpolation in ``log(step)`` (docs/model.md §1).

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


def run_emergence_times(metrics: dict, config: dict, observable: str | None = None, threshold: float | None = None):
    """:func:`emergence_times` of a run's ``metrics``, with the emergence criterion of its
    resolved ``config`` (``[analysis]``) unless given.  When the run located the crossings
    between its solver steps (``crossing_step``, the ``flow`` engine with ``rkc``) for that
    same criterion, those are returned instead of the log-grid interpolation.

    Returns ``(times (R, P), censored (R, P))``.
    """
    observable, threshold = criterion(config, observable, threshold)
    if "crossing_step" in metrics and (observable, threshold) == criterion(config):
        t = np.asarray(metrics["crossing_step"], np.float64)
        return t, np.isinf(t)
    return emergence_times(metrics["step"], metrics[observable], threshold)


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
