"""Experiments and their runs: the experiment files, their sweeps, the runs read back.

An experiment is a config ``sims/NN_name.toml`` and a module
``sims/experiments/NN_name.py``.  The config holds ordinary scaling-sgd tables, its
``[sweep]`` table included (the package's one sweep dialect, docs/sweeps.md: aliases,
``zip`` axes, and ``lr``/``seed``/``beta`` lists folded into vmapped replicas of one
point), and three tables of its own:

* ``[experiment]``: title, prediction and analysis settings (fit windows, ...), free-form;
* ``[gpu]`` and ``[quick]``: ``"table.key" = value`` overrides for a larger (GPU) and a
  tiny (smoke-test) setting, applied with :func:`scaling_sgd._src.config.set_key` before
  the sweep is planned (``"sweep.zip"`` replaces an axis, ``"experiment.x"`` a setting).

The runs of an experiment are a sweep directory ``results/sims/<name>[-gpu|-quick]/``
(:func:`scaling_sgd._src.sweep.plan` and :func:`~scaling_sgd._src.sweep.run_sweep`): a point
whose config hash is already complete there is reused, so an interrupted
``reproduce all`` resumes where it stopped.  Because a point folds ``beta`` and ``lr``
into its replicas, :meth:`Run.groups` splits it into groups of one setting
(:func:`scaling_sgd.analysis.core.replica_groups`, as the sweep analysis does).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

from scaling_sgd import ConfigError, load_run
from scaling_sgd._src import config as cfgmod
from scaling_sgd._src import sweep
from scaling_sgd._src.results import is_run_dir
from scaling_sgd._src.schema import LOGGED, REPLICATED, schema
from scaling_sgd.analysis.core import replica_groups, select_replicas
from scaling_sgd.analysis.emergence import run_emergence_times
from sims import record

REPO = Path(__file__).resolve().parents[1]
SIMS = REPO / "sims"
RUN_ROOT = REPO / "results" / "sims"
DATA_DIR = SIMS / "data"
MODES = ("cpu", "gpu", "quick")
_OWN_TABLES = ("experiment", "gpu", "quick")
_REPLAY = contextvars.ContextVar("replay", default=False)
_USED = contextvars.ContextVar("records_used", default=None)


def tagged(name: str, mode: str) -> str:
    """``name`` for the cpu settings, ``name-<mode>`` for the others (file names)."""
    return name if mode == "cpu" else f"{name}-{mode}"


@contextlib.contextmanager
def scoped(var: contextvars.ContextVar, value):
    """``var`` set to ``value`` inside the block (yields ``value``), restored after it."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def replaying():
    """Inside this block :func:`run_sweep` reads each experiment's record
    (:mod:`sims.record`) instead of running or reading its sweep: the analyses refit from
    the stored per-seed numbers, with no simulation."""
    return scoped(_REPLAY, True)


def records_used():
    """Yields the list of the record files (names in :data:`DATA_DIR`) that
    :func:`run_sweep` writes or reads inside this block: what an analysis is refitted from."""
    return scoped(_USED, [])


class ExperimentError(ValueError):
    """A bad experiment name or file: one line naming the key and what is accepted."""


def experiment_files() -> dict[str, Path]:
    """``{name: path}`` of every experiment config ``sims/NN_*.toml`` (sorted)."""
    return {p.stem: p for p in sorted(SIMS.glob("[0-9][0-9]_*.toml"))}


@dataclasses.dataclass
class Experiment:
    """A loaded experiment.

    Attributes:
        name: file stem, e.g. ``"02_emergence_vs_p"``.  mode: ``"cpu"``, ``"gpu"`` or
        ``"quick"``.  raw: the scaling-sgd tables (``[sweep]`` included) with the mode's
        overrides applied.  params: the ``[experiment]`` table.
    """

    name: str
    mode: str
    raw: dict
    params: dict

    @property
    def tag(self) -> str:
        return tagged(self.name, self.mode)

    @property
    def run_root(self) -> Path:
        return RUN_ROOT / self.tag

    @property
    def grid(self) -> dict:
        return self.plan().grid

    def plan(self, raw: dict | None = None) -> sweep.Plan:
        """The sweep plan of ``raw`` (default: the experiment's own tables)."""
        return sweep.plan(self.raw if raw is None else raw)

    def get(self, key: str, default=None):
        return self.params.get(key, default)


def load_experiment(name: str, mode: str = "cpu") -> Experiment:
    """Read ``sims/<name>.toml``, apply the ``[gpu]`` or ``[quick]`` overrides and resolve
    every sweep point (bad input is an :class:`ExperimentError` before any compute)."""
    files = experiment_files()
    if name not in files:
        raise ExperimentError(f"experiment: unknown name {name!r}; accepted: {', '.join(files)}, all")
    if mode not in MODES:
        raise ExperimentError(f"mode: got {mode!r}; accepted: {', '.join(MODES)}")
    with files[name].open("rb") as f:
        raw = tomllib.load(f)
    where = f"sims/{name}.toml" + ("" if mode == "cpu" else f" [{mode}]")
    try:
        if mode != "cpu":
            for dotted, value in raw.get(mode, {}).items():
                cfgmod.set_key(raw, dotted, value, where=where)
        params = dict(raw.get("experiment", {}))
        exp = Experiment(name, mode, {k: v for k, v in raw.items() if k not in _OWN_TABLES}, params)
        exp.plan()
    except ConfigError as e:
        raise ExperimentError(f"{e} (in {where})") from None
    return exp


@dataclasses.dataclass
class Run:
    """The results of one sweep point, or of one group of its replicas.

    Attributes:
        settings: swept key (``table.key``) -> value; in a group, ``teacher.beta`` and
            ``train.lr`` are the group's own scalars.
        cfg: the point's resolved config.  meta: its ``config.json`` fields other than
            the config (:attr:`scaling_sgd.Result.meta`).
        metrics: the ``metrics.npz`` arrays (a group: its replicas only).
    """

    settings: dict
    cfg: dict
    meta: dict
    metrics: dict

    def groups(self) -> list[Run]:
        """One :class:`Run` per ``(beta, lr)`` of the replicas, seeds as replicas."""
        out = []
        for (b, lr), idx in replica_groups(self.cfg, self.metrics):
            settings = {**self.settings, "teacher.beta": b, "train.lr": lr}
            out.append(Run(settings, self.cfg, self.meta, select_replicas(self.metrics, idx)))
        return out

    def single(self) -> Run:
        """This run, checked to hold one ``(beta, lr)`` group (its replicas differ only in
        ``seed``): for the experiments whose statistics pool every replica of a point."""
        n = len(replica_groups(self.cfg, self.metrics))
        if n != 1:
            raise ValueError(f"a point of {self.settings} holds {n} (beta, lr) groups; this experiment needs one per point")
        return self

    def common(self, name: str) -> float:
        """The value of the replicated setting ``name`` (``beta``, ``lr``) shared by every
        replica; ``ValueError`` if they differ (split with :meth:`groups` first)."""
        v = np.asarray(self.metrics[name], np.float64)
        if not np.all(v == v[0]):
            raise ValueError(f"the replicas have several values of {name}: split them with Run.groups()")
        return float(v[0])

    @property
    def ok(self) -> np.ndarray:
        """``(R,)`` bool: the replicas that did not diverge."""
        return ~np.asarray(self.metrics["diverged"], bool)

    @property
    def times(self) -> np.ndarray:
        """``(R, P)`` emergence steps with the config's observable and threshold (located
        between solver steps when the run did so)."""
        if "emergence_step" in self.metrics:  # a record's: computed from the whole run
            return np.asarray(self.metrics["emergence_step"], np.float64)
        return run_emergence_times(self.metrics, self.cfg)[0]

    def first(self, name: str) -> np.ndarray | None:
        """Observable ``name`` at the first log point, ``(R, ...)``; ``None`` when the run
        did not log it (``overlap`` is optional) or its record did not keep it."""
        return self._at(name, "first", 0)

    def last(self, name: str) -> np.ndarray | None:
        """Observable ``name`` at the last log point, ``(R, ...)`` (``None`` as :meth:`first`)."""
        return self._at(name, "last", -1)

    def at_start(self) -> dict:
        """The run's arrays at its first log point, each logged observable with a step axis
        of length 1 (``(R, 1, ...)``, as ``metrics.npz`` holds them), and the per-replica
        settings and teacher coefficients: what a prediction from the initial state reads."""
        out = {k: v[:, None] for k in LOGGED if (v := self.first(k)) is not None}
        return out | {k: self.metrics[k] for k in REPLICATED if k in self.metrics}

    def _at(self, name: str, which: str, i: int) -> np.ndarray | None:
        if name in self.metrics:
            return np.asarray(self.metrics[name])[:, i]
        return self.metrics.get(f"{name}@{which}")

    @property
    def step(self) -> np.ndarray:
        return np.asarray(self.metrics["step"], np.float64)


def run_sweep(exp: Experiment, raw: dict | None = None, part: str | None = None, force: bool = False) -> list[Run]:
    """Compute the points of ``exp``'s sweep that are not done (all with ``force``) and
    return every point's results in grid order.  The sweep's per-seed record
    ``sims/data/<tag>[.<part>].npz`` (:mod:`sims.record`) is written when the sweep ends, and
    also when it stops early (Ctrl-C, SIGTERM): then it holds the points done so far.  A point
    that the record holds and whose folder is gone (a fresh checkout) is read from the record,
    not computed again, so a sweep of many long points can be finished over several sittings,
    on several machines.  Inside :func:`replaying` the whole record is read instead, and
    nothing runs.

    Args:
        raw: another set of tables to plan (default: the experiment's own).
        part: a sub-directory of the experiment's run directory for such a second sweep.
    Raises:
        RuntimeError: when a point failed (its ``error.json`` says why).
    """
    pl = exp.plan(raw)
    file = record.path(DATA_DIR, exp.tag, part)
    used = _USED.get()
    if used is not None and file.name not in used:
        used.append(file.name)
    if _REPLAY.get():
        return [Run(*pt) for pt in record.read(file, [p.dir for p in pl.points])]
    out = exp.run_root if part is None else exp.run_root / part
    stored = {} if force else record.points(file)
    kept = {p.dir: stored[p.dir] for p in pl.points if p.dir in stored and not is_run_dir(out / p.dir)}
    t0 = time.perf_counter()
    todo = [p for p in pl.points if p.dir not in kept]
    try:
        counts = {"computed": 0, "already_done": 0}
        if todo:
            counts = sweep.run_sweep(dataclasses.replace(pl, points=todo), out, force=force, stream=sys.stdout)
    finally:  # also on Ctrl-C: the points done so far outlive this checkout
        runs = _write_record(exp, pl, out, kept, file)
    print(
        f"  [{exp.tag}{'/' + part if part else ''}] {counts['computed']} point(s) computed, "
        f"{counts['already_done'] + len(kept)} reused ({len(kept)} from the record), in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    failed = [p.dir for p in pl.points if p.dir not in runs]
    if failed:
        raise RuntimeError(f"{exp.tag}: {len(failed)} point(s) failed, see {out}/<point>/error.json: {', '.join(failed)}")
    return [runs[p.dir] for p in pl.points]


def _write_record(exp: Experiment, pl: sweep.Plan, out: Path, kept: dict, file: Path) -> dict[str, Run]:
    """Write the record of every point of ``pl`` that is done (a sound folder under ``out``, or
    ``kept`` from the record), in grid order; return those points' runs by folder name."""
    runs, points = {}, []
    for p in pl.points:
        if is_run_dir(out / p.dir):
            res = load_run(out / p.dir)
            r = Run(dict(p.settings), p.config, res.meta, res.metrics)
            arrays = record.compact(r.metrics, schema(p.config["train"]["engine"]), r.times, exp.get("record_whole", ()))
        elif p.dir in kept:
            r = Run(*kept[p.dir])
            arrays = r.metrics
        else:
            continue
        runs[p.dir] = r
        points.append((p.dir, r.settings, r.cfg, r.meta, arrays))
    if points:
        record.write(file, points)
    return runs


def pooled(runs: list[Run]) -> Run:
    """One run of the replicas of ``runs``, points that differ only in ``train.seed`` (an
    experiment that makes a point of each seed, so that every finished seed is kept): the
    per-replica arrays joined in grid order, the seeds listed in the config, the wall times
    added.  One run is returned as it is."""
    if len(runs) == 1:
        return runs[0]

    def strip(cfg):
        return {t: ({k: v for k, v in body.items() if k != "seed"} if t == "train" else body) for t, body in cfg.items()}

    first = runs[0]
    if any(strip(r.cfg) != strip(first.cfg) for r in runs[1:]):
        raise ValueError("pooled: the points differ in more than train.seed")
    dims = schema(first.cfg["train"]["engine"])

    def per_replica(k):
        return k == "emergence_step" or dims.get(k.split("@")[0], ("step",))[0] == "replica"

    metrics = {}
    for k, v in first.metrics.items():
        if per_replica(k):
            metrics[k] = np.concatenate([np.asarray(r.metrics[k]) for r in runs])
        elif any(not np.array_equal(np.asarray(r.metrics[k]), np.asarray(v)) for r in runs[1:]):
            raise ValueError(f"pooled: the points' {k!r} differ")
        else:
            metrics[k] = v
    seeds = [s for r in runs for s in np.atleast_1d(r.cfg["train"]["seed"]).tolist()]
    cfg = {**first.cfg, "train": {**first.cfg["train"], "seed": seeds}}
    added = {k: sum(r.meta.get(k, 0) for r in runs) for k in ("wall_time_s", "replicas", "diverged_replicas")}
    meta = {**first.meta, **added, "points": len(runs)}
    return Run({k: v for k, v in first.settings.items() if k != "train.seed"}, cfg, meta, metrics)
