"""The one driver: every engine's run goes through :func:`simulate`.

It owns what the engines share (see :mod:`.base` for the contract):

* two compiled programs per (engine, static description) — ``start`` (the initial state
  and its observables) and ``run`` (a chunk: advance through as many log points as a work
  budget allows, observing at each one on the device into ``(T, R, ...)`` buffers) —
  compiled once per shape: ``lr``, ``beta``, ``seed``, ``steps`` and the log grid are
  traced arguments;
* the loop over chunks, on the host.  The budget is adapted so that a chunk takes about
  ``chunk_seconds``: progress is reported and Ctrl-C is seen within seconds even inside a
  long log segment, while a run with many short segments does not pay a host round trip
  per log point.  Engines give the same numbers whatever the chunks are (each step is the
  same code wherever a chunk ends; tested bitwise);
* the divergence rule at log points (:func:`.base.divergence_check`), and the stop of a
  run whose every replica has diverged: frozen replicas observe the same numbers at every
  later log point, so those are filled in at once (the result equals the full run's);
* the replica count: padded to a bucket (:func:`replica_bucket`: 1, 4, 8, 16, ...), the
  pads dropped afterwards, so that a longer seed list compiles no new program; the replica
  axis placed on the local devices (sharded when there are several);
* the engine's program (:meth:`.base.Engine.program`): what it compiles on, e.g. ``d``
  traced for ``reduced`` and ``flow``;
* progress (:mod:`..progress`): "compiling...", then steps, rate, replicas diverged and
  time left;
* interrupts: SIGINT (Ctrl-C, a notebook's "interrupt") and SIGTERM (a batch system's
  preemption) stop the run at the end of the current chunk, within seconds, and raise
  :class:`Interrupted` (a ``KeyboardInterrupt``) carrying the log points already done.

Only the observables at log points come back to the host, once, at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import threading
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..progress import NoProgress
from ..schedules import tau_over_lr
from .base import MAX_STEPS_INT32, Engine, Grid, Replicas, Static, Target, divergence_check

__all__ = [
    "simulate",
    "initial_observables",
    "Chunk",
    "Interrupted",
    "place_replicas",
    "replica_bucket",
    "replica_padding",
    "pad_replicas",
    "compiled_programs",
]


# the replicas are traced arguments of the compiled programs (registered here, with JAX,
# so that reading a config needs neither)
jax.tree_util.register_dataclass(Replicas)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal between chunks.

    Attributes:
        partial: the metrics of the log points done (``(R, T_done, ...)``, as
            :func:`simulate` returns them, with ``diverged``/``diverged_step`` as of the
            last of them).
        signal: the signal's name (``"SIGINT"``, ``"SIGTERM"``).
    """

    def __init__(self, partial: dict, signal_name: str):
        super().__init__(f"run interrupted by {signal_name} after step {int(partial['step'][-1]) if 'step' in partial else 0}")
        self.partial = partial
        self.signal = signal_name


@contextlib.contextmanager
def _stop_on(signals):
    """Turn the first of ``signals`` into a flag the loop checks between chunks (a second
    one acts as usual, e.g. a second Ctrl-C raises at once).  Outside the main thread
    signals cannot be caught: the run then stops only by ``KeyboardInterrupt``."""
    flag = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name
        for s, h in old.items():  # the next one is not caught
            signal.signal(s, h)

    for s in signals:
        old[s] = signal.getsignal(s)
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _observe_checked(engine: Engine, static: Static, state, reps: Replicas, grid: Grid, index):
    step = grid.step[index]
    obs = dict(engine.observe(static, state, reps, grid, index))
    failed = obs.pop("failed", None)
    diverged, diverged_step = engine.flags(state)
    loss = obs["loss"] if failed is None else jnp.where(failed, jnp.nan, obs["loss"])
    diverged, diverged_step = divergence_check(diverged, diverged_step, loss, reps.diverge_bound, step)
    return engine.with_flags(state, diverged, diverged_step), obs


class Chunk(NamedTuple):
    """The driver's carry between compiled chunks: the engine ``state``, the next log
    point to reach ``j`` (int32), and the observables of the log points before it in
    ``(T, R, ...)`` buffers (``obs``)."""

    state: Any
    j: jax.Array
    obs: dict


@functools.partial(jax.jit, static_argnums=(0, 1))
def _start(engine: Engine, static: Static, reps: Replicas, grid: Grid) -> Chunk:
    """The initial state, its observables (log point 0, checked) and empty buffers."""
    state = engine.init(static, reps, grid)
    state, obs0 = _observe_checked(engine, static, state, reps, grid, 0)
    T = grid.step.shape[0]
    obs = jax.tree.map(lambda x: jnp.zeros((T,) + x.shape, x.dtype).at[0].set(x), obs0)
    return Chunk(state, jnp.asarray(1, jnp.int32), obs)


def _chunk(engine: Engine, static: Static, chunk: Chunk, reps: Replicas, grid: Grid, budget, stop: bool):
    """Advance through the log points from ``chunk.j`` on, observing at each one reached,
    until the last one, until ``budget`` units of work are spent, or until every replica has
    diverged (then the log points left are filled, :func:`_fill`).  Returns the chunk, the
    position (steps) with the fraction done (:meth:`.base.Engine.done_fraction`), and
    whether it stopped on divergence."""
    T = grid.step.shape[0]
    w0, j0 = engine.work(static, chunk.state), chunk.j

    def used(c: Chunk):  # the steps taken and the log points observed in this call
        return engine.work(static, c.state) - w0 + jnp.asarray(engine.observe_work * (c.j - j0)).astype(w0.dtype)

    def cond(c: Chunk):
        go = (c.j < T) & (used(c) < budget)
        return (go & ~jnp.all(engine.flags(c.state)[0])) if stop else go

    def body(c: Chunk) -> Chunk:
        left = budget - used(c)
        state = engine.advance(static, c.state, reps, Target(c.j, grid.step[c.j], left), grid)

        def observe(state):
            state, o = _observe_checked(engine, static, state, reps, grid, c.j)
            obs = jax.tree.map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, c.j, 0), c.obs, o)
            return Chunk(state, c.j + 1, obs)

        reached = engine.position(static, state, grid) >= grid.step[c.j]
        return jax.lax.cond(reached, observe, lambda state: Chunk(state, c.j, c.obs), state)

    chunk = jax.lax.while_loop(cond, body, chunk)
    # every replica diverged: frozen, each observes at the log points left what it observes
    # now, so they are filled in and the run is complete
    if not stop:
        return chunk, _where(engine, static, chunk, grid), jnp.asarray(False)
    stopped = jnp.all(engine.flags(chunk.state)[0]) & (chunk.j < T)
    chunk = jax.lax.cond(stopped, lambda c: _fill(engine, static, c, reps, grid), lambda c: c, chunk)
    return chunk, _where(engine, static, chunk, grid), stopped


def _where(engine: Engine, static: Static, chunk: Chunk, grid: Grid):
    """The position (steps) and the fraction of the run done, for progress."""
    return engine.position(static, chunk.state, grid), engine.done_fraction(static, chunk.state, grid)


def _fill(engine: Engine, static: Static, c: Chunk, reps: Replicas, grid: Grid) -> Chunk:
    """The log points ``c.j ..`` filled with the observables of the (frozen) state now."""
    T = grid.step.shape[0]
    state, o = _observe_checked(engine, static, c.state, reps, grid, jnp.minimum(c.j, T - 1))
    left = jnp.arange(T) >= c.j
    obs = jax.tree.map(lambda buf, x: jnp.where(left.reshape((T,) + (1,) * x.ndim), x[None], buf), c.obs, o)
    return Chunk(state, jnp.asarray(T, jnp.int32), obs)


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _run(engine: Engine, static: Static, chunk: Chunk, reps: Replicas, grid: Grid, budget):
    """One chunk (:func:`_chunk`), stopping once every replica has diverged."""
    return _chunk(engine, static, chunk, reps, grid, budget, stop=True)


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _run_to_end(engine: Engine, static: Static, chunk: Chunk, reps: Replicas, grid: Grid, budget):
    """One chunk (:func:`_chunk`) that advances every log point, diverged or not."""
    return _chunk(engine, static, chunk, reps, grid, budget, stop=False)


# start and run: what one shape (engine, static description, replica count) compiles
PROGRAMS_PER_SHAPE = 2


def compiled_programs() -> int:
    """How many programs the driver has compiled in this process (for tests: changing
    traced numbers must not add any; a new shape adds :data:`PROGRAMS_PER_SHAPE`)."""
    return _start._cache_size() + _run._cache_size() + _run_to_end._cache_size()


# The share of Linux's limit on a process's memory mappings (``vm.max_map_count``) past which
# the compiled programs are released before another is compiled: XLA's CPU backend maps
# each compiled kernel into pages of its own, and a process that reaches the limit is
# aborted inside the compiler.  A process that runs many shapes (a notebook, a sweep over
# P and m) passes it after some thousands of programs.
MAP_LIMIT_SHARE = 0.75


def memory_maps() -> tuple[int, int] | None:
    """``(mappings this process holds, the most it may hold)``, or ``None`` where the
    system does not say (not Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count", "rb") as f:
            limit = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            held = sum(1 for _ in f)
    except (OSError, ValueError):
        return None
    return held, limit


def release_programs_near_map_limit() -> bool:
    """Drop every compiled program of the process (``jax.clear_caches``; they compile
    again when called) when its memory mappings pass :data:`MAP_LIMIT_SHARE` of the limit.
    Returns whether it did."""
    maps = memory_maps()
    if maps is None or maps[0] < MAP_LIMIT_SHARE * maps[1]:
        return False
    jax.clear_caches()
    return True


# -- replicas on devices ----------------------------------------------------------------
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


def replica_bucket(R: int) -> int:
    """The replica count a program is compiled for: ``R`` rounded up to ``1, 4, 8, 16, ...``
    (a power of two, at least 4 when ``R > 1``), then to a multiple of the local device
    count.

    The pads repeat the last replica and are dropped afterwards (:func:`pad_replicas`), so
    a seed list that grows inside its bucket (``[0, 1] -> [0, 1, 2]``) reuses the program,
    at the price of at most twice the work of ``R`` replicas.  :func:`place_replicas`
    shards the replica axis only when the device count divides it.
    """
    b = 1 if R <= 1 else max(4, 1 << (int(R) - 1).bit_length())
    n = jax.local_device_count()
    return -(-b // n) * n if n > 1 else b


def replica_padding(R: int) -> int:
    """How many replicas :func:`simulate` adds to ``R`` (:func:`replica_bucket` ``- R``)."""
    return replica_bucket(R) - int(R)


def _replicated(x) -> bool:
    """A per-replica array (leading replica axis), not a scalar shared by all replicas."""
    return np.ndim(x) >= 1


def pad_replicas(reps: Replicas, n_pad: int) -> Replicas:
    """``reps`` with its last replica repeated ``n_pad`` times (replicas are independent,
    so the pads change no other replica's numbers; drop rows ``R:`` afterwards)."""
    if n_pad <= 0:
        return reps

    def pad(x):
        if not _replicated(x):
            return x
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], n_pad, axis=0)], axis=0)

    return jax.tree.map(pad, reps)


def _on_devices(reps: Replicas) -> Replicas:
    placed = jax.tree.map(lambda x: place_replicas(x) if _replicated(x) else jnp.asarray(x), reps)
    # the seed is a key's data: uint32 on the device
    return dataclasses.replace(placed, seed=place_replicas(reps.seed, jnp.uint32))


# -- the loop ------------------------------------------------------------------------------
def _check_steps(log_steps) -> np.ndarray:
    log_steps = np.asarray(log_steps, np.int64)
    if log_steps[-1] > MAX_STEPS_INT32:
        raise ValueError(f"train.steps must be < 2^31 (got {int(log_steps[-1])})")
    if log_steps[0] != 0 or np.any(np.diff(log_steps) < 0):
        raise ValueError("log steps must start at 0 and be non-decreasing")
    return log_steps


def simulate(
    engine: Engine,
    static: Static,
    reps: Replicas,
    log_steps,
    progress=None,
    chunk_seconds: float = 1.0,
    first_budget: int | None = None,
    stop_signals=(signal.SIGINT, signal.SIGTERM),
    stop_when_diverged: bool = True,
    checkpoint=None,
) -> dict:
    """Run all replicas of ``engine`` and return numpy metrics ``(R, T, ...)``.

    Args:
        engine: an :class:`.base.Engine`.  static: shapes and code paths.
        reps: per-replica numbers (``R`` replicas; run as :func:`replica_bucket` ``(R)``).
        log_steps: ``(T,)`` int log points, ``0`` first, non-decreasing, ``< 2^31``.
        progress: a :class:`..progress.Progress` (or ``None``).
        chunk_seconds: wall time aimed at per compiled call (progress and Ctrl-C
            granularity); it never changes the numbers.
        first_budget: work units of the first call (then adapted); default: the engine's
            :attr:`~.base.Engine.first_budget`.
        stop_signals: signals that stop the run between chunks (:class:`Interrupted`).
        stop_when_diverged: once every replica has diverged, fill the log points left with
            their frozen observables instead of advancing to the end (the same numbers).
        checkpoint: where the run's state is kept between processes (a
            :class:`..checkpoint.Checkpoint`, or ``None``).  The run starts from the state it
            holds, if any; the state is saved at log points (at most every
            ``checkpoint.min_interval_s``), at least every ``checkpoint.interval_s``, and
            when a stop signal arrives.  The numbers do not depend on where a run stops and
            resumes (each step is the same code wherever a chunk ends).
    Returns:
        dict of ``(R, T, ...)`` observables (``loss``, ``alignment``, ``skill``,
        ``norm2``, optionally ``overlap``) and ``diverged`` ``(R,)`` bool,
        ``diverged_step`` ``(R,)`` int64 (``-1`` when alive), and ``stopped_at`` (int):
        when every replica diverged and the run stopped, the step by which they all had
        (the largest ``diverged_step``); ``-1`` when it ran to the end.
    """
    progress = progress or NoProgress()
    log_steps = _check_steps(log_steps)
    R = reps.R
    cstatic, creps = engine.program(static, pad_replicas(reps, replica_padding(R)))
    grid = Grid(
        step=jnp.asarray(log_steps, jnp.int32),
        tau=jnp.asarray(tau_over_lr(static.schedule, log_steps, log_steps[-1], static.schedule_n0)),
    )
    dreps = _on_devices(creps)
    T = log_steps.size
    run = _run if stop_when_diverged else _run_to_end

    release_programs_near_map_limit()
    progress.compiling()
    chunk_shape = jax.eval_shape(lambda r, g: _start(engine, cstatic, r, g), dreps, grid)
    _start.lower(engine, cstatic, dreps, grid).compile()
    run.lower(engine, cstatic, chunk_shape, dreps, grid, jnp.asarray(0, jnp.int32)).compile()

    chunk = _start(engine, cstatic, dreps, grid)
    budget, j, stopped = int(engine.first_budget if first_budget is None else first_budget), 1, False
    resumed = checkpoint.restore(chunk) if checkpoint is not None else None
    if resumed is not None:
        chunk, budget = resumed
        j = int(jax.device_get(chunk.j))
        checkpoint.resumed_step = int(log_steps[j - 1])
    progress.start(int(log_steps[-1]), engine.work_units(static, reps), R, start=int(log_steps[j - 1]))
    saved_j, saved_t = j, time.perf_counter()
    with _stop_on(stop_signals) as stop:
        try:
            while j < T:
                if stop["signal"]:
                    if checkpoint is not None:
                        checkpoint.save(chunk, budget)
                    raise Interrupted(_collect(engine, cstatic, chunk, j, log_steps, R), stop["signal"])
                t0 = time.perf_counter()
                chunk, (pos, frac), stop_now = run(engine, cstatic, chunk, dreps, grid, jnp.asarray(budget, jnp.int32))
                got = jax.device_get((chunk.j, pos, frac, stop_now, engine.flags(chunk.state)[0]))  # waits for the chunk
                j, pos, frac, stopped = int(got[0]), int(got[1]), float(got[2]), stopped or bool(got[3])
                el = time.perf_counter() - t0
                budget = int(np.clip(budget * chunk_seconds / max(el, 1e-4), budget // 4 + 1, min(budget * 4, 2**30)))
                progress.update(min(pos, int(log_steps[-1])), frac, int(np.sum(np.asarray(got[4])[:R])))
                if checkpoint is not None and j < T and checkpoint.due(j > saved_j, time.perf_counter() - saved_t):
                    checkpoint.save(chunk, budget)
                    saved_j, saved_t = j, time.perf_counter()
        finally:
            progress.close()
    out = _collect(engine, cstatic, chunk, T, log_steps, R)
    out["stopped_at"] = int(out["diverged_step"].max()) if stopped else -1
    return out


def initial_observables(engine: Engine, static: Static, reps: Replicas, log_steps) -> dict:
    """The observables of every replica at step 0, with the full cosine matrix ``overlap``
    ``(R, m, P)`` whatever ``static.with_overlap`` says: the numbers a run with this engine,
    description and replicas logs at its first log point, recomputed from the seeds
    (numpy, ``(R, ...)``)."""
    log_steps = _check_steps(log_steps)
    cstatic, creps = engine.program(dataclasses.replace(static, with_overlap=True), reps)
    grid = Grid(
        step=jnp.asarray(log_steps, jnp.int32),
        tau=jnp.asarray(tau_over_lr(static.schedule, log_steps, log_steps[-1], static.schedule_n0)),
    )
    chunk = _start(engine, cstatic, _on_devices(creps), grid)
    return {k: np.asarray(v[0]) for k, v in jax.device_get(chunk.obs).items()}


def _collect(engine: Engine, static: Static, chunk: Chunk, j: int, log_steps, R: int) -> dict:
    """The metrics of the first ``j`` log points of the first ``R`` replicas (the pads
    dropped), fetched to the host at once."""
    diverged, diverged_step = engine.flags(chunk.state)
    extra = engine.final(static, chunk.state) if j == len(log_steps) else {}
    obs, extra, diverged, diverged_step = jax.device_get((chunk.obs, extra, diverged, diverged_step))
    out = {k: np.swapaxes(np.asarray(v)[:j, :R], 0, 1) for k, v in obs.items()}
    out.update({k: np.asarray(v)[:R] for k, v in extra.items()})
    out["diverged"] = np.asarray(diverged, bool)[:R]
    out["diverged_step"] = np.asarray(diverged_step, np.int64)[:R]
    out["step"] = np.asarray(log_steps[:j], np.int64)
    return out
