"""Emergence times: first crossing of a threshold, interpolated in log(step)."""

from __future__ import annotations

import numpy as np

__all__ = ["emergence_times"]


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
