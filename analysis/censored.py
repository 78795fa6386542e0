"""Statistics of right-censored emergence times: the Kaplan-Meier median with a seed
bootstrap, and the censored (Tobit) regression of ``log T`` on ``log x``.

An emergence time is observed when the observable crosses the threshold before the run
ends; a replica that never crossed is right-censored at the run's last log step ``c``
(``T > c``).  The crossing is located between log points by interpolation in
``log step`` (:func:`scaling_sgd._src.emergence.emergence_times`), which places it inside
its log interval far more finely than the seed-to-seed scatter; it is taken as exact.

**Per point**: the Kaplan-Meier estimate of the survival ``S(t) = P(T > t)`` from
``(t_r, observed_r)``; its median is the first ``t`` with ``S(t) <= 1/2`` (the
geometric mean of the two event times around a flat ``S = 1/2``, as ``np.median``).
When ``S`` stays above 1/2 up to the last censoring time the median is censored: only
``median > c`` is known, and the estimate is ``inf``.  With every censoring at one time
``c`` later than every event (one run), this is the median of the times with the
censored ones put at ``+inf`` (:func:`scaling_sgd._src.emergence.log_median`).

**Across points**: the model ``log T = X b + sigma z`` with ``z ~ N(0, 1)``, one row of
``X`` per replica and point.  Its likelihood is ``phi(z) / sigma`` for an observed time
and ``Phi(-(log c - X b) / sigma)`` for a censored one.  In Olsen's parameters
``g = b / sigma``, ``h = 1 / sigma`` the log-likelihood is concave; it is maximised by
Newton's method, for every bootstrap draw at once (a draw is a weighting of the
replicas).  Without censoring it is least squares on every replica's ``log T``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import log_ndtr

from scaling_sgd._src.emergence import log_median

from .fit import PowerLawFit

__all__ = ["km_median", "km_median_ci", "tobit", "censored_power_law", "censored_reason"]


def km_median(t, censor_at=None) -> float:
    """Kaplan-Meier median of positive times ``t`` ``(R,)`` (``inf``: censored).

    Args:
        t: ``(R,)`` times; ``inf`` or ``nan`` for a censored replica.
        censor_at: ``(R,)`` or scalar: where each censored replica was last seen (the
            run's last step); ``None``: later than every observed time.
    Returns:
        The median, ``inf`` when ``S(t) > 1/2`` up to the last censoring (a censored
        median); ``nan`` for no replica.
    """
    t = np.asarray(t, np.float64).ravel()
    obs = np.isfinite(t)
    if t.size == 0:
        return math.nan
    c = np.full(t.shape, np.inf) if censor_at is None else np.broadcast_to(np.asarray(censor_at, np.float64), t.shape)
    last_event = t[obs].max() if obs.any() else -np.inf
    if np.all(c[~obs] >= last_event):  # censoring after every event: the empirical median
        return float(log_median(t))
    # general Kaplan-Meier: events and censorings in time order (an event before a
    # censoring at the same time)
    u = np.where(obs, t, c)
    order = np.lexsort((~obs, u))
    u, ev = u[order], obs[order]
    S, at_risk = 1.0, t.size
    times, surv = [], []
    for ui, ei in zip(u, ev):
        if ei:
            S *= 1.0 - 1.0 / at_risk
            times.append(ui)
            surv.append(S)
        at_risk -= 1
    for i, s in enumerate(surv):
        if s < 0.5 - 1e-12:
            return float(times[i])
        if abs(s - 0.5) <= 1e-12:  # a flat S = 1/2: the geometric mean with the next event
            return float(math.sqrt(times[i] * times[i + 1])) if i + 1 < len(times) else math.inf
    return math.inf


def km_median_ci(t, n_boot: int = 400, level: float = 0.95, seed: int = 0):
    """The Kaplan-Meier median of each column of ``t`` ``(R, N)`` (one run: censored at
    its end, ``inf``) with a percentile interval from a bootstrap over the ``R`` seeds.

    Returns ``(median (N,), lo (N,), hi (N,))``; a bound the draws cannot place (more
    than the interval's tail of the draws censored) is ``inf``; ``nan`` for ``R < 2``.
    """
    t = np.asarray(t, np.float64)
    t = np.where(np.isnan(t), np.inf, t)
    med = log_median(t, axis=0)
    R = t.shape[0]
    if R < 2 or n_boot <= 0:
        nan = np.full(t.shape[1:], np.nan)
        return med, nan, nan
    idx = np.random.default_rng(seed).integers(0, R, size=(n_boot, R))
    draws = log_median(t[idx], axis=1)  # (B, N)
    with np.errstate(divide="ignore"):
        ld = np.where(np.isfinite(draws), np.log(draws), np.inf)
    a = (1.0 - level) / 2.0
    lo, hi = (np.quantile(ld, q, axis=0, method="inverted_cdf") for q in (a, 1.0 - a))
    with np.errstate(over="ignore"):
        return med, np.exp(lo), np.exp(hi)


def censored_reason(label: str, t, censor_at) -> str:
    """``"d = 24: 3 of 4 seeds censored at step 60,000"`` for the times ``t`` ``(R,)``."""
    t = np.asarray(t, np.float64)
    n_c = int((~np.isfinite(t)).sum())
    c = np.max(np.asarray(censor_at, np.float64))
    return f"{label}: {n_c} of {t.size} seeds censored at step {c:,.0f}"


def _loglik(g, h, X, y, cens, lc):
    """Per-observation log-likelihood ``(B, n)`` in Olsen's parameters, its gradient
    ``(B, n, k+1)`` and the second-derivative factors."""
    xg = np.einsum("nk,bk->bn", X, g)
    r = h[:, None] * y[None, :] - xg  # exact: z
    u = xg - h[:, None] * lc[None, :]  # censored: Phi(u) = P(T > c)
    lphi = log_ndtr(u)
    lam = np.exp(-0.5 * u * u - 0.5 * math.log(2 * math.pi) - lphi)  # phi(u) / Phi(u)
    with np.errstate(divide="ignore"):
        ll = np.where(cens[None, :], lphi, np.log(h)[:, None] - 0.5 * r * r)
    return ll, r, u, lam


def tobit(X, y, cens, lc, weights=None, iters: int = 60):
    """Maximum likelihood of ``log T = X b + sigma z`` with right censoring.

    Args:
        X: ``(n, k)`` design.  y: ``(n,)`` observed ``log T`` (ignored where censored).
        cens: ``(n,)`` bool, censored.  lc: ``(n,)`` ``log c`` where censored.
        weights: ``(B, n)`` non-negative observation weights (bootstrap draws), or
            ``None`` for one fit with unit weights.
    Returns:
        ``(b (B, k), sigma (B,))`` (``B = 1`` without ``weights``); ``nan`` where the
        draw has no two observed rows to place the line.
    """
    X = np.asarray(X, np.float64)
    n, k = X.shape
    cens = np.asarray(cens, bool)
    y = np.where(cens, 0.0, np.asarray(y, np.float64))
    lc = np.where(cens, np.asarray(lc, np.float64), 0.0)
    w = np.ones((1, n)) if weights is None else np.asarray(weights, np.float64)
    B = w.shape[0]
    # start: least squares with the censored times put at their censoring time
    yc = np.where(cens, lc, y)
    W = w[:, :, None] * X[None]
    A = np.einsum("bnk,nj->bkj", W, X) + 1e-12 * np.eye(k)
    b0 = np.linalg.solve(A, np.einsum("bnk,n->bk", W, yc)[..., None])[..., 0]
    res = yc[None] - b0 @ X.T
    s0 = np.sqrt(np.maximum((w * res * res).sum(1) / np.maximum(w.sum(1), 1.0), 1e-4))
    if not cens.any():  # no censoring: least squares is the maximum
        return b0, s0
    h = 1.0 / s0
    g = b0 * h[:, None]

    def total(g, h):
        return (w * _loglik(g, h, X, y, cens, lc)[0]).sum(1)

    cur = total(g, h)
    for _ in range(iters):
        _, r, u, lam = _loglik(g, h, X, y, cens, lc)
        # gradient and Hessian in theta = (g, h)
        ex = ~cens[None, :]
        dg = np.where(ex, r, lam)  # d/dg = dg * x
        dh = np.where(ex, 1.0 / h[:, None] - r * y[None], -lam * lc[None])
        grad = np.concatenate([np.einsum("bn,nk->bk", w * dg, X), (w * dh).sum(1, keepdims=True)], axis=1)
        curv = lam * (u + lam)  # censored: -d2/du2 log Phi(u)
        zc = np.concatenate([np.broadcast_to(X, (B, n, k)), -lc[None, :, None] * np.ones((B, 1, 1))], axis=2)
        H_c = np.einsum("bn,bni,bnj->bij", w * np.where(ex, 0.0, curv), zc, zc)
        ze = np.concatenate([np.broadcast_to(X, (B, n, k)), -y[None, :, None] * np.ones((B, 1, 1))], axis=2)
        H_e = np.einsum("bn,bni,bnj->bij", w * ex, ze, ze)
        H_e[:, k, k] += (w * ex).sum(1) / h**2
        H = H_c + H_e + 1e-10 * np.eye(k + 1)  # minus the Hessian: positive definite
        step = np.linalg.solve(H, grad[..., None])[..., 0]
        t = np.ones(B)
        for _ in range(30):  # halve the step until the likelihood rises (and h > 0)
            gn, hn = g + t[:, None] * step[:, :k], h + t * step[:, k]
            ok = hn > 0
            new = np.where(ok, total(gn, np.where(ok, hn, 1.0)), -np.inf)
            good = new >= cur - 1e-12
            if good.all():
                break
            t = np.where(good, t, t / 2)
        g, h, cur = np.where(good[:, None], gn, g), np.where(good, hn, h), np.where(good, new, cur)
        if np.max(np.abs(step) * t[:, None]) < 1e-10:
            break
    return g / h[:, None], 1.0 / h


def censored_power_law(
    x,
    times,
    censor_at,
    window=None,
    n_boot: int = 400,
    level: float = 0.95,
    seed: int = 0,
    label: str = "x",
    paired: bool = True,
    intercepts=None,
    blocks=None,
    names=None,
) -> PowerLawFit:
    """Fit ``T ~ C x^s`` to right-censored times by the censored regression of ``log T``
    on ``log x`` (the module's Tobit model), with a percentile interval from a bootstrap
    over seeds.

    Args:
        x: ``(N,)`` positive abscissae of the points.
        times: ``(R, N)`` emergence times (``inf``: censored), replica ``r`` of every
            point in row ``r`` (``nan``: no replica there).
        censor_at: scalar or ``(N,)``: the last step of each point's run.
        window: ``(lo, hi)`` in units of ``x``, or ``None``.
        paired: the replicas of one row are one seed (directions of one run: resampled
            together); ``False``: every point resamples its own seeds (points of a sweep).
        intercepts: ``(N,)`` labels; points with different labels get their own
            intercept (one slope: e.g. the directions of a d sweep), ``None``: one.
        blocks: ``(N,)`` labels of the runs: the points of one block resample their
            seeds together (overrides ``paired``).
        label: the name of ``x`` in the reasons (``"p"``, ``"d"``); names: ``(N,)``
            the points' names in the reasons (default ``"{label} = {x}"``).
    Returns:
        A :class:`PowerLawFit` whose ``excluded`` names every point left out and why
        (outside the window; every seed censored, a bound only); ``no_fit`` says why
        there is no slope (fewer than two points with an observed time).
    """
    x = np.asarray(x, np.float64)
    t = np.asarray(times, np.float64)
    R, N = t.shape
    c = np.broadcast_to(np.asarray(censor_at, np.float64), (N,))
    lo, hi = (-np.inf, np.inf) if window is None else (float(window[0]), float(window[1]))
    present = ~np.isnan(t)
    obs = np.isfinite(t)
    excluded, use = [], np.zeros(N, bool)
    for j in range(N):
        name = f"{label} = {x[j]:g}" if names is None else names[j]
        if not (lo <= x[j] <= hi) or x[j] <= 0:
            excluded.append(f"{name}: outside the fit window")
        elif not obs[:, j].any():
            excluded.append(censored_reason(name, t[present[:, j], j], c[j]) + " (every seed: a bound only)")
        else:
            use[j] = True
    method = f"censored regression (Tobit) of log T on log {label}, bootstrap over seeds"
    cols = np.flatnonzero(use)
    groups = None if intercepts is None else np.asarray(intercepts)[cols]
    n_int = 1 if groups is None else len(set(groups.tolist()))
    if np.unique(x[cols]).size < 2 or cols.size < n_int + 1:
        why = f"{cols.size} of {N} points have an observed time; a slope needs 2"
        return _no_fit(window, level, method, R, tuple(excluded), why)
    rows, pts = np.nonzero(present[:, cols])
    pts_j = cols[pts]
    lx = np.log(x[pts_j])
    if groups is None:
        X = np.stack([lx, np.ones_like(lx)], axis=1)
    else:
        labels = sorted(set(groups.tolist()))
        onehot = (np.asarray(groups)[pts][:, None] == np.asarray(labels)[None, :]).astype(np.float64)
        X = np.concatenate([lx[:, None], onehot], axis=1)
    tv = t[rows, pts_j]
    cens = ~np.isfinite(tv)
    with np.errstate(divide="ignore"):
        y = np.where(cens, 0.0, np.log(np.where(cens, 1.0, tv)))
    lc = np.log(c[pts_j])
    b, _ = tobit(X, y, cens, lc)
    slope, icpt = float(b[0, 0]), float(b[0, 1])
    n_boot_ok, ci, se = 0, (math.nan, math.nan), math.nan
    if n_boot > 0 and R >= 2:
        rng = np.random.default_rng(seed)
        blk = np.asarray(blocks) if blocks is not None else (np.zeros(N, int) if paired else np.arange(N))
        wts = np.zeros((n_boot, rows.size))
        for bv in np.unique(blk[cols]):
            # the seeds of one block, resampled together: a count per seed and draw
            in_b = np.isin(pts_j, np.flatnonzero(blk == bv))
            seeds = np.unique(rows[in_b])
            cnt = np.stack([np.bincount(rng.integers(0, seeds.size, seeds.size), minlength=seeds.size) for _ in range(n_boot)])
            pos = np.searchsorted(seeds, rows[in_b])
            wts[:, in_b] = cnt[:, pos]
        # a draw must keep two abscissae with an observed time
        seen = np.stack([np.unique(x[pts_j][(wts[bi] > 0) & ~cens]).size for bi in range(n_boot)])
        bd, _ = tobit(X, y, cens, lc, wts)
        sb = np.where(seen >= 2, bd[:, 0], np.nan)
        sb = sb[np.isfinite(sb)]
        n_boot_ok = int(sb.size)
        if n_boot_ok >= 10:
            a = (1.0 - level) / 2.0
            ci = (float(np.quantile(sb, a)), float(np.quantile(sb, 1 - a)))
            se = float(np.std(sb, ddof=1))
        else:
            n_boot_ok = 0
    # goodness of fit on the per-point Kaplan-Meier medians that are observed
    med = np.array([km_median(t[present[:, j], j], c[j]) for j in cols])
    fin = np.isfinite(med)
    if groups is None:
        pred = icpt + slope * np.log(x[cols])
    else:  # each point against its own intercept
        pred = np.array([b[0, 1 + labels.index(gv)] for gv in groups]) + slope * np.log(x[cols])
    resid = np.log(med[fin]) - pred[fin]
    ly = np.log(med[fin])
    ss_tot = float(np.sum((ly - ly.mean()) ** 2)) if ly.size else 0.0
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 and groups is None else math.nan
    rms = math.sqrt(float(np.mean(resid**2))) / math.log(10.0) if resid.size else math.nan
    return PowerLawFit(
        slope=slope,
        intercept=icpt,
        slope_se=se,
        ci=ci,
        level=level,
        r2=r2,
        rms_log10=rms,
        chi2_red=None,
        n_points=int(cols.size),
        window=(float(x[cols].min()), float(x[cols].max())),
        n_boot=n_boot_ok,
        method=method if n_boot_ok else method.replace("bootstrap over seeds", "no interval (too few seeds)"),
        replicas=int(R),
        excluded=tuple(excluded),
        censored=int(cens.sum()),
    )


def _no_fit(window, level, method, R, excluded, why) -> PowerLawFit:
    nan = math.nan
    w = (nan, nan) if window is None else (float(window[0]), float(window[1]))
    fit = PowerLawFit(nan, nan, nan, (nan, nan), level, nan, nan, None, 0, w, 0, method, R)
    return dataclasses.replace(fit, excluded=excluded, no_fit=why)
