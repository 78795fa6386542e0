"""``analyze``: one run, or one analysis per value of a setting (``by=``).

A fit is only meaningful over replicas that share its theory: ``T_p ~ p^beta`` pooled
over two values of ``beta`` is neither.  :func:`analyze` therefore analyses a run as one
group only when its replicas share ``beta`` (else the beta-dependent fits are refused,
naming ``by=``), and ``analyze(result, by="beta")`` gives a :class:`GroupedAnalysis`:
one :class:`.core.RunAnalysis` per value, indexed by the value (``g[1.5].fits[...]``).

``by`` is a replicated setting (``beta``, ``lr``, ``seed``) for a run; for a sweep folder
it may also be any swept key (``d``, ``m``, ``data.d``, ...), and each value must then
name one replica group of one point (else the error names the keys that still vary).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from scaling_sgd import Result, load_run
from scaling_sgd._src.engines.base import REPLICA_SETTINGS

from .core import RunAnalysis, analyze_metrics, analyze_one, replica_values, select_replicas

__all__ = ["analyze", "GroupedAnalysis"]


@dataclasses.dataclass(frozen=True)
class GroupedAnalysis:
    """One :class:`.core.RunAnalysis` per value of ``by``.

    Attributes:
        by: the grouping keys, e.g. ``("beta",)``.
        groups: value -> analysis, in increasing order of value; a value is a number
            (one key) or a tuple (several keys).
        skipped: value -> why that group has no analysis (e.g. every replica diverged).

    ``g[1.5]`` is the group of value 1.5 (a float matches to relative ``1e-9``).
    """

    by: tuple[str, ...]
    groups: dict
    skipped: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, value) -> RunAnalysis:
        if value in self.groups:
            return self.groups[value]
        for k, v in self.groups.items():
            if _same(k, value):
                return v
        if any(_same(k, value) for k in self.skipped):
            raise KeyError(f"{_name(self.by)} = {value!r}: {next(r for k, r in self.skipped.items() if _same(k, value))}")
        raise KeyError(f"{_name(self.by)} = {value!r} is not a group; groups: {', '.join(map(_text, self.groups))}")

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def keys(self):
        return self.groups.keys()

    def values(self):
        return self.groups.values()

    def items(self):
        return self.groups.items()

    def __repr__(self) -> str:
        vals = ", ".join(_text(k) for k in self.groups)
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"<GroupedAnalysis by {_name(self.by)}: {vals} ({len(self.groups)} groups{extra})>"

    def plot_emergence(self):
        """Emergence step vs direction for every group, coloured by group: the
        Kaplan-Meier medians, each group's censored fit and its own theory line."""
        from . import plots

        return plots.emergence_vs_p_groups([(f"{_name(self.by)} = {_text(k)}", a) for k, a in self.groups.items()])


def _name(by) -> str:
    return by[0] if len(by) == 1 else "(" + ", ".join(by) + ")"


def _text(v) -> str:
    return (
        ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        if isinstance(v, tuple)
        else (f"{v:g}" if isinstance(v, float) else str(v))
    )


def _same(a, b) -> bool:
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not math.isclose(float(x), float(y), rel_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def _as_key(by: tuple, vals: tuple):
    vals = tuple(float(v) if isinstance(v, (float, np.floating)) else (int(v) if isinstance(v, np.integer) else v) for v in vals)
    return vals[0] if len(by) == 1 else vals


def _order(key):
    """Sort key of a group value: numbers by value, anything else by its text."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple((0, float(x), "") if isinstance(x, (int, float)) else (1, 0.0, str(x)) for x in key)


def _check_by(by, accepted) -> tuple[str, ...]:
    keys = (by,) if isinstance(by, str) else tuple(by)
    for k in keys:
        if k not in accepted:
            raise ValueError(f"by: {k!r} is not a grouping key here; accepted: {', '.join(accepted)}")
    return keys


def analyze(
    result,
    observable: str | None = None,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    by: str | tuple | None = None,
):
    """Analyse a run (a :class:`scaling_sgd.Result` or a run folder), or a sweep folder.

    Args:
        by: ``None``: the run as one group (a :class:`.core.RunAnalysis`; the fits whose
            theory depends on ``beta`` are refused, naming ``by=``, over replicas of
            several ``beta``).  A key or a tuple of keys: a :class:`GroupedAnalysis`, one
            analysis per value; ``beta``, ``lr``, ``seed`` for a run, and any swept key
            for a sweep folder.
    Returns:
        :class:`.core.RunAnalysis` or :class:`GroupedAnalysis`.
    """
    if not isinstance(result, Result) and (Path(result) / "sweep.json").exists():
        if by is None:
            raise ValueError(f"{result} is a sweep: analyze(path, by=KEY) with a swept key, or analyze_sweep(path)")
        return _sweep_by(Path(result), by, observable, threshold, n_boot, seed)
    if by is None:
        return analyze_one(result, observable, threshold, n_boot, seed)
    if not isinstance(result, Result):
        result = load_run(result)
    keys = _check_by(by, tuple(REPLICA_SETTINGS))
    observable, threshold = result.criterion(observable, threshold)
    cfg, metrics = result.config, result.metrics
    R = result.R
    cols = {k: replica_values(cfg, metrics, k, R) for k in REPLICA_SETTINGS}
    table = np.stack([cols[k] for k in keys], axis=1)
    groups, skipped = {}, {}
    for vals in np.unique(table, axis=0):
        sel = np.flatnonzero(np.all(table == vals[None, :], axis=1))
        sub = select_replicas(metrics, sel)
        for k in ("beta", "lr"):
            sub.setdefault(k, cols[k][sel])
        key = _as_key(keys, tuple(vals))
        try:
            groups[key] = analyze_metrics(
                sub, cfg, observable, threshold, n_boot, seed, meta=result.meta, group=dict(zip(keys, np.atleast_1d(key)))
            )
        except ValueError as e:  # every replica of the group diverged: a result, said so
            skipped[key] = str(e)
    return GroupedAnalysis(keys, groups, skipped)


def _sweep_by(path: Path, by, observable, threshold, n_boot, seed) -> GroupedAnalysis:
    """One analysis per value of ``by`` over the replica groups of a sweep's points."""
    from .aggregate import load_groups

    index, gs, skipped_points = load_groups(path, observable, threshold, n_boot, seed)
    settings = {p.get("id"): p.get("settings", {}) for p in index["points"] if isinstance(p, dict)}
    traced = set(REPLICA_SETTINGS.values())

    def values(g) -> dict:
        out = {k: v for k, v in g["params"].items() if k != "rest"}
        for k, v in settings.get(g["id"], {}).items():
            if k not in traced:
                out.setdefault(k.split(".", 1)[-1], v)
                out[k] = v
        return out

    vs = [values(g) for g in gs]
    swept = sorted({k.split(".", 1)[-1] for k in index.get("swept", [])} | set(REPLICA_SETTINGS))
    accepted = tuple(swept) + tuple(k for k in index.get("swept", []) if "." in k)
    keys = _check_by(by, accepted)
    buckets: dict = {}
    for g, v in zip(gs, vs):
        key = _as_key(keys, tuple(v.get(k) for k in keys))
        buckets.setdefault(key, []).append((g, v))
    groups, skipped = {}, {f"point {i}": r for i, r in skipped_points}
    for key in sorted(buckets, key=_order):
        members = buckets[key]
        if len(members) > 1:
            varying = sorted(
                k for k in set().union(*(v for _, v in members)) if "." not in k and len({repr(v.get(k)) for _, v in members}) > 1
            )
            raise ValueError(
                f"by={by!r}: {_name(keys)} = {_text(key)} holds {len(members)} groups that differ in "
                f"{', '.join(varying)}; group by those too, e.g. by={(*keys, *varying)!r}"
            )
        ((g, _),) = members
        groups[key] = dataclasses.replace(g["res"], group=dict(zip(keys, np.atleast_1d(key).tolist())))
    return GroupedAnalysis(keys, groups, skipped)
