"""Preflight: refuse, before compiling, a run that cannot finish or cannot be saved.

Checked from the run spec (:class:`..spec.RunSpec`) and the output path alone, in milliseconds:

* the output folder (:func:`check_target`): creatable and writable, not a file, and not
  holding another config's results (the output-safety rule of :mod:`..results`);
* disk: the expected size of the results against the free space where they go;
* memory: the engine's own estimate (:meth:`..engines.base.Engine.memory`), the logged
  observables and the runtime, against what the backend has: free device memory on an
  accelerator, ``MemAvailable`` (and a cgroup limit) on a CPU.

Each failure is one line naming what to change (:class:`..errors.ResourceError`), with
the engine's advice for its largest part, e.g. ``memory: needs ~245 GB (sgd input blocks
240 GB, ...), 19 GB available on cpu; reduce replicas or data.d, or use engine "reduced"``.  The estimates are deliberately not
pessimistic (a refused run that would have fitted is worse than a late out-of-memory
error); ``SCALING_SGD_NO_PREFLIGHT=1`` skips the disk and memory checks.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from .engines.base import STATE_COPIES
from .errors import OutputError, ResourceError
from .files import check_writable, fmt_bytes, nearest_existing
from .results import TMP_DIR, foreign_entries, stored_hash
from .spec import RunSpec

__all__ = [
    "check",
    "check_target",
    "check_memory",
    "check_disk",
    "memory_estimate",
    "result_bytes",
    "available_memory",
    "SKIP_ENV",
]

SKIP_ENV = "SCALING_SGD_NO_PREFLIGHT"
# The compiler, the runtime and the libraries a run imports (benchmarks/NOTES.md, "Memory
# estimate of the preflight": 0.52 to 0.58 GB of peak RSS for one replica on CPU).
RUNTIME_BYTES = 550_000_000
# The logs on the host after the run: the copy from the device, the runner's selection of
# the log points, the compressed metrics.npz in memory and the bytes taken from it.
HOST_LOG_COPIES = 4
# What every replica costs beyond its arrays: the driver's per-replica buffers (keys,
# flags, replicated settings, their padding) and the compiled program's per-replica
# temporaries (measured: ~20 KB a replica at d = 8, P = m = 2, with or without the
# overlap logs, of which the arrays above explain ~10 KB).
PER_REPLICA_BYTES = 10_000
# Size of config.json, the analysis files and the figures of one run (upper bound).
OVERHEAD_BYTES = 2_000_000


def _logged_bytes(spec: RunSpec) -> int:
    """Bytes of every observable at every log point (the arrays of the run's metrics schema
    with dimensions ``(replica, step, ...)``)."""
    logged = (dims for dims in spec.metrics.values() if dims[:2] == ("replica", "step"))
    return sum(math.prod(spec.sizes[d] for d in dims) for dims in logged) * spec.itemsize


def memory_estimate(spec: RunSpec) -> dict[str, int]:
    """Bytes a run holds at its peak, by part (``{label: bytes}``), from its shapes: the
    engine's own parts (:meth:`.engines.base.Engine.memory`), the logs (every log point of
    every observable, kept on the device for the padded replicas and stacked at the end,
    then :data:`HOST_LOG_COPIES` times on the host while ``metrics.npz`` is written),
    :data:`PER_REPLICA_BYTES` a replica, and :data:`RUNTIME_BYTES` for the compiler and
    the runtime."""
    R, Rc = spec.sizes["replica"], spec.R_compiled  # the program runs the padded replicas
    parts = dict(spec.engine.memory(spec.static, Rc, spec.sizes["step"]))
    parts["logs"] = int(STATE_COPIES * _logged_bytes(spec) * Rc / R)
    parts["logs on the host"] = int(HOST_LOG_COPIES * _logged_bytes(spec))
    parts["per-replica buffers"] = PER_REPLICA_BYTES * Rc
    parts["compiler and runtime"] = RUNTIME_BYTES
    return parts


def result_bytes(spec: RunSpec) -> int:
    """Upper bound of the bytes a run writes (``metrics.npz`` uncompressed, plus
    ``config.json``, analysis files and figures)."""
    R, T, P = spec.sizes["replica"], spec.sizes["step"], spec.sizes["direction"]
    return int(_logged_bytes(spec) + R * (P + 8) * 8 + T * 8 + OVERHEAD_BYTES)


# -- what is available ------------------------------------------------------------------------
def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# Where the cgroup file systems are mounted (a parameter for tests).
CGROUP_ROOT = "/sys/fs/cgroup"
# A memory budget for scaling-sgd itself, in GB (e.g. a share of a shared node).
LIMIT_ENV = "SCALING_SGD_MEMORY_LIMIT"


def _read_room(limit_file: str, used_file: str) -> int | None:
    """``limit - used`` of one cgroup, or ``None`` when it has no limit or cannot be read."""
    try:
        with open(limit_file) as f:
            limit = f.read().strip()
        with open(used_file) as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:  # unlimited
        return None
    return max(int(limit) - used, 0)


def _cgroup_available() -> int | None:
    """Room left under this process's cgroup memory limits (v2, then v1): the smallest
    over its cgroup and every cgroup above it (Slurm sets the job's limit on a parent of
    the step's cgroup; a container's on its root), or ``None`` if none has a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, ctrl, path = parts
        if hier == "0" and ctrl == "":
            base, names = CGROUP_ROOT, ("memory.max", "memory.current")
        elif "memory" in ctrl.split(","):
            base, names = f"{CGROUP_ROOT}/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        p = Path(path)
        for level in (p, *p.parents):  # the cgroup, then each one above it up to the root
            d = base + str(level).rstrip("/")
            room = _read_room(f"{d}/{names[0]}", f"{d}/{names[1]}")
            if room is not None:
                rooms.append(room)
    return min(rooms) if rooms else None


def memory_limit() -> int | None:
    """The budget :data:`LIMIT_ENV` sets, in bytes (``None`` when unset).

    Raises:
        ResourceError: the variable is not a positive number of GB.
    """
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        gb = float(text)
    except ValueError:
        gb = float("nan")
    if not (math.isfinite(gb) and gb > 0):
        raise ResourceError(LIMIT_ENV, f"got {text[:40]!r}; accepted: a positive number of GB, e.g. 16")
    return int(gb * 1e9)


def _address_space_available() -> int | None:
    """Room left under this process's address-space limit (``ulimit -v``, ``RLIMIT_AS``),
    or ``None`` when it has none: the limit less the address space in use (``VmSize``)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            used = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return max(int(soft) - used, 0)


def _host_available() -> tuple[int | None, str]:
    avail = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    if avail:
        return min(avail), "host memory"
    try:  # no /proc (macOS): physical memory is the bound
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None, "host memory"


def available_memory() -> tuple[int | None, str, int]:
    """``(bytes, where, devices)``: free memory per device where the run's arrays live.

    On an accelerator: the smallest ``bytes_limit - bytes_in_use`` over the local devices
    (the replica axis is split across them).  On a CPU: ``MemAvailable`` from
    ``/proc/meminfo`` and the room under the cgroup limits (Slurm, a container), whichever
    is smallest.  :data:`LIMIT_ENV` (GB), when set, caps either.  ``bytes`` is ``None``
    when the backend does not say.
    """
    import jax

    limit = memory_limit()
    devs = jax.local_devices()
    if limit is not None:
        avail, where, n = _available(jax, devs)
        if avail is None or limit < avail:
            return limit, f"the budget {LIMIT_ENV}={os.environ[LIMIT_ENV].strip()} GB", n
        return avail, where, n
    return _available(jax, devs)


def _available(jax, devs) -> tuple[int | None, str, int]:
    if jax.default_backend() != "cpu":
        free = []
        for dv in devs:
            try:
                st = dv.memory_stats() or {}
            except Exception:  # noqa: BLE001 - backends without memory_stats
                st = {}
            if "bytes_limit" in st:
                free.append(int(st["bytes_limit"]) - int(st.get("bytes_in_use", 0)))
        kind = getattr(devs[0], "device_kind", jax.default_backend())
        return (min(free) if free else None), f"{kind} memory", len(devs)
    avail, where = _host_available()
    return avail, f"{where} (cpu)", 1


def check_target(out_dir: str | Path, config_hash: str | None, force: bool = False) -> None:
    """The output-safety rule, checked before any compute.

    Accepted: a path that does not exist yet and can be created; an empty folder; a run
    folder of the same config (``config_hash``), which the new run replaces whole; with
    ``force``, a run folder of another config (or a damaged one).  Never accepted: a
    file; a folder that cannot be written; a folder holding anything that is not a run's
    file (:func:`..results.is_run_file`), which is never deleted.

    Raises:
        OutputError: one line naming ``--out``, what is there and what is accepted.
    """
    out = Path(out_dir)
    check_path(out)
    check_writable(out)
    check_tmp_root(out)
    if not out.is_dir():
        return
    if os.path.ismount(out):  # the folder is renamed into place: it must live on its parent's file system
        raise OutputError("--out", f"{str(out)!r} is a mount point; accepted: a folder inside it")
    foreign = foreign_entries(out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(
            "--out",
            f"{str(out)!r} holds files that are not results ({foreign[0]!r}{more}); "
            "accepted: a new or empty folder, or a run folder (nothing else is ever replaced)",
        )
    if not any(os.scandir(out)):
        return
    stored = stored_hash(out)
    if stored == config_hash or force:
        return
    what = f"the results of another config (hash {stored})" if stored else "an incomplete or damaged run"
    raise OutputError("--out", f"{str(out)!r} holds {what}; accepted: another --out, or --force to replace them")


# The longest suffix a temporary sibling adds to the run folder's name (results._tmp_sibling).
TMP_SUFFIX_CHARS = 80


def check_path(out: Path, key: str = "--out", whole: bool = True) -> None:
    """``out`` can be a run folder: not a symbolic link (nothing is ever written through
    one), a name the file system can hold with the temporary suffix the writer adds to it,
    and, with ``whole`` (a run folder, replaced whole), not the current folder or one
    above it."""
    if os.path.islink(out):
        raise OutputError(
            key, f"{str(out)!r} is a symbolic link; accepted: a real folder path (nothing is written through a link)"
        )
    try:
        here, target = Path.cwd().resolve(), out.resolve()
    except OSError:
        here = target = None
    if whole and here is not None and (target == here or target in here.parents):
        raise OutputError(
            key, f"{str(out)!r} is the current folder or one above it; accepted: a folder below it, e.g. results/run"
        )
    base = nearest_existing(out)
    try:
        name_max = os.pathconf(base if base.is_dir() else base.parent, "PC_NAME_MAX")
        path_max = os.pathconf(base if base.is_dir() else base.parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    long = [p for p in out.absolute().parts if len(os.fsencode(p)) > name_max]
    if len(os.fsencode(out.name)) + TMP_SUFFIX_CHARS > name_max and not long:
        long = [out.name]
    if long or len(os.fsencode(str(out.absolute()))) + TMP_SUFFIX_CHARS > path_max:
        what = f"the name {long[0][:40]!r}... is too long" if long else "the path is too long"
        raise OutputError(key, f"{what} ({name_max - TMP_SUFFIX_CHARS} bytes per name at most here); accepted: a shorter path")


def check_tmp_root(out: Path, key: str = "--out") -> None:
    """The hidden folder beside ``out`` that holds runs being written
    (:data:`..results.TMP_DIR`) is a writable folder, or can be made."""
    tmp = out.parent / TMP_DIR
    if not os.path.lexists(tmp):
        return  # made when the run is written, in a folder check_writable probed
    if os.path.islink(tmp) or not tmp.is_dir():
        raise OutputError(key, f"{str(tmp)!r} is in the way (not a folder); accepted: move it, or another --out")
    check_writable(tmp, key)


# -- the checks ----------------------------------------------------------------------------------
def _advice(spec: RunSpec, parts: dict) -> str:
    top = max(parts, key=parts.get)
    if top == "logs":
        return "reduce log.points or replicas, or set log.overlap = false"
    return spec.engine.advice(top)


def check_memory(spec: RunSpec, available: tuple | None = None) -> None:
    """Raise :class:`ResourceError` when the memory estimate exceeds what is available.

    Args:
        spec: the run.  available: ``(bytes, where, devices)`` (default:
            :func:`available_memory`).
    """
    parts = memory_estimate(spec)
    need = sum(parts.values())
    avail, where, ndev = available if available is not None else available_memory()
    if avail is None:
        return
    per_dev = need / max(ndev, 1)
    if per_dev <= avail:
        return
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(f"{k} {fmt_bytes(v / max(ndev, 1))}" for k, v in top if v > 0)
    dev = f" per device ({ndev} devices)" if ndev > 1 else ""
    raise ResourceError(
        "memory",
        f"needs ~{fmt_bytes(per_dev)}{dev} ({detail}), {fmt_bytes(avail)} available in {where}; {_advice(spec, parts)}",
    )


def check_disk(out_dir, need: int) -> None:
    """Raise :class:`ResourceError` when ``need`` bytes do not fit where ``out_dir`` goes."""
    base = nearest_existing(Path(out_dir))
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return
    if need > free:
        raise ResourceError(
            "disk",
            f"the results need ~{fmt_bytes(need)}, {fmt_bytes(free)} free at {str(base)!r}; free some space or choose another --out",
        )


def skipped() -> bool:
    return os.environ.get(SKIP_ENV, "").strip() not in ("", "0")


def check(spec: RunSpec, out_dir=None, force: bool = False) -> None:
    """Every preflight check of one run (output folder, disk, memory), before compiling.

    Raises:
        OutputError: the output folder cannot take the results (see :func:`check_target`).
        ResourceError: the results or the run do not fit.
    """
    if out_dir is not None:
        check_target(out_dir, spec.hash, force)
    if skipped():
        return
    check_memory(spec)
    if out_dir is not None:
        check_disk(out_dir, result_bytes(spec))
