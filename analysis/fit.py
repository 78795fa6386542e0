"""Power-law fits ``y = C x^s`` by least squares in ``log y`` vs ``log x`` over a window,
with a bootstrap over seeds (replicas) for the interval and the goodness of fit.

The estimator of the curve is a statistic over replicas (median of ``log y`` for
emergence times, which may be right-censored; mean of ``y`` for losses); the bootstrap
resamples replicas with replacement, recomputes the statistic, refits, and reports the
percentile interval of the slope.  Goodness of fit: ``R^2``, RMS residual in decades,
and the reduced ``chi^2`` with per-point standard errors from the same bootstrap.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as _st

from .emergence import log_median, loss_fit_window

__all__ = [
    "PowerLawFit",
    "fit_power_law",
    "fit_from_draws",
    "replica_stat",
    "caveats",
    "MIN_SEEDS",
    "bootstrap",
    "window_slope",
    "loss_exponent",
]

# Below this many seeds a bootstrap percentile interval is too coarse to trust: fits with
# fewer are flagged, and a validation row with fewer cannot discriminate.
MIN_SEEDS = 8


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """Result of a log-log fit ``log y = intercept + slope log x`` (natural logs).

    Attributes:
        slope, intercept: least-squares estimates on the central curve.
        slope_se: ordinary least-squares standard error of the slope.
        ci: ``(lo, hi)`` interval of the slope at ``level`` (bootstrap percentile when
            ``n_boot > 0``, else the OLS t-interval).
        r2: coefficient of determination in log-log.  rms_log10: RMS residual (decades).
        chi2_red: ``sum (resid/se)^2 / (n - 2)`` with bootstrap per-point ``se`` (``None``
            without bootstrap); ~1 for a good fit with independent points.
        n_points: points used.  window: ``(x_lo, x_hi)`` used.  n_boot: valid draws.
        method: how the interval was obtained.  replicas: seeds the bootstrap resampled
            (``None`` when not known).
        excluded: every point left out of the fit, with its reason
            (``"p = 7: 4 of 4 seeds censored at step 1,000,000 ..."``).
        censored: censored observations the fit used (censored regression), else 0.
        no_fit: why there is no slope (then every number is ``nan``), else ``None``.
    """

    slope: float
    intercept: float
    slope_se: float
    ci: tuple[float, float]
    level: float
    r2: float
    rms_log10: float
    chi2_red: float | None
    n_points: int
    window: tuple[float, float]
    n_boot: int
    method: str
    replicas: int | None = None
    excluded: tuple[str, ...] = ()
    censored: int = 0
    no_fit: str | None = None

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x, np.float64) ** self.slope

    def covers(self, value: float) -> bool:
        return self.ci[0] <= value <= self.ci[1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ci"] = list(self.ci)
        d["window"] = list(self.window)
        d["excluded"] = list(self.excluded)
        d["caveats"] = caveats(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _nan_fit(window, level, method, why: str) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(nan, nan, nan, (nan, nan), level, nan, nan, None, 0, window, 0, method, no_fit=why)


def _ols(lx, ly, w):
    """Weighted (0/1 mask) least squares along the last axis, vectorised over the rest.

    Returns ``slope, intercept`` (nan where fewer than two distinct valid ``x``).
    """
    sw = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx).sum(-1) / sw
        my = (w * np.where(w > 0, ly, 0.0)).sum(-1) / sw
        dx = lx - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        sxy = (w * dx * np.where(w > 0, ly - my[..., None], 0.0)).sum(-1)
        slope = sxy / sxx
    ok = (sw >= 2) & (sxx > 1e-300)
    slope = np.where(ok, slope, np.nan)
    return slope, my - slope * mx


def replica_stat(name: str):
    """The statistic over replicas (axis ``axis``) that defines the central curve."""
    if name == "median":
        return lambda y, axis: log_median(y, axis=axis)
    if name == "mean":
        return lambda y, axis: np.mean(y, axis=axis)
    raise ValueError(f"unknown statistic {name!r}; accepted: 'median', 'mean'")


def fit_from_draws(x, y, y_draws=None, window=None, level: float = 0.95, method: str = "bootstrap") -> PowerLawFit:
    """Fit the central curve ``y`` ``(N,)`` vs ``x`` ``(N,)``; the interval from refitting
    each bootstrap draw ``y_draws`` ``(B, N)`` (same points).

    Points outside ``window = (lo, hi)`` (inclusive) or with non-positive / non-finite
    ``x`` or ``y`` are dropped (a draw drops its own invalid points).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    lo, hi = (-np.inf, np.inf) if window is None else (float(window[0]), float(window[1]))
    inwin = (x >= lo) & (x <= hi) & (x > 0) & np.isfinite(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        lx = np.log(np.where(inwin, x, 1.0))
        ly = np.log(y)
    w = (inwin & np.isfinite(ly)).astype(np.float64)
    used = w > 0
    win = (float(x[used].min()), float(x[used].max())) if used.any() else (lo, hi)
    n = int(used.sum())
    if n < 2 or np.ptp(lx[used]) == 0:
        why = f"{n} of {x.size} points are in the window with a positive, finite value at distinct x; a slope needs 2"
        return _nan_fit(win, level, method, why)
    slope, icpt = (float(v) for v in _ols(lx, ly, w))
    resid = ly[used] - (icpt + slope * lx[used])
    ss_res = float(np.sum(resid**2))
    ss_tot = float(np.sum((ly[used] - ly[used].mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    sxx = float(np.sum((lx[used] - lx[used].mean()) ** 2))
    se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else float("nan")
    chi2_red, n_boot = None, 0
    if y_draws is not None and len(y_draws):
        with np.errstate(divide="ignore", invalid="ignore"):
            lyb = np.log(np.asarray(y_draws, np.float64))
        wb = w[None, :] * np.isfinite(lyb)
        sb, _ = _ols(lx[None, :], lyb, wb)
        sb = sb[np.isfinite(sb)]
        n_boot = int(sb.size)
        if n_boot >= 10:
            alpha = (1.0 - level) / 2.0
            ci = (float(np.quantile(sb, alpha)), float(np.quantile(sb, 1.0 - alpha)))
            # per-point spread of the central statistic, for the reduced chi^2
            lyb_u = np.where(np.isfinite(lyb[:, used]), lyb[:, used], np.nan)
            with np.errstate(invalid="ignore"):
                pse = np.nanstd(lyb_u, axis=0, ddof=1)
            good = np.isfinite(pse) & (pse > 0)
            if n > 2 and good.sum() == n:
                chi2_red = float(np.sum((resid / pse) ** 2) / (n - 2))
        else:
            n_boot = 0
    if n_boot == 0:
        method = "ols-t"
        tq = _st.t.ppf(0.5 + level / 2.0, max(n - 2, 1))
        ci = (slope - tq * se, slope + tq * se) if math.isfinite(se) else (float("nan"), float("nan"))
    return PowerLawFit(
        slope=slope,
        intercept=icpt,
        slope_se=se,
        ci=(float(ci[0]), float(ci[1])),
        level=level,
        r2=r2,
        rms_log10=math.sqrt(ss_res / n) / math.log(10.0),
        chi2_red=chi2_red,
        n_points=n,
        window=win,
        n_boot=n_boot,
        method=method,
    )


def bootstrap_curves(y_reps, stat: str = "median", n_boot: int = 1000, seed: int = 0):
    """Central curve and ``n_boot`` bootstrap curves of a per-replica array.

    Args: ``y_reps`` ``(R, N)``.  Returns ``(central (N,), draws (B, N))`` (``draws`` is
    empty when ``R < 2``).
    """
    y_reps = np.asarray(y_reps, np.float64)
    f = replica_stat(stat)
    central = f(y_reps, 0)
    R = y_reps.shape[0]
    if R < 2 or n_boot <= 0:
        return central, np.empty((0, y_reps.shape[1]))
    idx = np.random.default_rng(seed).integers(0, R, size=(n_boot, R))
    return central, f(y_reps[idx], 1)


def fit_power_law(x, y_reps, window=None, stat: str = "median", n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Fit ``stat_r y_reps[r]`` ~ ``C x^s`` with a bootstrap over replicas.

    Args:
        x: ``(N,)`` positive abscissae.
        y_reps: ``(R, N)`` per-replica values (``inf`` = censored is fine with the median),
            or ``(N,)`` for a single curve (OLS t-interval).
        window: ``(lo, hi)`` in units of ``x`` or ``None`` for all points.
        stat: ``"median"`` (in log) or ``"mean"`` over replicas.
    """
    y_reps = np.asarray(y_reps, np.float64)
    if y_reps.ndim == 1:
        return fit_from_draws(x, y_reps, None, window, level)
    central, draws = bootstrap_curves(y_reps, stat, n_boot, seed)
    fit = fit_from_draws(x, central, draws, window, level, method=f"bootstrap over {y_reps.shape[0]} replicas ({stat})")
    return dataclasses.replace(fit, replicas=int(y_reps.shape[0]))


def caveats(fit: PowerLawFit, replicas: int | None = None) -> list[str]:
    """What a reader must know before trusting ``fit``'s interval, as short phrases:

    * ``"2 points"``: a line through two points has no residual; the interval is only the
      seeds' scatter and says nothing about whether the law is a power law;
    * ``"N seeds < 8"``: a bootstrap over few seeds gives a coarse, usually too narrow,
      percentile interval.
    """
    out = []
    if fit.n_points == 2:
        out.append("2 points")
    R = replicas if replicas is not None else fit.replicas
    if R is not None and R < MIN_SEEDS:
        out.append(f"{R} seeds < {MIN_SEEDS}")
    return out


def bootstrap(stat, n_units: int, n_boot: int = 500, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap over independent units (seeds) of a composite statistic.

    Args:
        stat: ``stat(idx) -> float`` for an index array of resampled units (with
            repetition); ``stat(arange(n))`` is the point estimate.
        n_units: number of units.
    Returns:
        ``(estimate, lo, hi)``; resamples whose statistic is not finite are dropped, and
        the interval is ``nan`` when fewer than half of them are left.
    """
    rng = np.random.default_rng(seed)
    est = float(stat(np.arange(n_units)))
    vals = np.array([stat(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size < n_boot // 2:
        return est, math.nan, math.nan
    q = (1.0 - level) / 2.0
    return est, float(np.quantile(vals, q)), float(np.quantile(vals, 1.0 - q))


def window_slope(x, y, lo: float, hi: float, min_points: int = 4) -> float:
    """Log-log slope of ``y`` vs ``x`` over ``lo <= x <= hi`` (``x > 0``)
    (:func:`fit_from_draws`); ``nan`` with fewer than ``min_points`` points in the window."""
    x = np.asarray(x, np.float64)
    if np.sum((x >= lo) & (x <= hi) & (x > 0)) < min_points:
        return math.nan
    return fit_from_draws(x, y, window=(lo, hi)).slope


def loss_exponent(step, times, loss, x=None, n_boot: int = 400, seed: int = 0, lo_rank: int = 2, hi_rank: int | None = None):
    """Log-log slope of the seed-mean loss against ``x`` (default: the step) over the loss
    fit window (:func:`.emergence.loss_fit_window`, the ``lo_rank``-th to the
    ``hi_rank``-th median emergence), with a bootstrap over seeds that recomputes the
    window from each resample.

    Args:
        step: ``(T,)`` log steps.  times: ``(R, P)`` emergence steps.  loss: ``(R, T)``
            (both of the replicas to use, e.g. the non-diverged ones).
        x: ``(T,)`` another abscissa, increasing with the step (e.g. samples).
    Returns:
        ``dict(est, lo, hi, wlo, whi, seeds)`` (window in units of ``x``).
    """
    step = np.asarray(step, np.float64)
    T = np.asarray(times, np.float64)
    loss = np.asarray(loss, np.float64)
    x = step if x is None else np.asarray(x, np.float64)
    pos = step > 0

    def to_x(s):  # a step on the log grid -> x, interpolated in log-log
        return float(np.exp(np.interp(np.log(s), np.log(step[pos]), np.log(x[pos]))))

    def fit(ii):
        lo, hi = loss_fit_window(np.median(T[ii], axis=0), lo_rank, hi_rank)
        if not math.isfinite(lo):
            return math.nan
        return window_slope(x, np.mean(loss[ii], axis=0), to_x(lo), to_x(hi))

    R = T.shape[0]
    est, lo, hi = bootstrap(fit, R, n_boot, seed=seed)
    wlo, whi = loss_fit_window(np.median(T, axis=0), lo_rank, hi_rank)
    if math.isfinite(wlo):
        wlo, whi = to_x(wlo), to_x(whi)
    return {"est": est, "lo": lo, "hi": hi, "wlo": wlo, "whi": whi, "seeds": int(R)}
