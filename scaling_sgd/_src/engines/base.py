"""The engine contract: what an engine provides and what the driver owns.

An engine is a small immutable object (hashable, so it is a compile-time constant)
that knows how to advance one kind of dynamics.  It provides

* ``check(cfg)``: its config rules (raise :class:`ConfigError`);
* ``init(static, reps, grid) -> state``: the state of all replicas at step 0;
* ``advance(static, state, reps, target, grid) -> state``: move every live replica
  toward the log point ``target.index`` (at step ``target.step``), doing at most
  ``target.budget`` units of work (steps, or solver steps), and never past the log point;
* ``position(static, state, grid)``: steps done, the minimum over live replicas;
* ``observe(static, state, reps, grid, index) -> dict``: the observables of every
  replica at log point ``index``, where the state now is (:func:`model.gram_observables`
  names, ``(R, ...)``).

``init``, ``advance`` and ``observe`` see the whole replica batch: each engine vmaps its
per-replica step itself, because the loop over steps is shared by all replicas (its
counter stays a scalar and its branches stay branches, not selects over replicas).

The driver (:mod:`.driver`) owns everything else: the jit of these three functions, the
loop over log points and work chunks, the divergence rule (:func:`divergence_check`),
placing replicas on devices, and progress.  Every engine state carries per-replica
``diverged`` (bool) and ``diverged_step`` (int32, ``-1`` while alive) that the engine
reads and may set (a step whose error leaves the bound), and the driver sets at log
points (a loss that is non-finite or above the bound).  A diverged replica is frozen:
``advance`` leaves its numbers unchanged from then on.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..lazy import lazy
from ..model import Model

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = [
    "Engine",
    "Static",
    "Replicas",
    "Grid",
    "Target",
    "divergence_check",
    "dtype_of",
    "log_grid",
    "MAX_STEPS_INT32",
    "REPLICA_SETTINGS",
    "STATE_COPIES",
    "itemsize",
]

# The step counter is int32 on the device.
MAX_STEPS_INT32 = 2**31 - 1
# Working copies XLA keeps of a state inside a compiled step (the loop carry and the values
# being formed), for memory estimates.
STATE_COPIES = 2.0


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that fixes shapes or code paths (a compile-time constant).

    Attributes:
        model: dimensions and activations.
        batch_size: ``B``.
        optimizer, optimizer_kwargs, schedule, schedule_n0: see :mod:`..optim`,
            :mod:`..schedules` (``schedule_n0 = 0``: the schedule's default scale).
        dtype: ``"float32"`` or ``"float64"``.
        with_overlap: log the full cosine matrix ``M`` ``(m, P)``.
    """

    model: Model
    batch_size: int = 1
    optimizer: str = "sgd"
    optimizer_kwargs: tuple = ()
    schedule: str = "constant"
    schedule_n0: float = 0.0
    dtype: str = "float32"
    with_overlap: bool = False

    @property
    def plain_sgd(self) -> bool:
        """Plain SGD (``w <- w - lr_t g``), applied directly rather than through optax."""
        return self.optimizer == "sgd" and not self.optimizer_kwargs


def _setting(key: str, axis: int):
    """A replicated setting: the config key whose list makes replicas, and its place in
    the replica product (``axis`` 0 varies slowest)."""
    return dataclasses.field(metadata={"setting": key, "axis": axis})


@dataclasses.dataclass(frozen=True)
class Replicas:
    """Per-replica numbers (traced: changing them never recompiles; a JAX pytree, registered
    by :mod:`.driver`, which every traced use goes through).

    Attributes:
        seed: ``(R,)`` integer.  lr: ``(R,)`` float.  a: ``(R, P)`` teacher coefficients.
        beta: ``(R,)`` float (informational; ``a`` is what the dynamics use).
        init_scale: scalar ``s``.  diverge_bound: scalar.
        d: ``None``, or the input dimension as an int32 scalar where the engine's program
        takes it as a number (:meth:`Engine.program`); ``Static.model.d`` then only fixes
        shapes.

    ``seed``, ``lr`` and ``beta`` are the replicated settings (:data:`REPLICA_SETTINGS`):
    a list in the config makes replicas, the product ``beta x lr x seed`` (seed fastest).
    """

    seed: Any = _setting("train.seed", 2)
    lr: Any = _setting("train.lr", 1)
    a: Any
    beta: Any = _setting("teacher.beta", 0)
    init_scale: Any = 0.1
    diverge_bound: Any = 1e8
    d: Any = None

    @property
    def R(self) -> int:
        return int(np.shape(self.seed)[0])


#: replicated setting -> its config key, in the order of the replica product (beta, lr, seed)
REPLICA_SETTINGS: dict[str, str] = {
    f.name: f.metadata["setting"]
    for f in sorted((f for f in dataclasses.fields(Replicas) if "setting" in f.metadata), key=lambda f: f.metadata["axis"])
}


class Grid(NamedTuple):
    """The log points: ``step`` ``(T,)`` int32 (``0`` first, non-decreasing) and ``tau``
    ``(T,)`` float, the SGD time ``tau / lr`` they stand for (the integral of the
    learning-rate schedule, :func:`..schedules.tau_over_lr`; the ``flow`` engine's clock)."""

    step: Any
    tau: Any


class Target(NamedTuple):
    """Where :meth:`Engine.advance` should go: log point ``index`` at step ``step``,
    with at most ``budget`` units of work in this call (traced int32 scalars)."""

    index: Any
    step: Any
    budget: Any


def dtype_of(static: Static):
    """The JAX float type of a run (``Static.dtype``)."""
    return jnp.float64 if static.dtype == "float64" else jnp.float32


def itemsize(static: Static) -> int:
    """Bytes per float of a run."""
    return np.dtype(static.dtype).itemsize


def divergence_check(diverged, diverged_step, loss, bound, step):
    """The divergence rule at a log point: a live replica whose exact loss is non-finite
    or above ``bound`` is flagged at ``step`` (and frozen from then on by the engine).

    Args: ``diverged`` ``(R,)`` bool, ``diverged_step`` ``(R,)`` int32, ``loss`` ``(R,)``.
    Returns: the new ``(diverged, diverged_step)``.
    """
    bad = ~(jnp.isfinite(loss) & (loss <= bound)) & ~diverged
    return diverged | bad, jnp.where(bad, jnp.asarray(step, jnp.int32), diverged_step)


def log_grid(steps: int, points: int) -> np.ndarray:
    """``points + 1`` log steps: ``0`` then a geometric grid from ``1`` to ``steps``.

    Rounded to integers and made non-decreasing; duplicates are kept so the length (a
    static shape) depends only on ``points``.  Returns int64 ``(points + 1,)``.
    """
    g = np.rint(np.geomspace(1.0, float(steps), points)).astype(np.int64)
    g = np.maximum.accumulate(np.clip(g, 1, steps))
    g[-1] = steps
    return np.concatenate([[0], g]).astype(np.int64)


class Engine(abc.ABC):
    """An engine (see the module docstring for the contract).  Subclasses are frozen
    dataclasses: their fields are engine settings and part of the compiled program.

    An engine owns its knowledge, so that adding one is one file plus
    :func:`..engines.register_engine`: its name, its own config table and defaults
    (:attr:`table`, :attr:`defaults`, :meth:`resolve_settings`), how it is built from a
    config (:meth:`from_config`) and checked (:meth:`check`), its memory (:meth:`memory`),
    and the results it adds to the model's observables (:attr:`extra_metrics`).
    """

    name: ClassVar[str] = ""
    #: what ``Target.budget`` counts, for progress messages
    unit: ClassVar[str] = "steps"
    #: work units of the first compiled call (then adapted to the driver's chunk time)
    first_budget: ClassVar[int] = 64
    #: work units one observation at a log point costs: a call that passes many log points
    #: ends as soon as one that takes many steps, so progress shows within seconds
    observe_work: ClassVar[float] = 0.0
    #: the config table of this engine's own settings (``None``: it has none) ...
    table: ClassVar[str | None] = None
    #: ... and its keys with their defaults
    defaults: ClassVar[dict] = {}
    #: per-replica results of a finished run beyond the model's observables (:meth:`final`):
    #: name -> dimension names (``("replica",)``)
    extra_metrics: ClassVar[dict] = {}

    @classmethod
    def resolve_settings(cls, settings: dict, dtype: str) -> dict:
        """This engine's table (defaults filled in), validated and in canonical form; raise
        :class:`ConfigError` naming ``table.key``.  ``dtype``: the run's float type."""
        return dict(settings)

    @classmethod
    def from_config(cls, cfg: dict) -> Engine:
        """The engine a resolved config asks for (its settings from :attr:`table`)."""
        return cls()

    def program(self, static: Static, reps: Replicas) -> tuple[Static, Replicas]:
        """The static description this engine's program is compiled for, and the replicas
        it takes.  By default both unchanged; an engine whose shapes do not depend on a
        static number may move it into the replicas (traced), so that one program serves
        every value of it (``reduced`` and ``flow`` take ``d`` as :attr:`Replicas.d`)."""
        return static, reps

    def check(self, cfg: dict) -> None:  # noqa: B027 - engines without rules keep the default
        """Raise :class:`ConfigError` if the resolved config ``cfg`` is invalid for this engine."""

    def memory(self, static: Static, R: int, T: int) -> dict[str, int]:
        """Bytes of the engine's state at its peak, by part (``{label: bytes}``), for ``R``
        replicas and ``T`` log points; the logged observables and the runtime are counted
        by the preflight."""
        return {}

    def advice(self, top: str) -> str:
        """What to change when the memory part ``top`` (a label of :meth:`memory`) does not fit."""
        return "reduce replicas, teacher.P or student.m"

    @abc.abstractmethod
    def init(self, static: Static, reps: Replicas, grid: Grid) -> Any:
        """State of all replicas at step 0."""

    @abc.abstractmethod
    def advance(self, static: Static, state, reps: Replicas, target: Target, grid: Grid) -> Any:
        """Advance every live replica toward ``target`` (see :class:`Target`)."""

    @abc.abstractmethod
    def position(self, static: Static, state, grid: Grid):
        """Steps done (int scalar): the minimum over live replicas."""

    @abc.abstractmethod
    def observe(self, static: Static, state, reps: Replicas, grid: Grid, index) -> dict:
        """Observables of every replica at log point ``index``, ``(R, ...)`` arrays.

        May add ``"failed"`` ``(R,)`` bool: replicas that can no longer advance (an ODE
        solver that gave up), which the driver flags as diverged."""

    def flags(self, state):
        """``(diverged, diverged_step)`` ``(R,)`` of a state."""
        return state.diverged, state.diverged_step

    def with_flags(self, state, diverged, diverged_step):
        """``state`` with new divergence flags."""
        return state._replace(diverged=diverged, diverged_step=diverged_step)

    def work(self, static: Static, state):
        """Work done so far (a scalar that grows with every unit ``Target.budget`` counts):
        the step for the SGD engines."""
        return self.position(static, state, None)

    def final(self, static: Static, state) -> dict:
        """Extra per-replica results of the finished run (``(R,)`` arrays), e.g. solver
        statistics; none by default."""
        return {}

    def work_units(self, static: Static, reps: Replicas) -> float | None:
        """Samples per step (batch x replicas), for progress rates; ``None`` for an engine
        that draws no samples."""
        return float(static.batch_size * reps.R)

    def done_fraction(self, static: Static, state, grid: Grid):
        """The fraction of the run done, from which progress estimates the time left (a
        traced scalar in ``[0, 1]``): steps done over steps, by default."""
        return self.position(static, state, grid) / jnp.maximum(grid.step[-1], 1)
