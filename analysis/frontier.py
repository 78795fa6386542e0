"""The compute frontier: the lower envelope over widths of loss vs compute.

With compute ``C = m x steps x batch`` a width-``m`` run traces a curve ``L_m(C)``; the
frontier ``min_m L_m(C)`` is what the best width achieves at each budget.  Its slope is
the compute-optimal exponent ``(1 - 2 beta)/(1 + beta)`` of the theory
(:func:`.theory.exponents`).  This is the one place the envelope is computed (sweep
analysis, experiments and the additive model all call it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["lower_envelope"]


def lower_envelope(curves, grid=None, n_grid: int = 200, hold_last: bool = False):
    """Interpolate curves onto a common compute grid and take their pointwise minimum.

    Args:
        curves: sequence of ``(C, L)`` pairs, ``C`` ``(N_w,)`` increasing positive compute
            and ``L`` ``(..., N_w)`` positive losses (leading axes, e.g. bootstrap draws,
            are kept).
        grid: ``(G,)`` compute points; default ``n_grid`` points log-spaced over all curves.
        hold_last: a curve keeps its last value beyond its last point (a run that ended
            on its floor); otherwise it is absent there.
    Returns:
        ``(grid (G,), values (W, ..., G), envelope (..., G))``: each curve interpolated
        linearly in ``log C``-``log L`` (``inf`` where it is absent), and the minimum over
        curves (``inf`` where every curve is absent).
    """
    curves = [(np.asarray(c, np.float64), np.asarray(y, np.float64)) for c, y in curves]
    if grid is None:
        lo = min(c.min() for c, _ in curves)
        hi = max(c.max() for c, _ in curves)
        grid = np.geomspace(lo, hi, n_grid)
    grid = np.asarray(grid, np.float64)
    lg = np.log(grid)
    values = []
    for c, y in curves:
        lc = np.log(c)
        with np.errstate(divide="ignore"):
            ly = np.log(y)
        flat = ly.reshape(-1, ly.shape[-1])
        v = np.stack([np.interp(lg, lc, row) for row in flat]).reshape(*ly.shape[:-1], lg.size)
        absent = (lg < lc[0]) | ((lg > lc[-1]) & (not hold_last))
        values.append(np.where(absent, np.inf, np.exp(v)))
    values = np.stack(values)
    return grid, values, values.min(axis=0)
