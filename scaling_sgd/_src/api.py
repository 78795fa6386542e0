"""The Python API: :func:`run` a config, :func:`load_run` a result, :func:`load_sweep` a sweep.

Both :func:`run` and :func:`load_run` return a :class:`Result`: the resolved config, the
metrics (``metrics.npz`` names, replica-major ``(R, T, ...)``), the run's metadata, and
named accessors — the per-replica settings (``seed``, ``lr``, ``beta``), the replica
axis unstacked into named dimensions, emergence times, and an optional ``xarray`` view.
The fits, theory and figures sit one layer up, in :mod:`scaling_sgd.analysis`, and take a
:class:`Result`.

    import scaling_sgd as ss
    import scaling_sgd.analysis as ana
    res = ss.run({"teacher": {"P": 8}, "train": {"steps": 200_000, "seed": [0, 1, 2]}})
    res.loss.shape                     # (3, T)
    res.emergence_times()[0].shape     # (3, 8)
    ana.analyze(res).plot_staircase()
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import config as cfgmod
from .emergence import criterion, run_emergence_times
from .engines.base import REPLICA_SETTINGS
from .results import read_run
from .schema import LOGGED, schema
from .sweep_state import read_sweep_index

__all__ = ["Result", "Labeled", "run", "load_run", "load_sweep", "REPLICA_AXES"]

# The replica axis is the product of the replicated settings, beta x lr x seed (seed fastest).
REPLICA_AXES = tuple(REPLICA_SETTINGS)
# Dimensions of each logged observable after (replica, step).
_DIMS = {name: dims[2:] for name, dims in LOGGED.items()}


@dataclasses.dataclass(frozen=True)
class Labeled:
    """Arrays with named dimensions and coordinates (a small stand-in for ``xarray``).

    Attributes:
        data: name -> array; every array's leading dimensions are ``dims[:ndim]``-style
            named in ``array_dims[name]``.
        array_dims: name -> tuple of dimension names.
        coords: dimension (or coordinate) name -> values.
    """

    data: dict
    array_dims: dict
    coords: dict

    def __getitem__(self, name):
        return self.data[name]

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}{tuple(np.shape(v))}" for k, v in self.data.items())
        sizes = []
        for k, v in self.coords.items():
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], tuple):
                sizes.append(f"{k} on ({', '.join(v[0])})")
            else:
                sizes.append(f"{k}: {len(v)}")
        return f"<Labeled {arrays}; coords {'; '.join(sizes)}>"

    def dims(self, name) -> tuple:
        return self.array_dims[name]

    def to_xarray(self):
        """An ``xarray.Dataset`` (needs the ``xarray`` extra: ``pip install "scaling-sgd[xarray]"``)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError('to_xarray needs xarray: pip install "scaling-sgd[xarray]"') from None
        coords = {}
        for k, v in self.coords.items():
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], tuple):
                coords[k] = (v[0], np.asarray(v[1]))  # a coordinate on several dimensions
            else:
                coords[k] = np.asarray(v)
        return xr.Dataset({k: (self.array_dims[k], np.asarray(v)) for k, v in self.data.items()}, coords=coords)


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished (or, with ``partial``, an interrupted) run.

    Attributes:
        config: the resolved config.
        metrics: ``metrics.npz``: ``step`` ``(T,)``, ``loss`` ``(R, T)``, ``skill`` and
            ``alignment`` ``(R, T, P)``, ``norm2`` ``(R, T, m)``, ``overlap`` ``(R, T, m, P)``
            (when logged), ``diverged``, ``diverged_step``, ``seed``, ``lr``, ``beta`` ``(R,)``,
            ``a`` ``(R, P)``.
        meta: the other ``config.json`` fields (hash, engine, wall time, environment,
            ``partial`` and ``last_step`` for an interrupted run).
        path: the run directory, if it was written or read.
    """

    config: dict
    metrics: dict
    meta: dict
    path: Path | None = None

    # -- named accessors --------------------------------------------------------------
    def __getattr__(self, name):
        # metrics by name: res.loss, res.skill, res.step, ...
        metrics = object.__getattribute__(self, "metrics")
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or metric {name!r}; metrics: {', '.join(metrics)}")

    @property
    def R(self) -> int:
        """Number of replicas."""
        return int(np.shape(self.metrics["loss"])[0])

    @property
    def partial(self) -> bool:
        """True for a run that was interrupted (its metrics stop at ``meta['last_step']``)."""
        return bool(self.meta.get("partial", False))

    @property
    def replicas(self) -> dict:
        """Per-replica settings ``{"beta": (R,), "lr": (R,), "seed": (R,)}``."""
        m = self.metrics
        return {k: np.asarray(m[k]) for k in REPLICA_AXES if k in m}

    def sel(self, **settings) -> Result:
        """The replicas whose ``beta``/``lr``/``seed`` equal the given values (a scalar or a list)."""
        keep = np.ones(self.R, bool)
        for k, v in settings.items():
            if k not in REPLICA_AXES:
                raise ValueError(f"sel: {k!r} is not a replicated setting; accepted: {', '.join(REPLICA_AXES)}")
            keep &= np.isin(self.metrics[k], np.atleast_1d(v))
        R = self.R
        metrics = {
            k: (np.asarray(v)[keep] if k != "step" and np.ndim(v) >= 1 and np.shape(v)[0] == R else v)
            for k, v in self.metrics.items()
        }
        return dataclasses.replace(self, metrics=metrics)

    def _arrays(self) -> dict:
        """Every metric with its dimensions from the schema (:func:`.schema.schema`):
        name -> (dims, array); the replicated settings themselves are left out (they
        become coordinates)."""
        sch = schema(self.config["train"]["engine"])
        return {k: (sch[k], np.asarray(v)) for k, v in self.metrics.items() if k in sch and k not in REPLICA_AXES}

    def unstack(self) -> Labeled:
        """The metrics with the replica axis unstacked into ``(beta, lr, seed)``:
        ``loss`` ``(beta, lr, seed, step)``, ``skill`` ``(beta, lr, seed, step, direction)``,
        ``a`` ``(beta, lr, seed, direction)``, ...  Raises ``ValueError`` when the replicas
        are not a full ``beta x lr x seed`` grid (e.g. a subset from :meth:`sel`)."""
        grid = {k: list(dict.fromkeys(np.asarray(self.metrics[k]).tolist())) for k in REPLICA_AXES}
        shape = tuple(len(grid[k]) for k in REPLICA_AXES)
        full = int(np.prod(shape)) == self.R and all(
            np.array_equal(np.asarray(self.metrics[k]).reshape(shape), np.asarray(c))
            for k, c in zip(REPLICA_AXES, np.meshgrid(*(grid[k] for k in REPLICA_AXES), indexing="ij"))
        )
        if not full:
            raise ValueError("the replicas are not a full beta x lr x seed grid (a subset from sel?); use .metrics")
        data, dims = {}, {}
        for name, (d, v) in self._arrays().items():
            if d[:1] == ("replica",):
                data[name], dims[name] = v.reshape(shape + v.shape[1:]), (*REPLICA_AXES, *d[1:])
        coords = {**grid, "step": np.asarray(self.metrics["step"])}
        return Labeled(data, dims, coords)

    def to_xarray(self):
        """An ``xarray.Dataset`` with the dimensions ``beta``, ``lr``, ``seed`` (the
        replicated settings), ``step`` (coordinate: the log steps), ``direction``
        (coordinate ``p = 1..P``) and ``neuron``; every array of the run by its schema
        name.  Replicas that are not a full ``beta x lr x seed`` grid keep one
        ``replica`` dimension with ``beta``, ``lr``, ``seed`` as its coordinates.  Needs
        ``xarray``."""
        try:
            lab = self.unstack()
        except ValueError:
            arrays = {k: dv for k, dv in self._arrays().items() if dv[0][:1] == ("replica",)}
            data, dims = {k: v for k, (_, v) in arrays.items()}, {k: d for k, (d, _) in arrays.items()}
            coords = {"step": self.metrics["step"], **{k: (("replica",), v) for k, v in self.replicas.items()}}
            lab = Labeled(data, dims, coords)
        P = int(np.shape(self.metrics["skill"])[-1]) if "skill" in self.metrics else None
        if P is not None:
            lab.coords["direction"] = np.arange(1, P + 1)
        ds = lab.to_xarray()
        ds.attrs.update(
            {"engine": self.config["train"]["engine"], "config": json.dumps(self.config), "partial": int(self.partial)}
        )
        return ds

    def initial_observables(self) -> dict:
        """The observables of every replica at step 0, recomputed from the run's config and
        seeds (:func:`..engines.driver.initial_observables`): ``overlap`` ``(R, m, P)`` (the
        cosines ``M_ip(0)``, logged or not), ``norm2`` ``(R, m)``, ``skill``, ``alignment``
        ``(R, P)``, ``loss`` ``(R,)``."""
        from .engines.driver import initial_observables
        from .runner import precision
        from .spec import build_spec

        spec = build_spec(self.config)
        with precision(spec.static.dtype):
            return initial_observables(spec.engine, spec.static, spec.replicas, spec.steps)

    # -- emergence (docs/model.md §1) ---------------------------------------------------
    def criterion(self, observable: str | None = None, threshold: float | None = None) -> tuple[str, float]:
        """The emergence criterion: the given one, else the config's ``[analysis]``."""
        return criterion(self.config, observable, threshold)

    def emergence_times(self, observable: str | None = None, threshold: float | None = None):
        """``(times (R, P), censored (R, P))``: the first step each direction's observable
        reaches the threshold (the config's ``[analysis]`` unless given; located between
        solver steps when the run did so, :func:`.emergence.run_emergence_times`); diverged
        replicas give ``nan``, never a time.  The fits, theory and figures are in
        :mod:`scaling_sgd.analysis` (``analysis.analyze(result)``)."""
        observable, threshold = self.criterion(observable, threshold)
        t, cens = run_emergence_times(self.metrics, self.config, observable, threshold)
        div = np.asarray(self.metrics["diverged"], bool)
        return np.where(div[:, None], np.nan, t), cens & ~div[:, None]

    def __repr__(self) -> str:
        c = self.config
        state = " partial" if self.partial else ""
        return (
            f"<Result{state} engine={c['train']['engine']} d={c['data']['d']} P={c['teacher']['P']} m={c['student']['m']} "
            f"replicas={self.R} steps={int(self.metrics['step'][-1]):,} diverged={int(np.sum(self.metrics['diverged']))}"
            + (f" path={str(self.path)!r}" if self.path else "")
            + ">"
        )


def _as_config(config) -> dict:
    """A resolved config from a mapping (resolved or not) or a TOML path."""
    if isinstance(config, (str, Path)):
        config = cfgmod.load(config)
    if not isinstance(config, Mapping):
        raise cfgmod.ConfigError("config", "must be a table of tables (a dict) or a TOML file path")
    return cfgmod.resolve(config)


def run(config, out=None, *, progress: bool | None = None, label: str = "") -> Result:
    """Run a config (a dict, resolved or not, or a TOML path) and return its :class:`Result`.

    Args:
        config: the config; every missing key takes its default (docs/model.md §4).
        out: a directory to write the run into (``config.json`` + ``metrics.npz``), or ``None``.
        progress: show progress (default: the config's ``train.progress``).
        label: a prefix for progress lines.
    Raises:
        ConfigError: on bad input, before any compute.
        KeyboardInterrupt: on Ctrl-C (``scaling_sgd.engines.Interrupted``, whose
            ``partial`` holds the log points done); nothing is written.
    """
    from . import runner
    from .spec import build_spec

    cfg = _as_config(config)
    spec = build_spec(cfg)
    metrics, meta = runner.run(spec, out, label=label, progress=progress)
    return Result(spec.config, metrics, meta, Path(out) if out is not None else None)


def load_run(path) -> Result:
    """The :class:`Result` of a run directory."""
    cj, metrics = read_run(path)
    cfg = cj.get("config", cj)
    meta = {k: v for k, v in cj.items() if k != "config"}
    return Result(cfg, metrics, meta, Path(path))


def _order(text: str):
    """Sort key of a JSON-encoded setting: numbers by value, anything else by its text."""
    v = json.loads(text)
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, text)


def load_sweep(path, metric: str = "loss") -> Labeled:
    """One metric of every finished point of a sweep, as one array with named dimensions.

    The dimensions are the swept keys that make points (``d``, ``m``, ``P``, ...; a
    ``zip`` axis is one dimension ``zip``, with a coordinate on it for each zipped key),
    then ``beta``, ``lr``, ``seed`` (the replicas), then ``step`` (the log-point index;
    the steps themselves are the coordinate ``step_value`` on the point dimensions and
    ``step``, since a swept ``steps`` moves them) and the metric's own dimensions.
    Points not finished are ``nan``.

    Returns a :class:`Labeled` (``.to_xarray()`` for an ``xarray.Dataset``).
    """
    path = Path(path)
    index = read_sweep_index(path)
    points = [p for p in index["points"] if p.get("state") == "done"]
    if not points:
        raise ValueError(f"{path}: no finished point in the sweep")
    results = [load_run(path / p["dir"]) for p in points]
    traced = set(REPLICA_SETTINGS.values())
    zipped = (index.get("grid") or {}).get("zip") or []
    zkeys = list(zipped[0]) if zipped else []
    axes = [k for k in index["swept"] if k not in traced and k not in zkeys]
    values = {k: sorted({json.dumps(p["settings"][k], sort_keys=True) for p in points}, key=_order) for k in axes}
    sizes = [len(values[k]) for k in axes] + ([len(zipped)] if zipped else [])

    def zip_index(settings) -> int:
        # the zip entry whose non-traced keys the point's settings match
        return next(
            i
            for i, e in enumerate(zipped)
            if all(
                json.dumps(settings.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
                for k, v in e.items()
                if k not in traced
            )
        )

    rep = [r.unstack() for r in results]
    grid = {k: sorted({x for u in rep for x in u.coords[k]}) for k in REPLICA_AXES}
    first = rep[0]
    T = max(u[metric].shape[3] for u in rep)
    trailing = first[metric].shape[4:]
    shape = tuple(sizes) + tuple(len(grid[k]) for k in REPLICA_AXES) + (T,) + trailing
    data = np.full(shape, np.nan)
    steps = np.full(tuple(sizes) + (T,), np.nan)
    for p, u in zip(points, rep):
        pi = tuple(values[k].index(json.dumps(p["settings"][k], sort_keys=True)) for k in axes)
        pi += (zip_index(p["settings"]),) if zipped else ()
        for ri in itertools.product(*(range(len(u.coords[k])) for k in REPLICA_AXES)):
            gi = tuple(grid[k].index(u.coords[k][i]) for k, i in zip(REPLICA_AXES, ri))
            v = u[metric][ri]
            data[pi + gi + (slice(0, v.shape[0]),)] = v
        st = u.coords["step"]
        steps[pi + (slice(0, st.size),)] = st
    names = [k.split(".", 1)[1] for k in axes] + (["zip"] if zipped else [])
    coords = {n: [json.loads(v) for v in values[k]] for n, k in zip(names, axes)}
    for k in zkeys:
        coords[k.split(".", 1)[1]] = (("zip",), [e[k] for e in zipped])
    coords.update(grid)
    coords["step"] = np.arange(T)
    coords["step_value"] = ((*names, "step"), steps)
    dims = (*names, *REPLICA_AXES, "step", *_DIMS[metric])
    return Labeled({metric: data}, {metric: dims}, coords)
