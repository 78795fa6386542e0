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
from .results import foreign_entries, stored_hash
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
# The compiler and the runtime (benchmarks/NOTES.md, "Memory estimate of the preflight").
RUNTIME_BYTES = 300_000_000
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
    every observable, kept on the device and stacked at the end), and
    :data:`RUNTIME_BYTES` for the compiler and the runtime."""
    R, Rc = spec.sizes["replica"], spec.R_compiled  # the program runs the padded replicas
    parts = dict(spec.engine.memory(spec.static, Rc, spec.sizes["step"]))
    parts["logs"] = int(STATE_COPIES * _logged_bytes(spec) * Rc / R)
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


def _cgroup_available() -> int | None:
    """Room left under this process's cgroup memory limit (v2, then v1), if it has one."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, ctrl, path = parts
        if hier == "0" and ctrl == "":
            files = (f"/sys/fs/cgroup{path}/memory.max", f"/sys/fs/cgroup{path}/memory.current")
        elif "memory" in ctrl.split(","):
            base = f"/sys/fs/cgroup/memory{path}"
            if not os.path.isdir(base):
                base = "/sys/fs/cgroup/memory"
            files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
        else:
            continue
        try:
            with open(files[0]) as f:
                limit = f.read().strip()
            with open(files[1]) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # unlimited
            continue
        return max(int(limit) - used, 0)
    return None


def _host_available() -> tuple[int | None, str]:
    avail = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
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
    ``/proc/meminfo`` and the room under a cgroup limit (Slurm), whichever is smaller.
    ``bytes`` is ``None`` when the backend does not say.
    """
    import jax

    devs = jax.local_devices()
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
    check_writable(out)
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
