"""A sweep directory's state on disk: each point's state, the claims that keep identical
concurrent sweeps from computing a point twice, and the index ``sweep.json``.

:mod:`.sweep` plans and runs a sweep; everything here reads and writes the directory
only, and holds no compute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from .errors import OutputError, ResultsError
from .files import atomic_write_json, json_default, pid_alive, unlink_quietly
from .results import read_config_json, run_state
from .spec import RunSpec, build_spec

__all__ = [
    "Point",
    "Plan",
    "Claim",
    "Index",
    "build_index",
    "index_from_points",
    "point_state",
    "read_index_file",
    "index_problem",
    "read_sweep_index",
    "INDEX_FORMAT",
]

# The index is rewritten at most this often between the start and the end of a job (and
# never more often than 20 times the cost of one rewrite), so its O(points) rebuild costs
# O(1) per point.
INDEX_MIN_INTERVAL_S = 30.0
# A claim's heartbeat, the age after which a claim whose job is silent is taken over, and
# how often a job that waits for points claimed elsewhere looks again.
CLAIM_HEARTBEAT_S = 30.0
CLAIM_STALE_S = 300.0
CLAIM_POLL_S = 2.0
# A claim is written within moments of its creation: one still unreadable after this long
# was left by a job that crashed while writing it (a full disk) and is taken over.
CLAIM_UNREADABLE_S = 10.0
# The format of sweep.json this version writes and reads.
INDEX_FORMAT = 1
_POINT_ID = re.compile(r"^[0-9a-f]{16}$")
_HOST = socket.gethostname()
_ACTIVE_CLAIMS: set = set()  # claims this process holds (released on SIGTERM)


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

    @functools.cached_property
    def spec(self) -> RunSpec:
        """The point's run spec (built once, on first use)."""
        return build_spec(self.config)

    @property
    def replicas(self) -> int:
        return self.spec.R


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved sweep: ``base`` config (no sweep table), ``swept`` keys, ``grid``
    (swept key -> values), ``points`` in grid order."""

    base: dict
    swept: list
    grid: dict
    points: list


def point_state(out, p: Point, verify: bool = True) -> tuple[str, str]:
    """``(state, why)`` of a point on disk: ``done``, ``pending``, ``failed`` (its
    ``error.json``), ``damaged`` (unreadable files, a failed checksum with ``verify``,
    another config's files, not a folder) or ``partial`` (an interrupted run)."""
    d = Path(out) / p.dir
    if os.path.lexists(d) and not d.is_dir():
        return "damaged", "not a folder"
    state, why = run_state(d, expect_hash=p.id, verify=verify)
    if state == "absent":
        return ("failed", "") if (d / "error.json").is_file() else ("pending", "")
    return state, why


class Claim:
    """A job's claim on a point: the file ``OUT/claims/<id>``, created with ``O_EXCL`` (so
    one job wins, also on NFS), holding its host and pid, and touched every
    :data:`CLAIM_HEARTBEAT_S` by a background thread while the point is computed.

    A claim is *stale* when its process is gone (same host) or it has not been touched for
    :data:`CLAIM_STALE_S` (a job on another host that died); a stale claim is taken over
    under the sweep lock, so only one job takes it.
    """

    def __init__(self, path: Path):
        self.path = path
        _ACTIVE_CLAIMS.add(self)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"claim-{path.name}")
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(CLAIM_HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # released or taken over meanwhile
                return

    def release(self) -> None:
        _ACTIVE_CLAIMS.discard(self)
        self._stop.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    @staticmethod
    def _create(path: Path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"host": _HOST, "pid": os.getpid(), "time": time.time()}, f)
        except OSError as e:  # a full disk: leave no empty claim behind for others to wait on
            unlink_quietly(path)
            raise OutputError(
                "--out", f"cannot write the claim {str(path)!r} ({e.strerror or e}); nothing was computed"
            ) from None
        return Claim(path)

    @staticmethod
    def stale(path: Path) -> bool:
        """Whether the claim at ``path`` belongs to a job that is gone (``False`` if none)."""
        try:
            st = path.stat(follow_symlinks=False)
            info = json.loads(path.read_bytes().decode("utf-8")) if path.is_file() else None
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            info = None
        age = time.time() - st.st_mtime
        if not (isinstance(info, dict) and isinstance(info.get("host"), str) and isinstance(info.get("pid"), int)):
            return age > CLAIM_UNREADABLE_S  # empty, garbage or not a file: no job is behind it
        if info.get("host") == _HOST and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
            if not pid_alive(info["pid"]):
                return True
        return age > CLAIM_STALE_S

    @classmethod
    def acquire(cls, path: Path, lock) -> Claim | None:
        """Claim ``path`` (taking over a stale claim under ``lock``), or ``None`` if another
        live job holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        c = cls._create(path)
        if c is not None or not cls.stale(path):
            return c
        with lock():
            if cls.stale(path):  # still stale under the lock: this job takes it over
                _remove(path)
        return cls._create(path)

    @classmethod
    def clear_stale(cls, folder: Path, lock) -> None:
        """Remove the stale claims in ``folder`` (left by jobs killed after their point
        was written, or while computing it)."""
        try:
            paths = [p for p in folder.iterdir() if not p.name.startswith(".")]
        except OSError:
            return
        stale = [p for p in paths if cls.stale(p)]
        if not stale:
            return
        with lock():
            for p in stale:
                if cls.stale(p):
                    _remove(p)


def _remove(path: Path) -> None:
    """Remove a stale claim (a folder in its place too)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        unlink_quietly(path)


# -- the index ------------------------------------------------------------------------
class Index:
    """The ``sweep.json`` of one sweep directory, rebuilt from the point folders.

    It remembers what it read of finished points (keyed by their ``config.json``'s mtime
    and size), so a rebuild reads only what changed; :meth:`maybe_write` throttles rebuilds
    so that their cost per point stays O(1).
    """

    def __init__(self, out, pl: Plan, stream=None):
        self.out = Path(out)
        self.pl = pl
        self.stream = stream or sys.stderr
        self._done: dict = {}  # (path, mtime_ns, size) -> (state, why, replicas, diverged)
        self._warned_lock = False
        self._last_write = -float("inf")
        self._last_cost = 0.0

    @contextlib.contextmanager
    def locked(self):
        """Exclusive advisory lock (``fcntl.flock``) on ``OUT/sweep.lock``."""
        import fcntl

        path = self.out / "sweep.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except OSError as e:  # e.g. ENOLCK on an NFS mount without a lock daemon
                if not self._warned_lock:
                    print(f"warning: cannot lock {path} ({e}); writing the index unlocked", file=self.stream)
                    self._warned_lock = True
                yield  # the index is rebuilt from disk at every write: a lost race heals at the next one
                return
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _finished(self, p: Point, d: Path, cj: Path, st) -> tuple:
        key = (str(cj), st.st_mtime_ns, st.st_size)
        if key not in self._done:
            try:
                doc = read_config_json(d)
            except ResultsError as e:
                info = ("damaged", str(e).removeprefix(f"{e.key}: ").split(";")[0], p.replicas, 0)
            else:
                state, why = "done", ""
                if doc.get("hash") != p.id:
                    state, why = "damaged", f"config.json is another config's (hash {doc.get('hash')})"
                elif doc.get("partial"):
                    state, why = "partial", "interrupted"
                elif not (d / "metrics.npz").is_file():
                    state, why = "damaged", "metrics.npz is missing"
                info = (state, why, int(doc.get("replicas", p.replicas)), int(doc.get("diverged_replicas", 0)))
            self._done[key] = info
        return self._done[key]

    def entry(self, p: Point) -> dict:
        d = self.out / p.dir
        e = {"id": p.id, "dir": p.dir, "settings": p.settings, "replicas": p.replicas, "diverged": 0}
        cj = d / "config.json"
        try:
            st = cj.stat()
        except OSError:
            st = None
        if st is not None:
            state, why, e["replicas"], e["diverged"] = self._finished(p, d, cj, st)
            e["state"] = state
            if why:
                e["problem"] = why
        elif os.path.lexists(d) and not d.is_dir():
            e["state"], e["problem"] = "damaged", "not a folder"
        elif (d / "error.json").is_file():
            e["state"] = "failed"
            try:
                e["error"] = json.loads((d / "error.json").read_text())["error"]
            except (OSError, ValueError, KeyError, TypeError):
                e["error"] = "unknown error"
        elif (self.out / "claims" / p.id).exists() and not Claim.stale(self.out / "claims" / p.id):
            e["state"] = "running"
        else:
            e["state"] = "pending"
        return e

    def build(self) -> dict:
        """The ``sweep.json`` object, every point's state read from disk."""
        pl = self.pl
        return {
            "format": INDEX_FORMAT,
            "base_config": pl.base,
            "swept": pl.swept,
            "grid": pl.grid,
            "points": [self.entry(p) for p in pl.points],
        }

    def write(self) -> dict:
        """Rebuild ``sweep.json`` from the point folders and write it if it changed.

        Under the lock no other job is between reading and writing the index, so concurrent
        jobs never lose each other's entries (each entry comes from disk, not from the
        process that computed it), and temporary files left by a killed writer are stale.
        """
        t0 = time.perf_counter()
        path = self.out / "sweep.json"
        with self.locked():
            for tmp in self.out.glob(".sweep.json.*.tmp"):
                tmp.unlink(missing_ok=True)
            index = json.loads(json.dumps(self.build(), default=json_default))
            try:
                old = json.loads(path.read_bytes().decode("utf-8"))
            except FileNotFoundError:
                old = None
            except (OSError, ValueError):
                old = None
                print(f"sweep.json in {self.out} was unreadable: rebuilt from the point folders", file=self.stream)
            if old != index:  # an idle rerun touches no file
                atomic_write_json(path, index)
        self._last_cost = time.perf_counter() - t0
        self._last_write = time.monotonic()
        return index

    def maybe_write(self) -> dict | None:
        """:meth:`write` if the last write is old enough (see :data:`INDEX_MIN_INTERVAL_S`):
        the per-point bookkeeping of a sweep, O(1) amortised."""
        if time.monotonic() - self._last_write >= max(INDEX_MIN_INTERVAL_S, 20.0 * self._last_cost):
            return self.write()
        return None


def build_index(out, pl: Plan) -> dict:
    """The ``sweep.json`` object of ``out`` (see :class:`Index`)."""
    return Index(out, pl).build()


def _flat(cfg: dict) -> dict:
    return {f"{t}.{k}": v for t, body in cfg.items() if isinstance(body, dict) and t != "sweep" for k, v in body.items()}


def index_from_points(out) -> dict:
    """A ``sweep.json`` object rebuilt from ``OUT/points/*`` alone (when ``sweep.json`` is
    lost or unreadable): every point folder with a readable ``config.json``, its state,
    and as ``swept`` the config keys whose values differ between points."""
    out = Path(out)
    found = []
    root = out / "points"
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith("."):
            continue
        try:
            doc = read_config_json(d)
            cfg = doc.get("config", doc)
        except ResultsError as e:
            found.append((d, None, str(e).removeprefix(f"{e.key}: ").split(";")[0]))
            continue
        found.append((d, cfg, doc))
    flats = {d.name: _flat(cfg) for d, cfg, _ in found if cfg is not None}
    keys = sorted({k for f in flats.values() for k in f})
    swept = [
        k
        for k in keys
        if not k.startswith(("analysis.", "train.progress"))
        and len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1
    ]
    points = []
    for d, cfg, info in found:
        e = {"id": d.name, "dir": f"points/{d.name}", "settings": {k: flats[d.name].get(k) for k in swept} if cfg else {}}
        if cfg is None:
            e.update(state="damaged", problem=info)
        elif info.get("partial"):
            e.update(state="partial")
        elif not (d / "metrics.npz").is_file():
            e.update(state="damaged", problem="metrics.npz is missing")
        else:
            e.update(state="done", replicas=info.get("replicas"), diverged=info.get("diverged_replicas", 0))
        points.append(e)
    return {"format": INDEX_FORMAT, "base_config": {}, "swept": swept, "grid": {}, "points": points, "rebuilt_from_points": True}


def read_index_file(out) -> dict | None:
    """The JSON object in ``OUT/sweep.json`` as written, or ``None`` (missing, unreadable,
    not an object).  Not checked: see :func:`read_sweep_index`."""
    try:
        doc = json.loads((Path(out) / "sweep.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def index_problem(index: dict) -> str | None:
    """Why an index cannot be trusted, or ``None``: every entry an object with a point id
    (a 16-hex config hash) listed once, its folder ``points/<id>`` (never a path outside
    the sweep folder or another point's), its settings a table."""
    points = index.get("points")
    if not isinstance(points, list):
        return "has no list of points"
    seen = set()
    for e in points:
        if not isinstance(e, dict):
            return "has an entry that is not an object"
        pid = e.get("id")
        if not (isinstance(pid, str) and _POINT_ID.match(pid)):
            return f"has a point id {str(pid)[:40]!r} that is not a config hash"
        if e.get("dir") != f"points/{pid}":
            return f"puts point {pid} in {str(e.get('dir'))[:60]!r}; accepted: points/{pid}"
        if pid in seen:
            return f"lists point {pid} twice"
        seen.add(pid)
        if not isinstance(e.get("settings", {}), dict):
            return f"has settings of point {pid} that are not a table"
    if not isinstance(index.get("swept", []), list):
        return "has 'swept' that is not a list"
    return None


def read_sweep_index(out) -> dict:
    """The index of a sweep folder, checked (:func:`index_problem`); rebuilt from the
    point folders (:func:`index_from_points`) when ``sweep.json`` is missing, unreadable
    or not to be trusted, ``index["rebuilt_from_points"]`` then saying why.

    Raises:
        ResultsError: ``out`` is not a sweep folder (neither ``sweep.json`` nor a
            ``points`` folder), or its ``sweep.json`` has another format.
    """
    out = Path(out)
    f, pts = out / "sweep.json", out / "points"
    if os.path.lexists(pts) and not pts.is_dir():
        raise ResultsError(str(out), "'points' is not a folder; accepted: a sweep folder (sweep.json + points/)")
    if not os.path.lexists(f) and not pts.is_dir():
        what = "a run folder" if (out / "config.json").is_file() else "not a sweep folder"
        raise ResultsError(str(out), f"{what} (no sweep.json or points/); accepted: a sweep folder (sweep.json + points/)")
    why = "missing"
    if os.path.lexists(f) and not f.is_file():
        why = "not a file"
    elif os.path.lexists(f):
        index = read_index_file(out)
        if index is None:
            why = "unreadable"
        elif "format" in index and index["format"] != INDEX_FORMAT:
            raise ResultsError(
                str(out),
                f"sweep.json has format {str(index['format'])[:20]}; accepted: format {INDEX_FORMAT} (another version wrote it)",
            )
        else:
            problem = index_problem(index)
            if problem is None:
                return index
            why = f"not to be trusted (it {problem})"
    index = index_from_points(out)
    index["rebuilt_from_points"] = f"sweep.json {why}: rebuilt from {len(index['points'])} point folders"
    return index


# -- running ---------------------------------------------------------------------------
