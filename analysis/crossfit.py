"""Cross-point fits of a sweep: exponents across replica groups, beside theory.

Each fit takes the groups of :func:`.aggregate.load_groups` that differ only in its
parameter (a series), and names every point it leaves out and why:

* emergence time vs ``d``: the censored regression of ``log T_p`` on ``log d`` over every
  seed (:func:`.censored.censored_power_law`), one intercept per direction, over the
  directions that some seed learned at every ``d`` (theory ``k/2 - 1``);
* loss plateau vs width ``m`` for ``m < P`` (theory ``1 - 2beta``);
* compute frontier ``min_m MSE`` vs ``C = m x steps x batch`` (theory ``(1-2beta)/(1+beta)``);
* the loss exponent and the emergence slope of each group vs ``beta``.

A fit that cannot be made is an entry whose fit has ``no_fit`` (the reason), never a
silent ``nan``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

from . import theory
from .censored import censored_power_law, censored_reason
from .fit import fit_from_draws
from .frontier import lower_envelope

__all__ = ["cross_fits"]


def _series(groups, axis: str):
    """Groups that differ only in ``axis`` (steps ignored): ``{label: [group, ...]}``."""
    out = defaultdict(list)
    for g in groups:
        key = tuple((k, v) for k, v in sorted(g["params"].items()) if k != axis)
        out[key].append(g)
    return {k: sorted(v, key=lambda g: g["params"][axis]) for k, v in out.items() if len({g["params"][axis] for g in v}) >= 2}


def _label(key) -> str:
    return ", ".join(f"{k}={v}" for k, v in key if v not in ("", None))


def _beta_of(series_key):
    return dict(series_key).get("beta")


def cross_fits(groups) -> dict:
    """Every cross-group fit the sweep supports.  Returns ``{name: [entry, ...]}`` with the
    fit, theory value, series label and the per-group points."""
    out: dict[str, list] = {}
    k = next((g["res"].k for g in groups if g["res"].k), None)

    # emergence time vs d at fixed lr: censored regression over the directions that some
    # seed learned at every d, one intercept per direction
    for key, gs in _series(groups, "d").items():
        out.setdefault("emergence_time_vs_d", []).append({"series": _label(key), **_time_vs_d(gs, k)})

    # loss plateau vs m (m < P: a wider student learns everything and has no plateau)
    for key, gs in _series(groups, "m").items():
        P = dict(key)["P"]
        gs_p = [g for g in gs if g["params"]["m"] < P]
        wide = [f"m = {g['params']['m']}: m >= P = {P} (no plateau: every direction fits)" for g in gs if g["params"]["m"] >= P]
        b = _beta_of(key)
        if len({g["params"]["m"] for g in gs_p}) < 2:
            out.setdefault("plateau_vs_m", []).append(
                {
                    "series": _label(key),
                    "fit": _no_fit(f"{len(gs_p)} widths m < P = {P}; a slope needs 2", wide),
                    **_theory("plateau_vs_m", b, k),
                    "x": [],
                    "y": [],
                    "statistic": "mean over seeds of the loss at the last log step; widths m < P only",
                }
            )
        else:
            x = np.array([g["params"]["m"] for g in gs_p], np.float64)
            y = np.array([g["plateau"] for g in gs_p])
            nb = min(len(g["plateau_draws"]) for g in gs_p)
            yd = np.stack([g["plateau_draws"][:nb] for g in gs_p], axis=1) if nb else None
            out.setdefault("plateau_vs_m", []).append(
                {
                    "series": _label(key),
                    "fit": dataclasses.replace(fit_from_draws(x, y, yd), excluded=tuple(wide)),
                    **_theory("plateau_vs_m", b, k),
                    "x": x,
                    "y": y,
                    "statistic": "mean over seeds of the loss at the last log step; widths m < P only",
                }
            )
        # compute frontier: lower envelope over widths of the mean loss vs C = m * step * batch
        fr = _frontier(gs)
        if fr is not None:
            C, env, env_d, win = fr
            out.setdefault("compute_frontier", []).append(
                {
                    "series": _label(key),
                    "fit": fit_from_draws(C, env, env_d, win),
                    **_theory("compute_frontier", b, k),
                    "x": C,
                    "y": env,
                    "statistic": "min over widths of the seed-mean loss at compute C = m x step x batch_size, "
                    "window from the first to the last emergence (in compute) over widths",
                }
            )
        else:
            out.setdefault("compute_frontier", []).append(
                {
                    "series": _label(key),
                    "fit": _no_fit("no width has a direction with an observed median emergence step: no fit window"),
                    **_theory("compute_frontier", b, k),
                    "x": [],
                    "y": [],
                    "statistic": "min over widths of the seed-mean loss at compute C = m x step x batch_size",
                }
            )

    # exponents within each group vs beta
    betas = {g["params"]["beta"] for g in groups}
    if len(betas) >= 2:
        for name in ("loss_vs_step", "emergence_time_vs_p"):
            rows = []
            for g in sorted(groups, key=lambda g: g["params"]["beta"]):
                f = g["res"].fits.get(name)
                if f is None:  # no fit in this group: a row that says why
                    w = g["res"].windows.get(name, {})
                    f = _no_fit(w.get("no_fit", "no fit"), w.get("excluded", ()))
                b = g["params"]["beta"]
                rows.append({"params": g["params"], "fit": f, **_theory(name, b, k)})
            if rows:
                out.setdefault(f"{name}_vs_beta", []).append({"series": "all groups", "rows": rows})
    return out


def _no_fit(why: str, excluded=()):
    """A fit with no slope, carrying why and the points it left out."""
    return dataclasses.replace(fit_from_draws([], []), no_fit=why, excluded=tuple(excluded))


def _time_vs_d(gs, k) -> dict:
    """The emergence-time-vs-d entry of one series (groups that differ only in ``d``)."""
    x = np.array([g["params"]["d"] for g in gs], np.float64)
    P = gs[0]["res"].times.shape[1]
    some = np.all([np.isfinite(g["res"].times).any(axis=0) for g in gs], axis=0)  # (P,)
    excluded = []
    for q in np.flatnonzero(~some):
        where = [g for g in gs if not np.isfinite(g["res"].times[:, q]).any()]
        excluded.append(
            f"p = {q + 1}: "
            + "; ".join(censored_reason(f"d = {g['params']['d']}", g["res"].times[:, q], g["res"].step[-1]) for g in where)
        )
    censored = []  # kept in the fit as censored observations, and said so
    for g in gs:
        n_c = int((~np.isfinite(g["res"].times[:, some])).sum())
        if n_c:
            censored.append(
                f"d = {g['params']['d']}: {n_c} of {g['res'].times[:, some].size} seed-directions "
                f"censored at step {g['res'].step[-1]:,.0f}"
            )
    dirs = np.flatnonzero(some)
    R = max(g["res"].times.shape[0] for g in gs)
    cols, xs, cens_at, ints, blocks, names = [], [], [], [], [], []
    for i, g in enumerate(gs):
        for q in dirs:
            col = np.full(R, np.nan)
            col[: g["res"].times.shape[0]] = g["res"].times[:, q]
            cols.append(col)
            xs.append(x[i])
            cens_at.append(g["res"].step[-1])
            ints.append(int(q))
            blocks.append(i)
            names.append(f"d = {x[i]:g}, p = {q + 1}")
    common = {
        **_theory("emergence_time_vs_d", 1.0, k),
        "x": x,
        "y": np.array([math.exp(np.mean(np.log(g["T_med"][dirs]))) if dirs.size else math.nan for g in gs]),
        "directions": (dirs + 1).tolist(),
        "censored_points": censored,
        "statistic": "censored regression (Tobit) of log T_p on log d over every seed, one intercept per direction; "
        "points: geometric mean over those directions of the Kaplan-Meier median (inf: censored)",
    }
    if dirs.size == 0:
        return {**common, "fit": _no_fit(f"no direction of the {P} has an observed emergence time at every d", excluded)}
    nb = min(len(g["T_draws"]) for g in gs)
    fit = censored_power_law(
        np.array(xs), np.stack(cols, axis=1), np.array(cens_at), None, nb, label="d", intercepts=ints, blocks=blocks, names=names
    )
    return {**common, "fit": dataclasses.replace(fit, excluded=tuple(excluded) + fit.excluded)}


def _theory(name: str, beta, k) -> dict:
    """``{"theory": value}`` of :func:`.theory.exponent`, with ``"theory_reason"`` where
    there is no value (e.g. no power law for beta <= 1/2)."""
    value, why = theory.exponent(name, beta, k)
    return {"theory": value} if value is not None else {"theory": None, "theory_reason": why}


def _covers(fit, value):
    """Whether the fit's interval holds the theory value; ``None`` without a value or a fit."""
    return bool(fit.covers(value)) if value is not None and math.isfinite(value) and not fit.no_fit else None


def _frontier(gs, n_grid: int = 200):
    widths = {g["params"]["m"] for g in gs}
    if len(widths) < 2:
        return None
    lo, hi, wlo, whi = np.inf, 0.0, np.inf, 0.0
    curves = []
    for g in gs:
        res = g["res"]
        step = res.step
        pos = step > 0
        scale = g["params"]["m"] * g["params"]["batch_size"]
        C = step[pos] * scale
        lo, hi = min(lo, C.min()), max(hi, C.max())
        med = g["T_med"][np.isfinite(g["T_med"])]
        if med.size:
            wlo, whi = min(wlo, med.min() * scale), max(whi, med.max() * scale)
        curves.append((C, g["loss_mean"][pos], g["loss_draws"][:, pos]))
    if not np.isfinite(wlo) or whi <= wlo:
        return None
    grid = np.geomspace(lo, hi, n_grid)
    _, _, central = lower_envelope([(c, r) for c, r, _ in curves], grid)
    nb = min(d.shape[0] for _, _, d in curves)
    draws = lower_envelope([(c, d[:nb]) for c, _, d in curves], grid)[2] if nb else None
    return grid, central, draws, (wlo, whi)
