"""Sweeps: a grid of configs run point by point into one directory (SPEC section 4).

A config's ``[sweep]`` table maps config keys (``table.key`` or a short alias such as
``d``, ``beta``) to lists; their product is the grid.  Values that are *traced* in the
compiled program (``train.lr``, ``train.seed``, ``teacher.beta``) are not separate grid
points: their lists are folded into every point as replica lists, so they run as vmapped
replicas of one program.  The other keys (``d``, ``P``, ``m``, ``batch_size``, ``engine``,
``steps``, ...) make one point per combination.

Layout of a sweep directory ``OUT``::

    OUT/sweep.json          the index (format 1): base config, swept keys, every point's
                            settings, state and directory; rebuilt from disk and rewritten
                            atomically, under OUT/sweep.lock, after every point
    OUT/points/<id>/        an ordinary run directory (``runner.run``); <id> is the
                            16-hex ``config_hash`` of the point's resolved config, and the
                            point is done iff its ``config.json`` exists (written last)
    OUT/points/<id>/error.json   why a point failed (removed when it is retried)

Resuming is the default: a point that is done is never recomputed (``--force`` does).
Because the state lives in the point directories, not in the process, ``kill -9`` at
any moment loses at most the point being computed, and several ``--shard i/n`` jobs can
write into one directory concurrently: each rebuilds the whole index from disk under an
exclusive ``flock`` before writing it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from . import config as cfgmod
from .config import ConfigError
from .results import _json_default, atomic_write_json, is_run_dir

__all__ = ["Point", "Plan", "plan", "parse_shard", "shard_points", "run_sweep", "build_index", "main"]

TRACED = tuple(f"{t}.{k}" for t, k in sorted(cfgmod.REPLICA_KEYS))  # folded into replicas, never points


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point.

    Attributes:
        index: position in grid order (the order of ``sweep.json``; shards split on it).
        id: ``config_hash(config)``, also the directory name ``points/<id>``.
        settings: swept key -> resolved value (a replica list for traced keys).
        config: the point's resolved config (an ordinary run config, empty ``sweep``).
    """

    index: int
    id: str
    settings: dict
    config: dict

    @property
    def dir(self) -> str:
        return f"points/{self.id}"

    @property
    def replicas(self) -> int:
        return len(cfgmod.replica_grid(self.config)["seed"])


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved sweep: ``base`` config (no sweep table), ``swept`` keys, ``grid``
    (swept key -> values), ``points`` in grid order."""

    base: dict
    swept: list
    grid: dict
    points: list


def _fmt_value(v) -> str:
    if isinstance(v, list):
        if len(v) > 4:
            return f"[{v[0]},...,{v[-1]}]({len(v)})"
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def fmt_settings(settings: dict) -> str:
    return " ".join(f"{k}={_fmt_value(v)}" for k, v in settings.items()) or "(base config)"


def plan(raw: dict) -> Plan:
    """Expand a raw config (``--set`` applied) with a ``[sweep]`` table into its points.

    Every point is resolved here, before any compute: an invalid combination (say
    ``P > d``) raises :class:`ConfigError` naming the key and the point.  The base config
    itself need only be valid once the swept keys are set (``P = 200`` with ``d`` swept
    over ``[256, 512]``); if it is not valid on its own, ``base`` is the first point's.
    """
    body = raw.get("sweep", {})
    if not isinstance(body, Mapping):
        raise ConfigError("sweep", "must be a table")
    grid = cfgmod.check_sweep(body)
    try:
        base = {t: v for t, v in cfgmod.resolve(raw).items() if t != "sweep"}
    except ConfigError:
        base = None  # maybe valid point by point; if not, a point names the problem below
    base_raw = {t: v for t, v in copy.deepcopy(dict(raw)).items() if t != "sweep"}
    folded = {k: v for k, v in grid.items() if k in TRACED}
    axes = {k: v for k, v in grid.items() if k not in TRACED}
    points: list[Point] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes.values()):
        values = {**dict(zip(axes, combo)), **folded}
        praw = copy.deepcopy(base_raw)
        for name, v in values.items():
            table, key = name.split(".")
            praw.setdefault(table, {})[key] = copy.deepcopy(v)
        try:
            pcfg = cfgmod.resolve(praw)
        except ConfigError as e:
            msg = str(e).removeprefix(f"{e.key}: ")
            raise ConfigError(e.key, f"{msg} (in sweep point {fmt_settings(values)})") from None
        pid = cfgmod.config_hash(pcfg)
        if pid in seen:  # e.g. a value listed twice: one point, computed once
            continue
        seen.add(pid)
        settings = {name: pcfg[name.split(".")[0]][name.split(".")[1]] for name in grid}
        points.append(Point(len(points), pid, settings, pcfg))
    if base is None:
        base = {t: v for t, v in points[0].config.items() if t != "sweep"}
    return Plan(base=base, swept=list(grid), grid=grid, points=points)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (1-based) -> ``(i, n)``; ``None`` -> ``(1, 1)``."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        i = n = 0
    if not (n >= 1 and 1 <= i <= n):
        raise ConfigError("--shard", f"got {text!r}; accepted: I/N with integers 1 <= I <= N, e.g. 2/8")
    return i, n


def shard_points(points: list[Point], i: int, n: int) -> list[Point]:
    """Shard ``i`` of ``n``: the points whose grid index is ``i - 1`` mod ``n``.

    Round robin over grid order interleaves cheap and expensive points (a ``d`` axis), so
    the jobs of an array take similar times; the shards are disjoint and together complete.
    """
    return [p for p in points if p.index % n == i - 1]


def run_order(points: list[Point]) -> list[Point]:
    """Points grouped by compiled program (shapes and code paths), so that each program is
    compiled once and reused by the points after it.  float64 groups go last: they switch
    JAX's process-wide x64 mode on, which must not touch float32 points run after them."""
    from .runner import build

    groups: dict = {}
    for p in points:
        static, reps, steps = build(p.config)
        groups.setdefault((static, reps.R, len(steps)), []).append(p)
    keys = sorted(groups, key=lambda k: k[0].dtype == "float64")  # stable: first appearance otherwise
    return [p for k in keys for p in groups[k]]


# -- the index ------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive advisory lock (``fcntl.flock``) for the read-modify-write of the index."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on an NFS mount without a lock daemon
            if not _WARNED.get("flock"):
                print(f"warning: cannot lock {path} ({e}); writing the index unlocked", file=sys.stderr)
                _WARNED["flock"] = True
            yield  # the index is rebuilt from disk at every write: a lost race heals at the next one
            return
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_WARNED: dict = {}
_DONE_CACHE: dict = {}  # (path, mtime_ns) -> (replicas, diverged): done points are read once


def _entry(out: Path, p: Point) -> dict:
    d = out / p.dir
    e = {"id": p.id, "dir": p.dir, "settings": p.settings, "replicas": p.replicas, "diverged": 0}
    if is_run_dir(d):
        cj = d / "config.json"
        key = (str(cj), cj.stat().st_mtime_ns)
        if key not in _DONE_CACHE:
            meta = json.loads(cj.read_text())
            _DONE_CACHE[key] = (int(meta["replicas"]), int(meta["diverged_replicas"]))
        e["replicas"], e["diverged"] = _DONE_CACHE[key]
        e["state"] = "done"
    elif (d / "error.json").is_file():
        e["state"] = "failed"
        try:
            e["error"] = json.loads((d / "error.json").read_text())["error"]
        except (ValueError, KeyError):  # pragma: no cover - written atomically, so unlikely
            e["error"] = "unknown error"
    else:
        e["state"] = "pending"
    return e


def build_index(out: Path, pl: Plan) -> dict:
    """The ``sweep.json`` object, every point's state read from disk."""
    return {
        "format": 1,
        "base_config": pl.base,
        "swept": pl.swept,
        "grid": pl.grid,
        "points": [_entry(out, p) for p in pl.points],
    }


def write_index(out: Path, pl: Plan) -> dict:
    """Rebuild ``sweep.json`` from the point directories and write it if it changed.

    Under the lock no other job is between reading and writing the index, so concurrent
    shard jobs never lose each other's entries (each entry comes from disk, not from the
    process that computed it), and temporary files left by a killed writer are stale.
    """
    out = Path(out)
    path = out / "sweep.json"
    with _locked(out / "sweep.lock"):
        for tmp in out.glob(".sweep.json.*.tmp"):
            tmp.unlink(missing_ok=True)
        index = json.loads(json.dumps(build_index(out, pl), default=_json_default))
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != index:  # an idle rerun touches no file
            atomic_write_json(path, index)
    return index


# -- running ---------------------------------------------------------------------------
def _fmt_time(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def run_sweep(pl: Plan, out, shard: tuple[int, int] = (1, 1), force: bool = False, stream=None) -> dict:
    """Compute this shard's points that are not done (all of them with ``force``).

    Each point is written to ``out/points/<id>`` as soon as it finishes and the index is
    rewritten: nothing accumulates in memory.  A point that raises is recorded as failed
    (``error.json``) and the sweep goes on.  Returns counts ``{"points", "shard_points",
    "already_done", "computed", "failed", "diverged_replicas"}``.
    """
    from .runner import run

    stream = stream or sys.stderr
    out = Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    mine = shard_points(pl.points, *shard)
    todo = [p for p in mine if force or not is_run_dir(out / p.dir)]
    shard_txt = f", shard {shard[0]}/{shard[1]}: {len(mine)}" if shard[1] > 1 else ""
    print(
        f"sweep {out}: {len(pl.points)} points over {', '.join(pl.swept) or 'nothing'}{shard_txt}; "
        f"{len(mine) - len(todo)} done, {len(todo)} to run",
        file=stream,
        flush=True,
    )
    write_index(out, pl)
    counts = {"points": len(pl.points), "shard_points": len(mine), "already_done": len(mine) - len(todo)}
    counts.update(computed=0, failed=0, diverged_replicas=0)
    t_start = time.perf_counter()
    todo = run_order(todo)
    for k, p in enumerate(todo, start=1):
        tag = f"[point {k}/{len(todo)}]"
        d = out / p.dir
        print(f"{tag} {fmt_settings(p.settings)} -> {p.dir}", file=stream, flush=True)
        (d / "config.json").unlink(missing_ok=True)  # --force: not complete until rewritten
        (d / "error.json").unlink(missing_ok=True)
        for tmp in d.glob(".*.tmp"):  # left by a killed writer; never read as complete
            tmp.unlink()
        t0 = time.perf_counter()
        try:
            _, meta = run(p.config, d, label=f"{tag} ")
        except Exception as e:  # a failed point is a result: record it, go on
            counts["failed"] += 1
            atomic_write_json(d / "error.json", {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            status = f"FAILED ({type(e).__name__}: {e})"
        else:
            counts["computed"] += 1
            counts["diverged_replicas"] += meta["diverged_replicas"]
            status = f"done, {meta['diverged_replicas']}/{meta['replicas']} replicas diverged"
        write_index(out, pl)
        el = time.perf_counter() - t_start
        eta = el / k * (len(todo) - k)
        print(
            f"{tag} {status} in {_fmt_time(time.perf_counter() - t0)}; sweep elapsed {_fmt_time(el)}, ETA {_fmt_time(eta)}",
            file=stream,
            flush=True,
        )
    return counts


def main(args) -> int:
    """``scaling-sgd sweep CONFIG.toml [--set ...] [--out DIR] [--shard I/N] [--force]``.

    Exit status 0 when every point of this shard is done, 1 when some failed, 2 on bad
    input (raised as :class:`ConfigError` before any compute).
    """
    raw = cfgmod.apply_set(cfgmod.load(args.config), getattr(args, "set", None) or [])
    shard = parse_shard(getattr(args, "shard", None))
    pl = plan(raw)
    out = Path(args.out) if getattr(args, "out", None) else Path("results") / Path(args.config).stem
    c = run_sweep(pl, out, shard=shard, force=bool(getattr(args, "force", False)))
    print(
        f"sweep {out}: computed {c['computed']}, failed {c['failed']}, already done {c['already_done']} "
        f"(of {c['shard_points']} in this shard, {c['points']} in all); index {out / 'sweep.json'}"
    )
    if c["diverged_replicas"]:
        print(f"warning: {c['diverged_replicas']} replica(s) diverged (see 'diverged' in sweep.json and each metrics.npz)")
    return 1 if c["failed"] else 0
