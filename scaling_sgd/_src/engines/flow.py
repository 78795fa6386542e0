"""Engine ``flow``: population gradient flow of ``(1/2) MSE`` (docs/model.md §2).

``dW/dtau = -grad_W (1/2) MSE(W)``, the ``lr -> 0`` limit of online SGD with
``tau = lr * step`` (for a schedule, ``tau(step) = lr * integral of its factor``).  The
gradient of the closed-form loss keeps every ``w_i`` in ``span{theta_p} + span{w_j(0)}``,
so the flow runs exactly in ``P + m`` coordinates ``C`` (``W = C [theta; Q]``, as in
``reduced``), whatever ``d`` is: ``d`` only enters through the initial condition.

Closed-form gradient (tested against ``jax.grad`` of :func:`model.population_loss`), with
``r2 = ||w_i||^2``, cosines ``G = W W^T / (r r^T)``, ``M = W theta^T / r``::

    grad_{w_i} (1/2) MSE = [sum_j A_ij r2_j - sum_p a_p B_ip] w_i
                           + sum_j r_i r_j K_ss'(G_ij) w_j  -  sum_p a_p r_i K_st'(M_ip) theta_p
    A = 2 K_ss(G) - G K_ss'(G),   B = 2 K_st(M) - M K_st'(M).

Stiffness: once a direction is learned, its neuron relaxes on an ``O(1/a_p)`` time scale
while the remaining plateaus last ``O(d)``; an explicit solver is then limited by
stability, not accuracy.  ``flow.solver = "auto"`` (= ``"rkc"``) is second-order
Runge-Kutta-Chebyshev (:class:`.flow_solvers.RKC`): the Jacobian is minus a symmetric
Hessian, so its spectrum is real and ``s`` gradient evaluations buy a stability interval
``~0.653 s^2``, with no Jacobian formed.  ``"rosw"`` (:class:`.flow_solvers.ROSW`) is a
Rosenbrock-W method with one scalar per neuron, :func:`gradient_and_rate`'s ``alpha``: two
gradients a step, fewer steps than RKC where the flow's stiff modes are those rates (a
single Hermite degree >= 3; benchmarks/NOTES.md, "P = m = 1024 on the CPU").  ``"ros2"``
(a Rosenbrock-W method with the per-neuron block-diagonal Jacobian) and the diffrax solvers (``"kvaerno5"`` implicit with
the dense ``m(P+m)`` Jacobian, ``"tsit5"``/``"dopri5"`` explicit) are references
(``"rkc"`` against ``"ros2"``: benchmarks/NOTES.md, "The `flow` engine at P = m = 256 and
beyond").

Settings: the ``[flow]`` table (``solver``, ``rtol``, ``atol``), owned by :class:`Flow`.

Output: the observables at ``tau = lr * tau_over_lr(step)`` for every log step, vmapped
over replicas (each replica has its own ``lr``, hence its own time grid).  With the ``rkc``
solver, also ``crossing_step`` ``(R, P)``: the step at which each direction's emergence
observable (the config's ``[analysis]``: ``skill`` or ``alignment`` and its threshold) first
reaches the threshold, located between solver steps (:mod:`.crossings`), not between log
points; ``inf`` when it does not within the run.  Divergence
follows the driver's rule (a loss that is non-finite or above the bound at a log point);
a replica whose solver gives up is flagged at the first log point it does not reach.
Either way it is frozen.

The program takes ``d`` as a traced number (:meth:`Flow.program`): a sweep over ``d``
compiles once (except with ``match_sgd``, whose start has ``d`` in its shapes).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np

from .. import model as mdl
from ..errors import ConfigError, ConfigWarning
from ..lazy import lazy
from ..optim import require_plain_sgd
from ..schedules import step_at
from ..validate import check_choice, check_num, check_representable, finfo
from .base import MAX_STEPS_INT32, STATE_COPIES, Engine, Grid, Replicas, Static, Target, itemsize
from .base import dtype_of as _dtype
from .flow_solvers import SOLVERS, FlowSolver, make_solver
from .reduced import coordinates
from .reduced import init as reduced_init

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = [
    "Flow",
    "FlowRun",
    "gram",
    "gradient",
    "gradient_and_rate",
    "gradient_row",
    "block_jacobian",
    "loss",
    "init",
    "vector_field",
    "direction_observable",
]

# Arrays (R, m, P + m) the compiled gradient and observables hold at once: the kernels of
# the Gram matrices by Horner's rule and their derivatives (peak RSS of rkc runs, d = 4 m,
# float32, the log-point loss in float64, less a tiny run's: 16 to 17 such arrays at
# P = m = 512 and 1024, 26 at P = m = 256 where the runtime's spread is a larger share).
GRAM_COPIES = 20


#: From this many neurons on, the gradient's Gram matrix ``C C^T`` is three block products
#: (:func:`gram`): a quarter of its flops, an eighth of a gradient's, saved.
GRAM_BLOCKS_FROM = 512


def gram(C):
    """``C C^T`` ``(m, m)``; for ``m >= GRAM_BLOCKS_FROM`` (even) from the 2 x 2 blocks of the
    row halves ``A, B``: ``A A^T``, ``A B^T``, ``B B^T``, and ``B A^T = (A B^T)^T``.  Each entry
    is the same dot product either way (on the CPU of benchmarks/NOTES.md the two agree bit
    for bit from ``m = 128`` on, float32 and float64)."""
    m = C.shape[0]
    if m < GRAM_BLOCKS_FROM or m % 2:
        return C @ C.T
    A, B = C[: m // 2], C[m // 2 :]
    AB = A @ B.T
    return jnp.block([[A @ A.T, AB], [AB.T, B @ B.T]])


def loss(model: mdl.Model, C, a):
    """``(1/2) MSE`` of coordinates ``C`` ``(m, P + m)`` (first ``P`` columns on ``theta``)."""
    return 0.5 * mdl.population_loss(model, C @ C.T, C[:, : model.P], a)


def gradient(model: mdl.Model, C, a):
    """Closed-form ``grad_C (1/2) MSE`` ``(m, P + m)`` (see the module docstring)."""
    return gradient_and_rate(model, C, a)[0]


def gradient_and_rate(model: mdl.Model, C, a):
    """:func:`gradient` and each neuron's relaxation rate ``alpha`` ``(m,)``:
    ``alpha_i = A_i. r2 - B_i. a + r2_i K_ss'(1)``, the rate at which the tangent directions
    of a learned neuron relax (``4 a_p`` for ``h4``), the scalar Jacobian of :mod:`.rosw`."""
    P = model.P
    r2 = jnp.sum(C * C, axis=-1)
    r = jnp.sqrt(jnp.maximum(r2, 1e-300 if C.dtype == jnp.float64 else 1e-30))
    rr = r[:, None] * r[None, :]
    G = gram(C) / rr
    G = jnp.where(jnp.eye(G.shape[0], dtype=bool), jnp.ones_like(G), G)
    M = C[:, :P] / r[:, None]
    s, t = model.student, model.teacher
    dKG = s.kernel_derivative(G)
    A = 2.0 * s.kernel(G) - G * dKG
    dKM = s.kernel_derivative(M, t)
    Bm = 2.0 * s.kernel(M, t) - M * dKM
    coef = A @ r2 - Bm @ a  # (m,)
    g = coef[:, None] * C + (rr * dKG) @ C
    alpha = coef + r2 * s.kernel_derivative(jnp.ones((), C.dtype))
    return g.at[:, :P].add(-(r[:, None] * dKM * a[None, :])), alpha


def direction_observable(model: mdl.Model, C, a, name: str):
    """``skill`` or ``alignment`` ``(P,)`` of coordinates ``C`` (:func:`.model.direction_observables`),
    at ``O(m (P + m))``: without the Gram matrix the loss needs."""
    r2 = jnp.sum(C * C, axis=-1)
    r = jnp.sqrt(jnp.maximum(r2, 1e-300 if C.dtype == jnp.float64 else 1e-30))
    return mdl.direction_observables(model, r2, C[:, : model.P] / r[:, None], a)[name]


def init(static: Static, seed, init_scale, match_sgd: bool = False, d=None):
    """Initial coordinates ``(m, P + m)`` with the law of SGD's ``W(0)``.

    ``match_sgd=False``: drawn directly in ``P + m`` coordinates (Bartlett, cost independent
    of ``d``; the same numbers as the ``reduced`` engine's start).  ``match_sgd=True``: the
    ``sgd`` engine's own ``W(0)`` for this seed (``O(m d)``), so that ``flow`` and ``sgd``
    runs with the same seed start from the same weights (paired comparisons).  ``d``: the
    input dimension as a traced number (default ``static.model.d``; not with ``match_sgd``).
    """
    m = static.model
    if not match_sgd:
        return reduced_init(static, seed, init_scale, d).C[:, : m.P + m.m]
    from .sgd import init as sgd_init

    st = sgd_init(static, seed, init_scale)
    return coordinates(st.W, m.P if st.theta is None else st.theta)


def vector_field(model: mdl.Model):
    """``F(C, a) = -grad_C (1/2) MSE``: the flow's right-hand side, ``(m, P+m) -> (m, P+m)``."""

    def F(C, a):
        return -gradient(model, C, a)

    return F


def gradient_row(model: mdl.Model, ci, C, i, a):
    """Row ``i`` of :func:`gradient` with ``c_i`` replaced by ``ci`` ``(P + m,)``: ``O(m (P+m))``.

    Its Jacobian in ``ci`` is the diagonal block ``d g_i / d c_i`` used by the ROS2 solver
    (no copy of ``C`` is made, so ``vmap(jacfwd)`` over neurons stays ``O(m^2 (P+m)^2)``).
    """
    P = model.P
    tiny = 1e-300 if C.dtype == jnp.float64 else 1e-30
    is_i = jnp.arange(C.shape[0]) == i
    r2 = jnp.where(is_i, ci @ ci, jnp.sum(C * C, axis=-1))
    r = jnp.sqrt(jnp.maximum(r2, tiny))
    Gi = jnp.where(is_i, 1.0, (C @ ci) / (r * r[i]))
    Mi = ci[:P] / r[i]
    s, t = model.student, model.teacher
    dKG = s.kernel_derivative(Gi)
    dKM = s.kernel_derivative(Mi, t)
    coef = (2.0 * s.kernel(Gi) - Gi * dKG) @ r2 - (2.0 * s.kernel(Mi, t) - Mi * dKM) @ a
    w = r[i] * r * dKG  # (m,) weights of the rows c_j (row i is ci, not C[i])
    g = (coef + w[i]) * ci + jnp.where(is_i, 0.0, w) @ C
    return g.at[:P].add(-(r[i] * dKM * a))


def block_jacobian(model: mdl.Model, C, a):
    """Diagonal blocks ``d f_i / d c_i`` ``(m, P+m, P+m)`` of ``f = -grad (1/2) MSE``."""
    m = C.shape[0]
    jac = jax.jacfwd(lambda ci, i: -gradient_row(model, ci, C, i, a))
    return jax.vmap(jac)(C, jnp.arange(m))


class FlowRun(NamedTuple):
    """State of all replicas: the solver states (batched), the output times
    ``ts`` ``(R, T)``, the divergence flags, and what turns the solver's clock into steps:
    ``lr`` ``(R,)`` and the last log step ``end`` ``()``."""

    solver: object
    ts: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array
    lr: jax.Array
    end: jax.Array


@dataclasses.dataclass(frozen=True)
class Flow(Engine):
    """Population gradient flow (see the module docstring).

    Attributes:
        solver: a :class:`.flow_solvers.FlowSolver`.
        match_sgd: start from the ``sgd`` engine's ``W(0)`` of each seed (paired
            comparisons) instead of drawing ``P + m`` coordinates directly.
        replicas: how the solver steps map over replicas: ``"map"`` (one after another,
            each with its own step sizes and stage counts) or ``"vmap"`` (in lockstep: every
            loop runs to the largest count over replicas).  Default ``"map"`` (benchmarks/NOTES.md,
            "Replicas: `lax.map`, not `vmap`").
        emergence: ``(observable, threshold)`` whose crossings the solver locates
            (``crossing_step``; the config's ``[analysis]``).
    """

    solver: FlowSolver = dataclasses.field(default_factory=lambda: make_solver("auto", 1e-5, 1e-9))
    match_sgd: bool = False
    replicas: str = "map"
    emergence: tuple = ("skill", 0.5)
    name = "flow"
    unit = "solver steps"
    # a solver step at P = m = 1024 costs ~11 gradients (0.5 s on 2 cores); the exact loss
    # at a log point ~16 gradients in float32 (double-word Gram): about a step
    first_budget = 4
    observe_work = 1.0
    table = "flow"
    defaults = {"rtol": 1e-5, "atol": 1e-9, "solver": "auto"}
    extra_metrics = {"solver_steps": ("replica",), "solver_fevals": ("replica",), "crossing_step": ("replica", "direction")}

    @classmethod
    def resolve_settings(cls, settings: dict, dtype: str) -> dict:
        fl = dict(settings)
        # a relative tolerance below the dtype's resolution cannot be met: the solver would give up
        eps = float(finfo(dtype).eps)
        rtol = check_num("flow.rtol", fl["rtol"], 0.0, lo_open=True)
        fl["rtol"] = check_representable("flow.rtol", rtol, dtype, eps, 1.0, f"finer than {dtype} resolution")
        fl["atol"] = check_representable("flow.atol", check_num("flow.atol", fl["atol"], 0.0, lo_open=True), dtype)
        fl["solver"] = check_choice("flow.solver", fl["solver"], SOLVERS)
        return fl

    @classmethod
    def from_config(cls, cfg: dict) -> Flow:
        fl, an = cfg["flow"], cfg["analysis"]
        return cls(solver=make_solver(fl["solver"], fl["rtol"], fl["atol"]), emergence=(an["observable"], float(an["threshold"])))

    def check(self, cfg: dict) -> None:
        d, P, m = cfg["data"]["d"], cfg["teacher"]["P"], cfg["student"]["m"]
        if d < P + m:
            raise ConfigError("data.d", f"= {d} is too small for engine 'flow'; accepted: d >= P + m = {P + m}")
        require_plain_sgd(cfg, "flow")
        B = cfg["train"]["batch_size"]
        if B != 1:
            # Not an error: the flow is the lr -> 0 limit of SGD at any batch size (the batch only
            # scales the noise), so a sweep over engines at a fixed batch size stays valid.
            warnings.warn(
                ConfigWarning(
                    f"train.batch_size: = {B} has no effect in engine 'flow' (the population flow has no batch); "
                    "its results equal batch_size = 1"
                ),
                stacklevel=4,
            )

    def memory(self, static: Static, R: int, T: int) -> dict[str, int]:
        """The coordinates ``(R, m, P + m)`` with a solver step's working copies, the
        Gram-matrix temporaries of the gradient and the observables (:data:`GRAM_COPIES`
        arrays ``(R, m, P + m)``), and what the solver holds
        (:meth:`.flow_solvers.FlowSolver.memory`; under ``lax.map`` a step's temporaries are
        those of one replica)."""
        m, f = static.model, itemsize(static)
        n = m.P + m.m
        return {
            "flow state": int(STATE_COPIES * 4 * R * m.m * n * f),
            "flow Gram temporaries": int(GRAM_COPIES * R * m.m * n * f),
            **self.solver.memory(R, m.m, n, T, f, R if self.replicas == "vmap" else 1),
        }

    def advice(self, top: str) -> str:
        if "Jacobian" in top:
            return 'reduce replicas, teacher.P or student.m, or use flow.solver = "rkc" (no Jacobian)'
        return super().advice(top)

    def program(self, static: Static, reps: Replicas) -> tuple[Static, Replicas]:
        """``d`` as a traced number (:attr:`.base.Replicas.d`); the static ``d`` becomes
        ``P + m``, the smallest the flow accepts.  With ``match_sgd`` (``d`` is a shape of
        the start) or a ``d`` past int32, unchanged."""
        d, model = static.model.d, static.model
        if self.match_sgd or d > MAX_STEPS_INT32:
            return static, reps
        model = dataclasses.replace(model, d=model.P + model.m)
        return dataclasses.replace(static, model=model), dataclasses.replace(reps, d=np.int32(d))

    def _f(self, static: Static, a):
        """``f = -gradient`` and what the solver's ``jacobian`` asks for."""
        model = static.model
        if self.solver.jacobian == "neuron rates":

            def jac(C):
                g, alpha = gradient_and_rate(model, C, a)
                return -g, alpha

        else:

            def jac(C):
                return block_jacobian(model, C, a)

        return (lambda C: -gradient(model, C, a)), jac

    def _event(self, static: Static, a):
        """``observable - threshold`` ``(P,)``: its zeros are the emergences."""
        name, threshold = self.emergence
        return lambda C: direction_observable(static.model, C, a, name) - threshold

    def init(self, static: Static, reps: Replicas, grid: Grid) -> FlowRun:
        dt = _dtype(static)
        lr = reps.lr.astype(dt)
        a = reps.a.astype(dt)
        C0 = jax.vmap(lambda s: init(static, s, reps.init_scale, self.match_sgd, reps.d))(reps.seed)
        ts = lr[:, None] * grid.tau.astype(dt)[None, :]  # (R, T)

        def one(c, aa, t):
            f, jac = self._f(static, aa)
            return self.solver.init(f, jac, c, t, self._event(static, aa))

        solver = jax.vmap(one)(C0, a, ts)
        R = ts.shape[0]
        return FlowRun(solver, ts, jnp.zeros((R,), bool), jnp.full((R,), -1, jnp.int32), lr, grid.step[-1])

    def advance(self, static: Static, run: FlowRun, reps: Replicas, target: Target, grid: Grid) -> FlowRun:
        a = reps.a.astype(_dtype(static))

        def one(s, aa, t, frozen):
            f, jac = self._f(static, aa)
            return self.solver.advance(f, jac, s, t, target.index, target.budget, frozen, self._event(static, aa))

        if self.replicas == "vmap":
            return run._replace(solver=jax.vmap(one)(run.solver, a, run.ts, run.diverged))
        return run._replace(solver=jax.lax.map(lambda x: one(*x), (run.solver, a, run.ts, run.diverged)))

    def final(self, static: Static, run: FlowRun) -> dict:
        steps = jax.vmap(self.solver.steps)(run.solver)
        out = {"solver_steps": steps}
        if hasattr(run.solver, "n_fevals"):
            out["solver_fevals"] = run.solver.n_fevals
        t = self.solver.crossings(run.solver)
        if t is not None:
            tau = np.asarray(t, np.float64) / np.asarray(run.lr, np.float64)[:, None]
            out["crossing_step"] = step_at(static.schedule, tau, int(run.end), static.schedule_n0)
        return out

    def work_units(self, static: Static, reps: Replicas) -> None:
        """None: the flow draws no samples (its progress shows no samples/s)."""
        return None

    def done_fraction(self, static: Static, run: FlowRun, grid: Grid):
        """The solver's clock over its end, ``tau / tau_end``, of the live replica furthest
        behind (each replica has its own ``tau`` grid, ``lr tau_over_lr(step)``)."""
        tau = jax.vmap(self.solver.time)(run.solver, run.ts)
        f = tau / jnp.maximum(run.ts[:, -1], jnp.finfo(run.ts.dtype).tiny)
        live = ~run.diverged & ~jax.vmap(self.solver.failed)(run.solver)
        return jnp.clip(jnp.min(jnp.where(live, f, 1.0)), 0.0, 1.0)

    def work(self, static: Static, run: FlowRun):
        """Solver steps of the replica that took the most (a vmapped loop runs that many)."""
        return jnp.max(jax.vmap(self.solver.steps)(run.solver))

    def position(self, static: Static, run: FlowRun, grid: Grid):
        """The log step of the earliest output reached by a live replica."""
        k = jax.vmap(self.solver.reached)(run.solver)
        live = ~run.diverged & ~jax.vmap(self.solver.failed)(run.solver)
        T = grid.step.shape[0]
        k_min = jnp.min(jnp.where(live, k, T))
        return grid.step[jnp.clip(k_min - 1, 0, T - 1)]

    def observe(self, static: Static, run: FlowRun, reps: Replicas, grid: Grid, index) -> dict:
        a = reps.a.astype(_dtype(static))
        model = static.model
        # a frozen replica shows the output where it was flagged (the first log point at
        # its diverged_step), whatever the solver holds past it
        at = jnp.where(run.diverged, jnp.searchsorted(grid.step, run.diverged_step), index)
        C = jax.vmap(self.solver.current)(run.solver, at)
        # model.observables: the loss free of cancellation error in float32 too
        obs = jax.vmap(lambda c, aa: mdl.observables(model, c, aa, None, static.with_overlap))(C, a)
        # a replica that gave up before this output is flagged here
        reached = jax.vmap(self.solver.reached)(run.solver) > index
        obs["failed"] = jax.vmap(self.solver.failed)(run.solver) & ~reached
        return obs
