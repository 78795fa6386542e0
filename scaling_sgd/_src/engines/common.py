"""Pieces shared by all engines: the static run description, replica arrays, the log
grid and the host-side progress hook."""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..model import Model

__all__ = [
    "call_compiled",
    "check_loss",
    "dtype_of",
    "check_int32_steps",
    "Static",
    "Replicas",
    "log_grid",
    "progress_hook",
    "Progress",
    "TRACE_COUNT",
    "place_replicas",
    "replica_padding",
    "pad_replicas",
]

# Incremented (at trace time only) by every engine's compiled run function: the test
# "changing lr, beta, seed or steps never recompiles" reads it.
TRACE_COUNT = {"n": 0}


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that fixes shapes or code paths (a compile-time constant).

    Attributes:
        model: dimensions and activations.
        batch_size: ``B``.
        optimizer, optimizer_kwargs, schedule: see :mod:`scaling_sgd._src.optim`.
        dtype: ``"float32"`` or ``"float64"``.
        with_overlap: log the full cosine matrix ``M`` ``(m, P)``.
        flow_rtol, flow_atol, flow_solver: settings of the ``flow`` engine.
    """

    model: Model
    batch_size: int = 1
    optimizer: str = "sgd"
    optimizer_kwargs: tuple = ()
    schedule: str = "constant"
    dtype: str = "float32"
    with_overlap: bool = False
    flow_rtol: float = 1e-6
    flow_atol: float = 1e-9
    flow_solver: str = "auto"


@dataclasses.dataclass(frozen=True)
class Replicas:
    """Per-replica numbers (traced: changing them never recompiles).

    Attributes:
        seed: ``(R,)`` int.  lr: ``(R,)`` float.  a: ``(R, P)`` teacher coefficients.
        beta: ``(R,)`` float (informational; ``a`` is what the dynamics use).
        init_scale: scalar float ``s``.  diverge_bound: scalar float.
    """

    seed: np.ndarray
    lr: np.ndarray
    a: np.ndarray
    beta: np.ndarray
    init_scale: float = 0.1
    diverge_bound: float = 1e8

    @property
    def R(self) -> int:
        return int(np.shape(self.seed)[0])


def check_loss(state, obs, bound, t):
    """Flag (at a log point) a replica whose exact loss is non-finite or above ``bound``.

    ``state`` is any engine state (a NamedTuple) with ``diverged`` and ``diverged_step``.
    """
    bad = ~(jnp.isfinite(obs["loss"]) & (obs["loss"] <= bound)) & ~state.diverged
    return state._replace(
        diverged=state.diverged | bad,
        diverged_step=jnp.where(bad, jnp.asarray(t, jnp.int32), state.diverged_step),
    )


def dtype_of(static: Static):
    """The JAX float type of a run (``Static.dtype``)."""
    return jnp.float64 if static.dtype == "float64" else jnp.float32


def place_replicas(x, dtype=None):
    """Put a replica-major array on the devices.

    With several local devices and ``R`` divisible by their number, the replica axis is
    sharded across them (``NamedSharding`` over a 1-D mesh ``"replica"``); ``jit`` then
    partitions the whole run along replicas.  Otherwise the array goes to the default
    device.
    """
    x = jnp.asarray(x, dtype)
    devs = jax.local_devices()
    if len(devs) > 1 and x.ndim >= 1 and x.shape[0] % len(devs) == 0:
        mesh = Mesh(np.asarray(devs), ("replica",))
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec("replica")))
    return x


def replica_padding(R: int) -> int:
    """How many replicas to add so that ``R`` splits evenly over the local devices.

    :func:`place_replicas` shards the replica axis only when the device count divides
    ``R``; padding (and dropping the pads afterwards) keeps every device busy for any ``R``.
    ``0`` on a single device.
    """
    n = jax.local_device_count()
    return (-R) % n if n > 1 else 0


def pad_replicas(reps: Replicas, n_pad: int) -> Replicas:
    """``reps`` with its last replica repeated ``n_pad`` times (replicas are independent
    under ``vmap``, so the pads change no other replica's numbers; drop rows ``R:``)."""
    if n_pad <= 0:
        return reps

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], n_pad, axis=0)], axis=0)

    return dataclasses.replace(reps, seed=pad(reps.seed), lr=pad(reps.lr), a=pad(reps.a), beta=pad(reps.beta))


def log_grid(steps: int, points: int) -> np.ndarray:
    """``points + 1`` log steps: ``0`` then a geometric grid from ``1`` to ``steps``.

    Rounded to integers and made non-decreasing; duplicates are kept so the length (a
    static shape) depends only on ``points``.  Returns int64 ``(points + 1,)``.
    """
    g = np.rint(np.geomspace(1.0, float(steps), points)).astype(np.int64)
    g = np.maximum.accumulate(np.clip(g, 1, steps))
    g[-1] = steps
    return np.concatenate([[0], g]).astype(np.int64)


class Progress:
    """Steps done, rate and time left, printed to stderr at log points."""

    def __init__(self, log_steps, samples_per_step: int, label: str = "", enabled: bool = True, stream=None):
        self.log_steps = np.asarray(log_steps)
        self.total = int(self.log_steps[-1])
        self.sps = samples_per_step
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = None
        self.last_print = 0.0

    def start(self):
        self.t0 = time.perf_counter()

    def __call__(self, k):
        if not self.enabled or self.t0 is None:
            return
        done = int(self.log_steps[int(k) + 1])
        now = time.perf_counter()
        final = done >= self.total
        tty = getattr(self.stream, "isatty", lambda: False)()
        # A terminal gets a line rewritten in place; a log file a new line every 15 s.
        if not final and now - self.last_print < (0.5 if tty else 15.0):
            return
        self.last_print = now
        el = now - self.t0
        rate = done / el if el > 0 else float("nan")
        left = (self.total - done) / rate if rate and rate > 0 else float("nan")
        msg = (
            f"{self.label}step {done:,}/{self.total:,} ({100.0 * done / max(self.total, 1):5.1f}%)  "
            f"{rate * self.sps:,.0f} samples/s  elapsed {el:6.1f}s  left {left:6.1f}s"
        )
        if tty:
            print("\r" + msg, end="\n" if final else "", file=self.stream, flush=True)
        else:
            print(msg, file=self.stream, flush=True)


_CURRENT: dict = {"progress": None}


def _dispatch(k):
    p = _CURRENT["progress"]
    if p is not None:
        p(k)


def progress_hook(k):
    """Call from inside a compiled loop (outside any vmap) after log segment ``k``.

    It reaches whatever :class:`Progress` the host installed with :func:`set_progress`, so
    the compiled program does not depend on (and is not retraced for) the reporter.
    """
    jax.debug.callback(_dispatch, k)


def set_progress(p: Progress | None):
    _CURRENT["progress"] = p


def check_int32_steps(log_steps, engine: str) -> np.ndarray:
    """The step counter is int32 on the device: refuse runs that would overflow it."""
    log_steps = np.asarray(log_steps)
    if log_steps[-1] >= 2**31:
        raise ValueError(f"train.steps must be < 2^31 in engine {engine!r}")
    return log_steps


def call_compiled(run_compiled, static: Static, reps: Replicas, *extra, progress: Progress | None = None):
    """Call an engine's compiled run on all replicas and fetch its outputs to the host.

    The replica arrays (seed, lr, a) are placed on the devices (sharded along replicas
    when there are several), the scalars follow, then ``extra`` engine-specific
    arguments.  ``progress`` is installed for the duration of the call.  Returns
    ``(obs, *rest)`` with ``obs`` a dict of ``(T, R, ...)`` arrays turned replica-major
    ``(R, T, ...)``.
    """
    set_progress(progress)
    try:
        if progress is not None:
            progress.start()
        out = run_compiled(
            static,
            place_replicas(reps.seed, jnp.uint32),
            place_replicas(reps.lr),
            place_replicas(reps.a),
            jnp.asarray(reps.init_scale),
            jnp.asarray(reps.diverge_bound),
            *extra,
        )
        obs, *rest = jax.device_get(out)
    finally:
        set_progress(None)
    obs = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in obs.items()}
    return (obs, *rest)
