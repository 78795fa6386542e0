"""Sweeps: a grid of configs run point by point into one directory (docs/model.md §4).

A config's ``[sweep]`` table maps config keys (``table.key`` or a short alias such as
``d``, ``beta``) to lists; their product is the grid.  ``zip`` is one axis whose entries
set several keys together (``zip = [{d = 64, steps = 2_000_000}, {d = 128, steps =
8_000_000}]``).  Values that are *traced* in the compiled program (``train.lr``,
``train.seed``, ``teacher.beta``) are not separate grid points: their lists are folded
into every point as replica lists, so they run as vmapped replicas of one program (inside
``zip`` they move with their entry).  The other keys (``d``, ``P``, ``m``, ``batch_size``,
``engine``, ``steps``, ...) make one point per combination.

This is the one sweep dialect: the command line and the experiments in ``sims/`` use
:func:`plan` and :func:`run_sweep`.

Layout of a sweep directory ``OUT``::

    OUT/sweep.json          the index (format 1): base config, swept keys, every point's
                            settings, state and directory.  A snapshot, rebuilt from the
                            point folders (under OUT/sweep.lock) when a job starts, when it
                            ends, and at most every sweep_state.INDEX_MIN_INTERVAL_S in between, so
                            the cost per point stays O(1) however large the sweep
    OUT/points/<id>/        an ordinary run folder (``runner.run``), written atomically as a
                            folder; <id> is the 16-hex ``config_hash`` of the point's resolved
                            config, and the point is done iff its folder holds a sound run of
                            that hash
    OUT/points/<id>/error.json   why a point failed (gone when it is retried)
    OUT/claims/<id>         the claim of a job computing the point (``O_EXCL``; kept fresh
                            by a heartbeat, taken over once its job is gone)

Resuming is the default: a point that is done is never recomputed (``--force`` does).  A
point whose files are unreadable or fail their checksum is reported in one line and
recomputed.  Because the state lives in the point folders, not in the process, ``kill -9``
at any moment loses at most the points being computed; several ``--shard i/n`` jobs, or
identical unsharded jobs, can write into one directory concurrently: each point is
claimed by one job, the others go on to other points and, at the end, wait for the
points still claimed elsewhere (taking them over if their job died).  SIGTERM releases
the job's claims before the process ends.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from . import config as cfgmod
from . import preflight
from .engines.base import REPLICA_SETTINGS
from .errors import ConfigError, InputError, OutputError
from .files import atomic_write_json, check_writable
from .sweep_state import (
    _ACTIVE_CLAIMS,
    CLAIM_POLL_S,
    INDEX_FORMAT,
    Claim,
    Index,
    Plan,
    Point,
    build_index,
    index_from_points,
    point_state,
    read_index_file,
)

__all__ = [
    "Point",
    "Plan",
    "Index",
    "Claim",
    "plan",
    "parse_shard",
    "shard_points",
    "run_sweep",
    "build_index",
    "index_from_points",
    "point_state",
    "main",
]

TRACED = tuple(sorted(REPLICA_SETTINGS.values()))  # folded into replicas, never points


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
        values = {}
        for name, v in zip(axes, combo):
            values.update(v if name == "zip" else {name: v})
        values.update(folded)
        praw = copy.deepcopy(base_raw)
        for name, v in values.items():
            cfgmod.set_key(praw, name, v, where="sweep")
        try:
            pcfg = cfgmod.resolve(praw)
        except ConfigError as e:
            msg = str(e).removeprefix(f"{e.key}: ")
            raise ConfigError(e.key, f"{msg} (in sweep point {fmt_settings(values)})") from None
        pid = cfgmod.config_hash(pcfg)
        if pid in seen:  # e.g. a value listed twice: one point, computed once
            continue
        seen.add(pid)
        settings = {name: pcfg[name.split(".")[0]][name.split(".")[1]] for name in values}
        points.append(Point(len(points), pid, settings, pcfg))
    if base is None:
        base = {t: v for t, v in points[0].config.items() if t != "sweep"}
    swept = [k for k in grid if k != "zip"] + [k for k in (grid.get("zip") or [{}])[0]]
    return Plan(base=base, swept=swept, grid=grid, points=points)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (1-based) -> ``(i, n)``; ``None`` -> ``(1, 1)``."""
    if text is None:
        return 1, 1
    m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", str(text))  # plain digits: int() would read 1_0 as 10
    i, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
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
    groups: dict = {}
    for p in points:
        groups.setdefault(p.spec.program, []).append(p)
    keys = sorted(groups, key=lambda k: k[1].dtype == "float64")  # stable: first appearance otherwise
    return [p for k in keys for p in groups[k]]


# -- point states and claims ------------------------------------------------------------
def _fmt_time(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


# What a sweep folder holds, by kind; anything else of these names is in the way.
LAYOUT = {"sweep.json": "file", "sweep.lock": "file", "points": "folder", "claims": "folder"}


def check_layout(out: Path) -> None:
    """The entries a sweep folder owns have the right kind (``points`` a folder, not a
    file; ``sweep.json`` a file, not a folder, ...) and none is a symbolic link.

    Raises:
        OutputError: one line naming the entry.
    """
    for name, kind in LAYOUT.items():
        p = out / name
        if not os.path.lexists(p):
            continue
        ok = not os.path.islink(p) and (p.is_dir() if kind == "folder" else p.is_file())
        if not ok:
            what = "a symbolic link" if os.path.islink(p) else ("a folder" if p.is_dir() else "not a regular file")
            raise OutputError(
                "--out", f"{str(p)!r} is {what}; accepted: a sweep folder whose {name!r} is a {kind} (move it away)"
            )


def check_owner(out: Path, pl: Plan, force: bool) -> None:
    """A sweep folder belongs to one sweep: refuse, unless ``force``, a folder holding
    points that this sweep does not have (listed in its ``sweep.json``, or, the index
    lost, found in ``points/``): another config's sweep, or this one with values taken
    out.  A sweep with values added resumes.  An index of an unknown format is refused
    in any case.

    Raises:
        OutputError: one line naming ``--out``.
    """
    old = read_index_file(out)
    if old is not None and old.get("format") != INDEX_FORMAT:
        raise OutputError(
            "--out",
            f"{str(out)!r} has a sweep.json of format {str(old.get('format'))[:20]}; accepted: format {INDEX_FORMAT} "
            "(another version wrote it)",
        )
    if force:
        return
    entries = old.get("points") if old is not None else None
    if isinstance(entries, list):
        theirs = {e.get("id") for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)}
    else:
        try:
            theirs = {
                e.name for e in os.scandir(out / "points") if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            }
        except OSError:
            return
    foreign = sorted(theirs - {p.id for p in pl.points})
    if foreign:
        raise OutputError(
            "--out",
            f"{str(out)!r} holds another sweep ({len(foreign)} of its {len(theirs)} points are not in this one, e.g. "
            f"points/{foreign[0][:16]}); accepted: another --out, or --force to run this sweep there too",
        )


def _preflight(todo: list[Point], out: Path) -> None:
    """Refuse, before anything runs, a sweep whose points do not fit: each point's memory
    estimate, and the disk space all of this job's results need together."""
    if not todo or preflight.skipped():
        return
    avail = preflight.available_memory()
    for p in todo:
        try:
            preflight.check_memory(p.spec, avail)
        except InputError as e:
            raise type(e)(e.key, f"{str(e).removeprefix(f'{e.key}: ')} (in sweep point {fmt_settings(p.settings)})") from None
    preflight.check_disk(out, sum(preflight.result_bytes(p.spec) for p in todo))


class _Job:
    """One ``run_sweep`` call: computes points it claims, writes their folders, counts."""

    def __init__(self, pl: Plan, out: Path, index: Index, force: bool, stream, todo: list[Point]):
        self.pl, self.out, self.index, self.force, self.stream = pl, out, index, force, stream
        self.n_todo = len(todo)
        self.k = 0
        self.t_start = time.perf_counter()
        self.counts = {"computed": 0, "failed": 0, "diverged_replicas": 0, "by_other_job": 0}
        # with --force a point counts as done elsewhere only if its folder changed since now
        self.initial = {p.id: self._signature(p) for p in todo} if force else {}

    def _signature(self, p: Point):
        try:
            st = (self.out / p.dir / "config.json").stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def done_elsewhere(self, p: Point) -> bool:
        """Done by another job while this one ran (with ``--force``: rewritten since this
        job started)."""
        if self.force and self._signature(p) == self.initial.get(p.id):
            return False
        return point_state(self.out, p, verify=True)[0] == "done"

    def compute(self, p: Point) -> None:
        """Run one claimed point into its folder (atomically), or record why it failed."""
        from .runner import run

        self.k += 1
        tag = f"[point {self.k}/{self.n_todo}]"
        d = self.out / p.dir
        print(f"{tag} {fmt_settings(p.settings)} -> {p.dir}", file=self.stream, flush=True)
        if os.path.lexists(d) and not d.is_dir():  # a damaged point that is not even a folder
            d.unlink()
        t0 = time.perf_counter()
        try:
            # force: the sweep owns points/<id>; a damaged or failed point folder is replaced whole
            # SIGTERM stays with the sweep's own handler (claims released, exit 143)
            _, meta = run(p.spec, d, label=f"{tag} ", force=True, stop_signals=(signal.SIGINT,))
        except Exception as e:  # a failed point is a result: record it, go on
            self.counts["failed"] += 1
            try:
                d.mkdir(parents=True, exist_ok=True)
                atomic_write_json(d / "error.json", {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            except OSError:
                pass
            status = f"FAILED ({type(e).__name__}: {e})"
        else:
            self.counts["computed"] += 1
            self.counts["diverged_replicas"] += meta["diverged_replicas"]
            status = f"done, {meta['diverged_replicas']}/{meta['replicas']} replicas diverged"
        el = time.perf_counter() - self.t_start
        eta = el / self.k * max(self.n_todo - self.k, 0)
        print(
            f"{tag} {status} in {_fmt_time(time.perf_counter() - t0)}; sweep elapsed {_fmt_time(el)}, ETA {_fmt_time(eta)}",
            file=self.stream,
            flush=True,
        )

    def claim_and_compute(self, p: Point) -> bool:
        """Compute ``p`` if this job can claim it; ``False`` if another live job holds it."""
        claim = Claim.acquire(self.out / "claims" / p.id, self.index.locked)
        if claim is None:
            return False
        with claim:
            if self.done_elsewhere(p):  # finished by another job between our scan and our claim
                self.counts["by_other_job"] += 1
            else:
                self.compute(p)
        self.index.maybe_write()
        return True


def run_sweep(pl: Plan, out, shard: tuple[int, int] = (1, 1), force: bool = False, stream=None) -> dict:
    """Compute this shard's points that are not done (all of them with ``force``).

    Each point is claimed (:class:`Claim`), computed, and written to ``out/points/<id>``
    as one atomic folder as soon as it finishes: nothing accumulates in memory, and the
    per-point bookkeeping is O(1) (the index is rebuilt at the start, at the end, and at
    most every :data:`.sweep_state.INDEX_MIN_INTERVAL_S`).  A point that raises is recorded as failed
    (``error.json``) and the sweep goes on; a point whose files are damaged is reported in
    one line and recomputed.  Points claimed by another live job are left to it; at the
    end this job waits for them (and takes over any whose job died), so that when it
    returns every point of the shard is done or failed.

    Returns counts ``{"points", "shard_points", "already_done", "computed", "failed",
    "damaged", "by_other_job", "diverged_replicas"}``.
    Raises:
        OutputError, ResourceError: before any compute (unwritable ``out``, a point too
            big for memory, results too big for the disk).
    """
    stream = stream or sys.stderr
    out = Path(out)
    preflight.check_path(out, whole=False)
    check_writable(out)
    check_layout(out)
    check_owner(out, pl, force)
    mine = shard_points(pl.points, *shard)
    states = {p.id: point_state(out, p, verify=True) for p in mine}
    damaged = [p for p in mine if states[p.id][0] in ("damaged", "partial")]
    todo = [p for p in mine if force or states[p.id][0] != "done"]
    _preflight(todo, out)  # before anything is printed or made: a refusal is one line
    (out / "points").mkdir(parents=True, exist_ok=True)
    for p in damaged:
        print(f"point {p.dir} ({fmt_settings(p.settings)}): {states[p.id][1]}; recomputing it", file=stream, flush=True)
    shard_txt = f", shard {shard[0]}/{shard[1]}: {len(mine)}" if shard[1] > 1 else ""
    bad_txt = f", {len(damaged)} damaged" if damaged else ""
    print(
        f"sweep {out}: {len(pl.points)} points over {', '.join(pl.swept) or 'nothing'}{shard_txt}; "
        f"{len(mine) - len(todo)} done{bad_txt}, {len(todo)} to run",
        file=stream,
        flush=True,
    )
    index = Index(out, pl, stream)
    Claim.clear_stale(out / "claims", index.locked)
    index.write()
    job = _Job(pl, out, index, force, stream, todo)
    waiting = [p for p in run_order(todo) if not job.claim_and_compute(p)]
    told = False
    while waiting:  # points another job holds: wait for them, take over those whose job died
        if not told:
            print(f"waiting for {len(waiting)} point(s) claimed by another job (see {out / 'claims'})", file=stream, flush=True)
            told = True
        time.sleep(CLAIM_POLL_S)
        still = []
        for p in waiting:
            if job.done_elsewhere(p):
                job.counts["by_other_job"] += 1
            elif not job.claim_and_compute(p):
                still.append(p)
        waiting = still
    Claim.clear_stale(out / "claims", index.locked)
    index.write()
    counts = {"points": len(pl.points), "shard_points": len(mine), "already_done": len(mine) - len(todo), "damaged": len(damaged)}
    counts.update(job.counts)
    # verified: a failed rewrite leaves the damaged folder in place, which must not count
    counts["repaired"] = sum(point_state(out, p, verify=True)[0] == "done" for p in damaged)
    return counts


@contextlib.contextmanager
def _sigterm_releases_claims():
    """While the sweep runs, SIGTERM (a Slurm pre-emption, ``kill``) releases this job's
    claims and ends the process at once with status 143, so that a requeued job can take
    its points straight away instead of waiting for the claims to go stale.

    ``os._exit`` rather than an exception: unwinding through JAX in the middle of a
    compilation can crash the interpreter at exit.  Nothing else needs cleaning: a point
    being written is either a complete folder or a temporary one (removed by the next
    writer, its process being gone).
    """

    def handler(signum, frame):
        for c in list(_ACTIVE_CLAIMS):
            c.release()
        os.write(2, b"scaling-sgd: terminated (SIGTERM): claims released; rerun the same command to resume\n")
        os._exit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(args) -> int:
    """``scaling-sgd sweep CONFIG.toml [--set ...] [--out DIR] [--shard I/N] [--force]``.

    Exit status 0 when every point of this shard is done, 1 when some failed, 2 on bad
    input (raised as an :class:`..errors.InputError` before any compute).
    """
    raw = cfgmod.apply_set(cfgmod.load(args.config), getattr(args, "set", None) or [])
    shard = parse_shard(getattr(args, "shard", None))
    pl = plan(raw)
    out = Path(args.out) if getattr(args, "out", None) else Path("results") / Path(args.config).stem
    with _sigterm_releases_claims():
        c = run_sweep(pl, out, shard=shard, force=bool(getattr(args, "force", False)))
    other = f", {c['by_other_job']} computed by another job" if c["by_other_job"] else ""
    print(
        f"sweep {out}: computed {c['computed']}, failed {c['failed']}, already done {c['already_done']}{other} "
        f"(of {c['shard_points']} in this shard, {c['points']} in all); index {out / 'sweep.json'}"
    )
    if c["repaired"]:
        print(f"repaired {c['repaired']} damaged point(s): recomputed")
    if c["damaged"] > c["repaired"]:
        print(f"could not repair {c['damaged'] - c['repaired']} damaged point(s): recomputing them failed (see above)")
    if c["diverged_replicas"]:
        print(f"warning: {c['diverged_replicas']} replica(s) diverged (see 'diverged' in sweep.json and each metrics.npz)")
    return 1 if c["failed"] else 0
