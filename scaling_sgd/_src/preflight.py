"""Preflight: refuse, before compiling, a run that cannot finish or cannot be saved.

Checked from the resolved config and the output path alone, in milliseconds:

* the output folder (:func:`..results.check_target`): creatable and writable, not a file,
  and not holding another config's results (the output-safety rule);
* disk: the expected size of the results against the free space where they go;
* memory: an estimate from the shapes (weights, the ``sgd`` input blocks ``(R, U, B, d)``,
  the ``reduced``/``flow`` state, the logged observables) against what the backend has:
  free device memory on an accelerator, ``MemAvailable`` (and a cgroup limit) on a CPU.

Each failure is one line naming what to change (:class:`..errors.ResourceError`), e.g.
``memory: needs ~245 GB (sgd input blocks 240 GB, ...), 19 GB available on cpu; reduce
replicas or data.d, or use engine "reduced"``.  The estimates are deliberately not
pessimistic (a refused run that would have fitted is worse than a late out-of-memory
error); ``SCALING_SGD_NO_PREFLIGHT=1`` skips the disk and memory checks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import config as cfgmod
from .engines.base import Static
from .engines.reduced import buffer_steps
from .engines.sgd import block_size
from .errors import ResourceError
from .hermite import hn
from .model import Model
from .results import _fmt_bytes, _nearest_existing, check_target

__all__ = ["check", "check_memory", "check_disk", "memory_estimate", "result_bytes", "available_memory", "SKIP_ENV"]

SKIP_ENV = "SCALING_SGD_NO_PREFLIGHT"
# Working copies XLA keeps of the state inside a compiled step (the loop carry and the
# values being formed), and of the logs (the list of log points, then the stacked copy).
# Calibrated on CPU against the peak resident memory of sgd runs (d = 2^16 .. 2^18,
# 8-16 replicas, B = 1 and 4: measured/estimated 0.97-1.05): the input blocks are held
# about 6 times (the block in progress, the next, the one being drawn, and their copies
# inside the loop), the weights about 3 times.
STATE_COPIES = 2.0
SGD_INPUT_COPIES = 6
SGD_WEIGHT_COPIES = 3
# The compiler and the runtime (measured: 0.25-0.3 GB on CPU for the smallest runs).
RUNTIME_BYTES = 300_000_000
# Size of config.json, the analysis files and the figures of one run (upper bound).
OVERHEAD_BYTES = 2_000_000


def _itemsize(cfg: dict) -> int:
    return 8 if cfg["train"]["dtype"] == "float64" else 4


def _logged_per_replica(cfg: dict, with_overlap: bool) -> int:
    """Numbers logged per replica and log point: loss, alignment, skill, norm2 (+ overlap)."""
    P, m = cfg["teacher"]["P"], cfg["student"]["m"]
    return 1 + 2 * P + m + (m * P if with_overlap else 0)


def memory_estimate(cfg: dict) -> dict[str, int]:
    """Bytes a run holds at its peak, by part (``{label: bytes}``), from its shapes.

    ``sgd``: weights ``(R, m, d)`` (:data:`SGD_WEIGHT_COPIES`, plus optimizer moments),
    a Haar teacher frame ``(R, P, d)`` when ``teacher.basis = "random"``, and the input
    blocks ``(R, U, B, d)`` with ``U = engines.sgd.block_size(B)`` (the block in progress,
    the next one, the one drawn while the current is advanced, and their working copies:
    :data:`SGD_INPUT_COPIES`).  ``reduced``: the
    coordinates and the block's sample coordinates and Bartlett factors, ``(R, m + 2 K B,
    P + m + K B)``.  ``flow``: the coordinates ``(R, m, P + m)`` and, for the stiff solver,
    the per-neuron Jacobian blocks and their LU factors ``(R, m, P + m, P + m)`` (diffrax's
    implicit solvers: the dense Jacobian ``(R, (m (P + m))^2)``; explicit ones: the saved
    outputs).  Logs: every log point of every observable, kept on the device and stacked
    at the end.  Plus :data:`RUNTIME_BYTES` for the compiler and the runtime.
    """
    f = _itemsize(cfg)
    t, s, tr = cfg["teacher"], cfg["student"], cfg["train"]
    R = len(cfgmod.replica_grid(cfg)["seed"])
    T = cfg["log"]["points"] + 1
    d, P, m, B = cfg["data"]["d"], t["P"], s["m"], tr["batch_size"]
    parts: dict[str, int] = {}
    engine = tr["engine"]
    if engine == "sgd":
        opt = 0 if (tr["optimizer"] == "sgd" and not tr["optimizer_kwargs"]) else 2
        parts["weights"] = int((SGD_WEIGHT_COPIES + opt) * R * m * d * f)
        if t["basis"] == "random":
            parts["teacher frame"] = R * P * d * f
        U = block_size(B)
        parts["sgd input blocks"] = SGD_INPUT_COPIES * R * U * B * d * f
    elif engine == "reduced":
        K = buffer_steps(Static(model=_shape_model(d, P, m), batch_size=B))
        n = P + m + K * B
        parts["reduced state"] = int(STATE_COPIES * R * (m + 2 * K * B) * n * f)
    else:
        n = P + m
        solver = cfg["flow"]["solver"]
        parts["flow state"] = int(STATE_COPIES * 4 * R * m * n * f)
        if solver in ("auto", "ros2"):
            parts["flow Jacobian blocks"] = 3 * R * m * n * n * f
        elif solver.startswith("kvaerno"):
            parts["flow dense Jacobian"] = 2 * R * (m * n) ** 2 * f
        if solver not in ("auto", "ros2"):
            parts["flow saved outputs"] = R * T * m * n * f
    parts["logs"] = int(STATE_COPIES * R * T * _logged_per_replica(cfg, cfgmod.with_overlap(cfg)) * f)
    parts["compiler and runtime"] = RUNTIME_BYTES
    return parts


def _shape_model(d, P, m) -> Model:
    """A :class:`..model.Model` carrying only shapes (the activation plays no part in sizes)."""
    h = hn(1)
    return Model(d=d, P=P, m=m, teacher=h, student=h)


def result_bytes(cfg: dict) -> int:
    """Upper bound of the bytes a run writes (``metrics.npz`` uncompressed, plus
    ``config.json``, analysis files and figures)."""
    R = len(cfgmod.replica_grid(cfg)["seed"])
    T = cfg["log"]["points"] + 1
    P = cfg["teacher"]["P"]
    logged = R * T * _logged_per_replica(cfg, cfgmod.with_overlap(cfg)) * _itemsize(cfg)
    return int(logged + R * (P + 8) * 8 + T * 8 + OVERHEAD_BYTES)


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


# -- the checks ----------------------------------------------------------------------------------
def _advice(cfg: dict, parts: dict) -> str:
    top = max(parts, key=parts.get)
    engine = cfg["train"]["engine"]
    if top == "logs":
        return "reduce log.points or replicas, or set log.overlap = false"
    if engine == "sgd":
        return 'reduce replicas or data.d, or use engine "reduced"'
    if engine == "reduced":
        return "reduce replicas, train.batch_size, teacher.P or student.m"
    return (
        'reduce replicas, teacher.P or student.m, or use flow.solver = "ros2"'
        if "dense" in top
        else "reduce replicas, teacher.P or student.m"
    )


def check_memory(cfg: dict, available: tuple | None = None) -> None:
    """Raise :class:`ResourceError` when the memory estimate exceeds what is available.

    Args:
        cfg: a resolved config.  available: ``(bytes, where, devices)`` (default:
            :func:`available_memory`).
    """
    parts = memory_estimate(cfg)
    need = sum(parts.values())
    avail, where, ndev = available if available is not None else available_memory()
    if avail is None:
        return
    per_dev = need / max(ndev, 1)
    if per_dev <= avail:
        return
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(f"{k} {_fmt_bytes(v / max(ndev, 1))}" for k, v in top if v > 0)
    dev = f" per device ({ndev} devices)" if ndev > 1 else ""
    raise ResourceError(
        "memory",
        f"needs ~{_fmt_bytes(per_dev)}{dev} ({detail}), {_fmt_bytes(avail)} available in {where}; {_advice(cfg, parts)}",
    )


def check_disk(out_dir, need: int) -> None:
    """Raise :class:`ResourceError` when ``need`` bytes do not fit where ``out_dir`` goes."""
    base = _nearest_existing(Path(out_dir))
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return
    if need > free:
        raise ResourceError(
            "disk",
            f"the results need ~{_fmt_bytes(need)}, {_fmt_bytes(free)} free at {str(base)!r}; free some space or choose another --out",
        )


def skipped() -> bool:
    return os.environ.get(SKIP_ENV, "").strip() not in ("", "0")


def check(cfg: dict, out_dir=None, force: bool = False) -> None:
    """Every preflight check of one run (output folder, disk, memory), before compiling.

    Raises:
        OutputError: the output folder cannot take the results (see
            :func:`..results.check_target`).
        ResourceError: the results or the run do not fit.
    """
    if out_dir is not None:
        check_target(out_dir, cfgmod.config_hash(cfg), force)
    if skipped():
        return
    check_memory(cfg)
    if out_dir is not None:
        check_disk(out_dir, result_bytes(cfg))
