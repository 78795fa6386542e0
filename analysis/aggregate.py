"""Sweep aggregation: exponents across grid points, beside theory.

A sweep directory holds ``sweep.json`` (``points`` with ``dir``, ``settings``,
``state``) and one ordinary run directory per point.  Traced settings (``beta``, ``lr``,
``seed``) are replicas *inside* a run, so a point is split into **groups** by its
per-replica ``beta`` and ``lr`` arrays; a group is one physical setting
``(d, P, m, batch_size, engine, beta, lr, other swept keys)`` with its seeds as replicas.

Each group is analysed by :func:`.core.analyze_metrics`.  Cross-group fits use
the group's central statistic and its bootstrap draws over seeds (draw ``b`` of every
group is fitted together, so the interval carries the seed noise of every point):

* loss exponent and emergence slope vs ``beta`` (theory ``-(2beta-1)/beta`` and ``beta``);
* emergence time vs ``d`` at fixed ``lr`` (theory ``k/2 - 1``);
* loss plateau vs width ``m`` for ``m < P`` (theory ``1 - 2beta``);
* compute frontier ``min_m MSE`` vs ``C = m x steps x batch`` (theory ``(1-2beta)/(1+beta)``).

Each only when the sweep varies the relevant parameter.  The theory values come from
:func:`.theory.exponent`: ``None`` with a ``theory_reason`` where no power law is
predicted (the loss, plateau and frontier exponents for ``beta <= 1/2``).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from scaling_sgd import load_run
from scaling_sgd._src.errors import ResultsError
from scaling_sgd._src.files import atomic_write_json
from scaling_sgd._src.sweep_state import read_sweep_index

from . import theory
from .core import analyze_metrics, replica_groups, replica_values, select_replicas
from .emergence import log_median
from .fit import fit_from_draws
from .frontier import lower_envelope
from .output import fmt, json_clean

__all__ = ["load_groups", "read_index", "analyze_sweep", "cross_fits"]

SHAPE_KEYS = ("d", "P", "m", "batch_size", "engine")
KNOWN_SETTINGS = {
    "data.d",
    "teacher.P",
    "student.m",
    "train.batch_size",
    "train.engine",
    "teacher.beta",
    "train.lr",
    "train.seed",
    "train.steps",
}


def _rest(settings: dict) -> str:
    """Swept settings other than the known axes, as a stable label (they split series)."""
    items = sorted((k, json.dumps(v, sort_keys=True)) for k, v in settings.items() if k not in KNOWN_SETTINGS)
    return ", ".join(f"{k}={v}" for k, v in items)


def load_groups(sweep_dir, observable=None, threshold=None, n_boot: int = 400, seed: int = 0):
    """Read a sweep directory and analyse every replica group of every finished point.

    Every point is read from its folder (verified against its checksum), whatever state
    ``sweep.json`` recorded: a point finished since the index was written is analysed,
    and a damaged one is skipped with the reason.  A lost or unreadable ``sweep.json`` is
    rebuilt from the point folders (``index["rebuilt_from_points"]``).

    Returns ``(index, groups, skipped)``: ``index`` the ``sweep.json`` object; ``groups`` a
    list of dicts with ``params`` and ``res`` (:func:`analyze_metrics` output) plus
    bootstrap draws; ``skipped`` a list of ``(point id, reason)``.
    """
    sweep_dir = Path(sweep_dir)
    index = read_index(sweep_dir)
    groups, skipped = [], []
    rng = np.random.default_rng(seed)
    for pt in index["points"]:
        pid = str(pt.get("id", "?")) if isinstance(pt, dict) else "?"
        d = sweep_dir / pt["dir"] if isinstance(pt, dict) and isinstance(pt.get("dir"), str) else None
        if d is None:
            skipped.append((pid, "damaged: bad entry in sweep.json"))
            continue
        if pt.get("state") == "damaged":
            skipped.append((pid, f"damaged: {pt.get('problem', 'unreadable')}"))
            continue
        if d.is_dir() and not (d / "config.json").exists():
            skipped.append((pid, pt.get("state") if pt.get("state") not in (None, "done") else "pending"))
            continue
        if not os.path.lexists(d):
            skipped.append((pid, pt.get("state") if pt.get("state") not in (None, "done") else "missing"))
            continue
        try:
            result = load_run(d)
        except ResultsError as e:
            skipped.append((pid, "damaged: " + str(e).removeprefix(f"{e.key}: ").split(";")[0]))
            continue
        cfg, metrics, meta = result.config, result.metrics, result.meta
        if isinstance(meta.get("hash"), str) and pt.get("id") and meta["hash"] != pt["id"] and d.name == pt["id"]:
            skipped.append((pid, f"damaged: config.json is another point's (hash {meta['hash']})"))
            continue
        if meta.get("partial"):
            skipped.append((pid, "partial (interrupted run)"))
            continue
        an = cfg.get("analysis", {})
        obs = observable or an.get("observable", "skill")
        thr = float(threshold if threshold is not None else an.get("threshold", 0.5))
        R = np.asarray(metrics["loss"]).shape[0]
        beta = replica_values(cfg, metrics, "beta", R)
        lr = replica_values(cfg, metrics, "lr", R)
        for bl, sel in replica_groups(cfg, metrics):
            sub = select_replicas(metrics, sel)
            sub.setdefault("beta", beta[sel])
            sub.setdefault("lr", lr[sel])
            try:
                res = analyze_metrics(sub, cfg, obs, thr, n_boot, seed=int(rng.integers(2**31)))
            except ValueError as e:
                skipped.append((pid, str(e)))
                continue
            params = {
                "d": int(cfg["data"]["d"]),
                "P": int(cfg["teacher"]["P"]),
                "m": int(cfg["student"]["m"]),
                "batch_size": int(cfg["train"]["batch_size"]),
                "engine": cfg["train"]["engine"],
                "beta": float(bl[0]),
                "lr": float(bl[1]),
                "rest": _rest(pt.get("settings", {})),
            }
            groups.append({"id": pid, "params": params, "res": res, **_draws(res, n_boot, rng)})
    return index, groups, skipped


def read_index(sweep_dir) -> dict:
    """``sweep.json`` of a sweep folder, or the index rebuilt from its point folders when
    the file is missing or unreadable (then ``index["rebuilt_from_points"]`` is set)."""
    return read_sweep_index(sweep_dir)


def _draws(res: dict, n_boot: int, rng) -> dict:
    """Bootstrap over seeds of the per-group statistics used across groups."""
    t, loss = res.times, res.loss
    R = t.shape[0]
    idx = rng.integers(0, R, size=(n_boot, R)) if R >= 2 else np.empty((0, R), int)
    return {
        "T_med": log_median(t, axis=0),
        "T_draws": log_median(t[idx], axis=1) if idx.size else np.empty((0, t.shape[1])),
        "plateau": float(np.mean(loss[:, -1])),
        "plateau_draws": loss[idx, -1].mean(axis=1) if idx.size else np.empty(0),
        "loss_mean": loss.mean(axis=0),
        "loss_draws": loss[idx].mean(axis=1) if idx.size else np.empty((0, loss.shape[1])),
    }


def _series(groups, axis: str):
    """Groups that differ only in ``axis`` (steps ignored): ``{label: [group, ...]}``."""
    out = defaultdict(list)
    for g in groups:
        key = tuple((k, v) for k, v in sorted(g["params"].items()) if k != axis)
        out[key].append(g)
    return {k: sorted(v, key=lambda g: g["params"][axis]) for k, v in out.items() if len({g["params"][axis] for g in v}) >= 2}


def _label(key) -> str:
    return ", ".join(f"{k}={v}" for k, v in key if v not in ("", None))


def _slug(label: str) -> str:
    """A file-name form of a series label: ``"P=8, beta=1.0"`` -> ``"P=8_beta=1.0"``."""
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", label).strip("_") or "all"


def _beta_of(series_key):
    return dict(series_key).get("beta")


def cross_fits(groups) -> dict:
    """Every cross-group fit the sweep supports.  Returns ``{name: [entry, ...]}`` with the
    fit, theory value, series label and the per-group points."""
    out: dict[str, list] = {}
    k = next((g["res"].k for g in groups if g["res"].k), None)

    # emergence time vs d at fixed lr: the directions every point of the series learned
    for key, gs in _series(groups, "d").items():
        learned = np.all([np.isfinite(g["T_med"]) for g in gs], axis=0)
        if not learned.any():
            continue
        x = np.array([g["params"]["d"] for g in gs], np.float64)
        y = np.array([np.exp(np.mean(np.log(g["T_med"][learned]))) for g in gs])
        nb = min(len(g["T_draws"]) for g in gs)
        with np.errstate(divide="ignore", invalid="ignore"):
            yd = np.stack([np.exp(np.mean(np.log(g["T_draws"][:nb, learned]), axis=1)) for g in gs], axis=1) if nb else None
        fit = fit_from_draws(x, y, yd)
        out.setdefault("emergence_time_vs_d", []).append(
            {
                "series": _label(key),
                "fit": fit,
                **_theory("emergence_time_vs_d", 1.0, k),
                "x": x,
                "y": y,
                "directions": (np.nonzero(learned)[0] + 1).tolist(),
                "statistic": "geometric mean over the directions learned at every d of the median (over seeds) emergence step",
            }
        )

    # loss plateau vs m (m < P: a wider student learns everything and has no plateau)
    for key, gs in _series(groups, "m").items():
        P = dict(key)["P"]
        gs_p = [g for g in gs if g["params"]["m"] < P]
        b = _beta_of(key)
        if len({g["params"]["m"] for g in gs_p}) >= 2:
            x = np.array([g["params"]["m"] for g in gs_p], np.float64)
            y = np.array([g["plateau"] for g in gs_p])
            nb = min(len(g["plateau_draws"]) for g in gs_p)
            yd = np.stack([g["plateau_draws"][:nb] for g in gs_p], axis=1) if nb else None
            out.setdefault("plateau_vs_m", []).append(
                {
                    "series": _label(key),
                    "fit": fit_from_draws(x, y, yd),
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

    # exponents within each group vs beta
    betas = {g["params"]["beta"] for g in groups}
    if len(betas) >= 2:
        for name in ("loss_vs_step", "emergence_time_vs_p"):
            rows = []
            for g in sorted(groups, key=lambda g: g["params"]["beta"]):
                f = g["res"].fits.get(name)
                if f is None:
                    continue
                b = g["params"]["beta"]
                rows.append({"params": g["params"], "fit": f, **_theory(name, b, k)})
            if rows:
                out.setdefault(f"{name}_vs_beta", []).append({"series": "all groups", "rows": rows})
    return out


def _theory(name: str, beta, k) -> dict:
    """``{"theory": value}`` of :func:`.theory.exponent`, with ``"theory_reason"`` where
    there is no value (e.g. no power law for beta <= 1/2)."""
    value, why = theory.exponent(name, beta, k)
    return {"theory": value} if value is not None else {"theory": None, "theory_reason": why}


def _covers(fit, value):
    """Whether the fit's interval holds the theory value; ``None`` without a value."""
    return bool(fit.covers(value)) if value is not None and math.isfinite(value) else None


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


def analyze_sweep(sweep_dir, observable=None, threshold=None, stream=sys.stdout, n_boot: int = 400, figures: bool = True) -> dict:
    """Analyse a sweep directory: ``summary.json``, figures and a table in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    index, groups, skipped = load_groups(sweep_dir, observable, threshold, n_boot)
    fits = cross_fits(groups)
    summary = {
        "sweep": str(sweep_dir),
        "swept": index.get("swept", []),
        "points": len(index.get("points", [])),
        "groups_analysed": len(groups),
        # diverged replicas are excluded from every fit and never counted as learned
        "diverged_replicas": sum(g["res"].diverged for g in groups),
        "skipped": [{"id": i, "reason": r} for i, r in skipped],
        "groups": [
            {
                "id": g["id"],
                "params": g["params"],
                "replicas": g["res"].replicas,
                "diverged_excluded": g["res"].diverged,
                "learned_directions": int(np.isfinite(g["T_med"]).sum()),
                "median_emergence_steps": g["T_med"],
                "final_loss_mean": g["plateau"],
                "fits": {
                    n: {
                        **f.to_dict(),
                        "theory": g["res"].theory.get(n),
                        **({"theory_reason": g["res"].theory_reasons[n]} if n in g["res"].theory_reasons else {}),
                    }
                    for n, f in g["res"].fits.items()
                },
                "no_fit": {n: w["no_fit"] for n, w in g["res"].windows.items() if "no_fit" in w},
            }
            for g in groups
        ],
        "fits": {},
        "formulas": {k: v for k, v in theory.FORMULAS.items() if k not in ("flow_escape", "additive_model")},
    }
    if index.get("rebuilt_from_points"):
        summary["index"] = index["rebuilt_from_points"]
    for name, entries in fits.items():
        summary["fits"][name] = []
        for e in entries:
            if "rows" in e:
                summary["fits"][name].append(
                    {
                        "series": e["series"],
                        "rows": [
                            {
                                "params": r["params"],
                                **r["fit"].to_dict(),
                                "theory": r["theory"],
                                **({"theory_reason": r["theory_reason"]} if "theory_reason" in r else {}),
                                "theory_in_interval": _covers(r["fit"], r["theory"]),
                            }
                            for r in e["rows"]
                        ],
                    }
                )
            else:
                summary["fits"][name].append(
                    {
                        "series": e["series"],
                        **e["fit"].to_dict(),
                        "theory": e["theory"],
                        **({"theory_reason": e["theory_reason"]} if "theory_reason" in e else {}),
                        "theory_in_interval": _covers(e["fit"], e["theory"]),
                        "statistic": e["statistic"],
                        "points": {"x": e["x"], "y": e["y"]},
                    }
                )
    if figures:
        summary["figures"] = _figures(fits, sweep_dir)
    summary = json_clean(summary)
    atomic_write_json(sweep_dir / "summary.json", summary)
    if stream is not None:
        _print(summary, stream)
    return summary


def _figures(fits, out_dir: Path) -> list[str]:
    from . import plots

    paths = []
    spec = {
        "emergence_time_vs_d": ("input dimension d", "median emergence step", "$k/2-1$"),
        "plateau_vs_m": ("width m", "final loss (plateau)", "$1-2\\beta$"),
        "compute_frontier": ("compute C = m x steps x batch", "min over widths of loss", "$(1-2\\beta)/(1+\\beta)$"),
    }
    for name, entries in fits.items():
        for e in entries:
            # named by the series' own values (e.g. compute_frontier_P=8_beta=1.0), not by position
            stem = out_dir / (name if len(entries) == 1 else f"{name}_{_slug(e['series'])}")
            if name in spec:
                xl, yl, tl = spec[name]
                fig = plots.loglog_fit(
                    e["x"], e["y"], e["fit"], e["theory"], tl, xl, yl, title=e["series"], theory_reason=e.get("theory_reason", "")
                )
            else:
                rows = e["rows"]
                x = [r["params"]["beta"] for r in rows]
                key = "loss_vs_step" if name.startswith("loss") else "emergence_time_vs_p"
                tl, yl = (
                    ("$-(2\\beta-1)/\\beta$", "loss exponent") if key == "loss_vs_step" else ("$\\beta$", "slope of $T_p$ vs $p$")
                )

                def fn(b, key=key):  # the theory curve, blank where there is no power law (beta <= 1/2)
                    v = [theory.exponents(x, None)[key] for x in np.atleast_1d(b)]
                    return np.array([np.nan if x is None else x for x in v])

                fig = plots.exponent_vs_param(x, [r["fit"].slope for r in rows], [r["fit"].ci for r in rows], fn, tl, "beta", yl)
            paths += [str(p) for p in plots.save(fig, stem, close=True)]
    return paths


def _print(summary: dict, stream):
    if summary.get("index"):
        print(summary["index"], file=stream)
    print(
        f"sweep {summary['sweep']}: {summary['groups_analysed']} replica groups from {summary['points']} points"
        + (f", {summary['diverged_replicas']} diverged replicas excluded" if summary.get("diverged_replicas") else "")
        + (f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""),
        file=stream,
    )
    for sk in summary["skipped"][:20]:
        print(f"  skipped point {sk['id']}: {sk['reason']}", file=stream)
    if len(summary["skipped"]) > 20:
        print(f"  ... and {len(summary['skipped']) - 20} more (see summary.json)", file=stream)
    # the series label goes last and whole: it is what tells the rows apart
    print(f"  {'fit':<28} {'slope':>7} {'95% interval':>18} {'theory':>7}  series", file=stream)
    for name, entries in summary["fits"].items():
        for e in entries:
            rows = e.get("rows", [e])
            for r in rows:
                lab = e["series"] if "rows" not in e else _label(sorted(r["params"].items()))
                ci = r.get("ci") or [None, None]
                warn = r.get("caveats") or []
                print(
                    f"  {name:<28} {fmt(r.get('slope'), '7.3f')} [{fmt(ci[0], '7.3f')}, {fmt(ci[1], '7.3f')}] "
                    f"{fmt(r.get('theory'), '7.3f')}  {lab}"
                    + (f"  (theory: {r['theory_reason']})" if r.get("theory_reason") else "")
                    + (f"  CAUTION: {'; '.join(warn)}" if warn else ""),
                    file=stream,
                )
    if not summary["fits"]:
        print("  (the sweep varies none of beta, d, m: no cross-point exponent)", file=stream)
