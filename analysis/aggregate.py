"""Sweep aggregation: exponents across grid points, beside theory.

A sweep directory holds ``sweep.json`` (``points`` with ``dir``, ``settings``,
``state``) and one ordinary run directory per point.  Traced settings (``beta``, ``lr``,
``seed``) are replicas *inside* a run, so a point is split into **groups** by its
per-replica ``beta`` and ``lr`` arrays; a group is one physical setting
``(d, P, m, batch_size, engine, beta, lr, other swept keys)`` with its seeds as replicas.

Each group is analysed by :func:`.core.analyze_metrics`; the cross-group fits are
:mod:`.crossfit`'s (emergence time vs ``d``, plateau vs ``m``, compute frontier, the
exponents vs ``beta``), each only when the sweep varies the relevant parameter, and each
naming the points it leaves out.  A partial (interrupted) point is skipped, named
"partial: stopped at step N of M".  The theory values come from
:func:`.theory.exponent`: ``None`` with a ``theory_reason`` where no power law is
predicted (the loss, plateau and frontier exponents for ``beta <= 1/2``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from scaling_sgd import load_run
from scaling_sgd._src.emergence import criterion
from scaling_sgd._src.errors import ResultsError
from scaling_sgd._src.files import atomic_write_json
from scaling_sgd._src.sweep_state import read_sweep_index

from . import theory
from .core import analyze_metrics, partial_text, replica_groups, replica_values, select_replicas
from .crossfit import _covers, _label, cross_fits
from .emergence import log_median
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
            skipped.append((pid, partial_text(cfg, meta, metrics["step"])))
            continue
        obs, thr = criterion(cfg, observable, threshold)
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


def _slug(label: str) -> str:
    """A file-name form of a series label: ``"P=8, beta=1.0"`` -> ``"P=8_beta=1.0"``."""
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", label).strip("_") or "all"


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
                        **({"censored_points": e["censored_points"]} if e.get("censored_points") else {}),
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
            if name in spec and e["fit"].no_fit:
                continue  # nothing to draw; the table and summary.json say why
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
                if r.get("no_fit"):
                    print(f"  {name:<28} no fit: {r['no_fit']}  {lab}", file=stream)
                else:
                    ci = r.get("ci") or [None, None]
                    warn = r.get("caveats") or []
                    print(
                        f"  {name:<28} {fmt(r.get('slope'), '7.3f')} [{fmt(ci[0], '7.3f')}, {fmt(ci[1], '7.3f')}] "
                        f"{fmt(r.get('theory'), '7.3f')}  {lab}"
                        + (f"  (theory: {r['theory_reason']})" if r.get("theory_reason") else "")
                        + (f"  CAUTION: {'; '.join(warn)}" if warn else ""),
                        file=stream,
                    )
                for why in (r.get("excluded") or [])[:5]:
                    print(f"      left out {why}", file=stream)
                if len(r.get("excluded") or []) > 5:
                    print(f"      ... and {len(r['excluded']) - 5} more left out (see summary.json)", file=stream)
                for why in (r.get("censored_points") or [])[:5]:
                    print(f"      censored, kept in the fit: {why}", file=stream)
    if not summary["fits"]:
        swept = ", ".join(summary.get("swept") or []) or "nothing"
        print(
            f"  (no cross-point exponent: the sweep varies {swept}; the cross-point fits need two or more values of "
            "d, m or beta among the analysed groups)",
            file=stream,
        )
