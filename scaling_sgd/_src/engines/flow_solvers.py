"""ODE solvers of the ``flow`` engine, as small objects behind one interface.

A solver integrates ``dC/dtau = f(C)`` for one replica from ``C0`` through the output
times ``ts`` ``(T,)`` (``ts[0] = 0``).  It is resumable, so that the driver can advance it
in chunks: ``init`` returns a state, ``advance`` steps it until output ``j`` is reached
(``reached(state) > j``) or ``budget`` steps were taken, and the state at an output time
holds the solution there (steps land exactly on the output times).  The numbers do not
depend on where the stepping stops and resumes.

* :class:`RKC`: second-order Runge-Kutta-Chebyshev (:mod:`.rkc`), the default: a step
  costs ``O(sqrt(h rho))`` gradient evaluations and nothing else (no Jacobian), memory
  ``O(m (P+m))``; cost: benchmarks/NOTES.md, "The `flow` engine at P = m = 256 and beyond".
* :class:`ROS2`: adaptive second-order Rosenbrock-W with the per-neuron block-diagonal
  Jacobian, the reference stiff solver (``O(m (P+m)^3)`` per step).
* :class:`ROSW`: the same W-method with one scalar per neuron (:mod:`.rosw`): two gradient
  evaluations a step and a division, for flows whose stiff block of a neuron is a multiple
  of the identity (``h4``).
* :class:`Diffrax`: a diffrax solver (``kvaerno5``/``kvaerno3`` implicit with the dense
  Jacobian, ``tsit5``/``dopri5`` explicit), solved in one go at ``init`` (a reference: no
  progress inside, memory ``O(T m (P+m))``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, NamedTuple

from ..lazy import lazy
from . import rkc, rosw

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = [
    "FlowSolver",
    "RKC",
    "ROS2",
    "ROS2State",
    "ROSW",
    "Diffrax",
    "DiffraxState",
    "make_solver",
    "solve",
    "SOLVERS",
    "MAX_STEPS",
]

# Total step budget of one solve: a replica that needs more is flagged as diverged.
MAX_STEPS = 200_000


class FlowSolver(abc.ABC):
    """Interface of a resumable solver for one replica (vmapped by the engine).

    ``f(C)`` is the right-hand side; ``jac(C)`` what the solver's :attr:`jacobian` asks
    for (only solvers that need it call it): ``"blocks"``, the per-neuron diagonal Jacobian
    blocks ``(m, n, n)``; ``"neuron rates"``, ``(f(C), alpha)`` with ``alpha`` ``(m,)`` each
    neuron's relaxation rate (:mod:`.rosw`), from one evaluation.  ``event(C)`` ``(P,)``: a function
    whose first upward zero crossings a solver may locate between its steps
    (:meth:`crossings`); a solver that cannot ignores it.
    """

    jacobian = "blocks"

    @abc.abstractmethod
    def init(self, f, jac, C0, ts, event=None) -> Any:
        """Solver state at ``tau = 0``."""

    @abc.abstractmethod
    def advance(self, f, jac, state, ts, j, budget, frozen, event=None) -> Any:
        """Step until output ``j`` is reached or ``budget`` steps are taken (no steps
        when ``frozen``)."""

    def crossings(self, state):
        """``(P,)`` the first time each component of ``event`` reached ``0`` (``inf``: not
        yet), located between steps; ``None`` for a solver that does not follow events."""
        return None

    @abc.abstractmethod
    def reached(self, state):
        """Number of outputs reached (``ts[:k]`` are behind the solver)."""

    @abc.abstractmethod
    def current(self, state, j):
        """The solution at output ``j`` (reached)."""

    @abc.abstractmethod
    def failed(self, state):
        """The solver gave up (step size underflow, non-finite state or budget)."""

    def steps(self, state):
        """Attempted steps so far (the work the driver's budget counts)."""
        return state.nst

    def time(self, state, ts):
        """The solver's clock ``tau`` now (scalar): the last output time reached, by default."""
        return ts[jnp.clip(self.reached(state) - 1, 0, ts.shape[0] - 1)]

    def rejected(self, state):
        """Rejected step attempts so far (included in :meth:`steps`)."""
        return state.nrej

    def memory(self, R: int, m: int, n: int, T: int, itemsize: int, at_once: int) -> dict[str, int]:
        """Bytes the solver holds beyond the flow's state ``(R, m, n)``, by part, for ``R``
        replicas and ``T`` outputs, of which a step advances ``at_once`` together (``R``
        under ``vmap``, 1 under ``lax.map``)."""
        return {}


def _tiny(dt):
    return 1e-300 if dt == jnp.float64 else 1e-30


class ROS2State(NamedTuple):
    """``t`` time, ``C`` solution at ``t``, ``h`` next step, ``k`` outputs reached,
    ``nst`` steps attempted, ``nrej`` of them rejected, ``bad`` gave up."""

    t: jax.Array
    C: jax.Array
    h: jax.Array
    k: jax.Array
    nst: jax.Array
    nrej: jax.Array
    bad: jax.Array


@dataclasses.dataclass(frozen=True)
class ROS2(FlowSolver):
    """Adaptive ROS2 W-method with the per-neuron block-diagonal Jacobian.

    ROS2 (Verwer, Spee, Blom & Hundsdorfer 1999), ``gamma = 1 + 1/sqrt(2)``::

        (I - gamma h J) k1 = f(y)
        (I - gamma h J) k2 = f(y + h k1) - 2 k1
        y+ = y + (3/2) h k1 + (1/2) h k2,      error estimate (1/2) h (k1 + k2)

    is second order for *any* ``J`` (a W-method), so ``J`` may be the block-diagonal
    approximation: each neuron's own ``(P+m) x (P+m)`` Jacobian (where the stiffness
    lives: a learned neuron's norm and angle relax on ``O(1/a_p)`` while plateaus last
    ``O(d)``); the weak neuron-neuron coupling is treated explicitly.  Cost per step: two
    gradients, ``m`` small Jacobians and LUs, ``O(m (P+m)^3)``, independent of ``d``.
    """

    rtol: float = 1e-5
    atol: float = 1e-9
    max_steps: int = MAX_STEPS

    def memory(self, R: int, m: int, n: int, T: int, itemsize: int, at_once: int) -> dict[str, int]:
        """The per-neuron Jacobian blocks and their LU factors, ``(at_once, m, n, n)``: a
        step's temporaries, held for the replicas it advances together."""
        return {"flow Jacobian blocks": 3 * at_once * m * n * n * itemsize}

    def init(self, f, jac, C0, ts, event=None) -> ROS2State:
        dt = C0.dtype
        # initial step: a small fraction of the first output interval and of |y| / |f|
        f_init = f(C0)
        h0 = 0.01 * jnp.sqrt(jnp.sum(C0 * C0) / jnp.maximum(jnp.sum(f_init * f_init), _tiny(dt)))
        first = jnp.argmax(ts > 0)
        h0 = jnp.minimum(h0, jnp.where(ts[first] > 0, ts[first], 1.0))
        k0 = jnp.sum(ts <= 0)
        zero = jnp.asarray(0, jnp.int32)
        return ROS2State(jnp.asarray(0.0, dt), C0, h0, k0, zero, zero, jnp.asarray(False))

    def _attempt(self, f, jac, C, h):
        dt = C.dtype
        gam = 1.0 + 1.0 / math.sqrt(2.0)
        n = C.shape[1]
        eye = jnp.eye(n, dtype=dt)
        J = jac(C)
        lu = jax.vmap(jax.scipy.linalg.lu_factor)(eye[None] - (gam * h) * J)
        solve = jax.vmap(lambda l, b: jax.scipy.linalg.lu_solve(l, b))
        k1 = solve(lu, f(C))
        k2 = solve(lu, f(C + h * k1) - 2.0 * k1)
        C_new = C + h * (1.5 * k1 + 0.5 * k2)
        scale = self.atol + self.rtol * jnp.maximum(jnp.abs(C), jnp.abs(C_new))
        err = jnp.sqrt(jnp.mean((0.5 * h * (k1 + k2) / scale) ** 2))
        return C_new, err

    def _step(self, f, jac, s: ROS2State, ts) -> ROS2State:
        T = ts.shape[0]
        target = ts[jnp.minimum(s.k, T - 1)]
        h_try = jnp.minimum(s.h, target - s.t)
        hits = s.h >= target - s.t
        C_new, err = self._attempt(f, jac, s.C, h_try)
        finite = jnp.isfinite(err) & jnp.all(jnp.isfinite(C_new))
        acc = finite & (err <= 1.0)
        fac = jnp.where(finite, jnp.clip(0.9 * jnp.maximum(err, 1e-10) ** -0.5, 0.2, 5.0), 0.2)
        t = jnp.where(acc, jnp.where(hits, target, s.t + h_try), s.t)
        C = jnp.where(acc, C_new, s.C)
        # every output time reached (several equal ts at once)
        reached = acc & hits
        k = jnp.where(reached, jnp.sum(ts <= t), s.k)
        h_next = jnp.where(acc & hits, jnp.maximum(s.h, h_try * fac), h_try * fac)
        bad = s.bad | (h_next < 1e-12 * jnp.maximum(t, 1.0))
        return ROS2State(t, C, h_next, k, s.nst + 1, s.nrej + (~acc).astype(jnp.int32), bad)

    def advance(self, f, jac, state: ROS2State, ts, j, budget, frozen, event=None) -> ROS2State:
        T = ts.shape[0]

        def cond(c):
            s, n = c
            return (s.k <= j) & (s.k < T) & (s.nst < self.max_steps) & ~s.bad & ~frozen & (n < budget)

        def body(c):
            s, n = c
            return self._step(f, jac, s, ts), n + 1

        return jax.lax.while_loop(cond, body, (state, jnp.asarray(0, jnp.int32)))[0]

    def time(self, state: ROS2State, ts):
        return state.t

    def reached(self, state: ROS2State):
        return state.k

    def current(self, state: ROS2State, j):
        return state.C

    def failed(self, state: ROS2State):
        return state.bad | (state.nst >= self.max_steps)


class _Stepper(FlowSolver):
    """A solver whose state has the fields ``t, y, k, n_steps, n_rejected, failed, cross``
    and which advances by a function ``_step(f, jac, state, ts, event)`` that leaves a
    finished state unchanged (:mod:`.rkc`, :mod:`.rosw`)."""

    @abc.abstractmethod
    def _step(self, f, jac, state, ts, event):
        """One attempted step."""

    def advance(self, f, jac, state, ts, j, budget, frozen, event=None):
        def cond(c):
            s, n = c
            return (s.k <= j) & (s.k < ts.shape[0]) & ~s.failed & ~frozen & (n < budget)

        def body(c):
            s, n = c
            return self._step(f, jac, s, ts, event), n + 1

        return jax.lax.while_loop(cond, body, (state, jnp.asarray(0, jnp.int32)))[0]

    def time(self, state, ts):
        return state.t

    def reached(self, state):
        return state.k

    def current(self, state, j):
        return state.y

    def failed(self, state):
        return state.failed

    def steps(self, state):
        return state.n_steps

    def rejected(self, state):
        return state.n_rejected

    def crossings(self, state):
        return None if state.cross is None else state.cross.t


@dataclasses.dataclass(frozen=True)
class RKC(_Stepper):
    """Second-order Runge-Kutta-Chebyshev with a power-iteration spectral radius
    (:mod:`.rkc`): the flow's Jacobian is minus a symmetric Hessian, so its spectrum is real
    and ``s`` gradient evaluations buy a stability interval ``0.653 s^2``."""

    rtol: float = 1e-5
    atol: float = 1e-9
    # runs to tau = 5e4 take 3,600 to 5,283 steps at P = m = 32 to 512
    # (benchmarks/NOTES.md, flow wall-time table); far beyond is a stall
    max_steps: int = 2_000_000

    @property
    def settings(self) -> rkc.RKCSettings:
        return rkc.RKCSettings(rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)

    def init(self, f, jac, C0, ts, event=None) -> rkc.RKCState:
        ev = None if event is None else (lambda y, _: event(y))
        return rkc.init(lambda y, _: f(y), C0, ts, None, self.settings, event=ev)

    def _step(self, f, jac, state, ts, event):
        ev = None if event is None else (lambda y, _: event(y))
        return rkc.step(lambda y, _: f(y), state, ts, None, self.settings, event=ev)


@dataclasses.dataclass(frozen=True)
class ROSW(_Stepper):
    """ROS2-W with ``J_i = -max(alpha_i, 0) I`` per neuron (:mod:`.rosw`): two gradients a
    step, no Jacobian.  Its rates are exact for ``h4``; elsewhere it stays correct but slow
    (benchmarks/NOTES.md, "Candidates")."""

    rtol: float = 1e-5
    atol: float = 1e-9
    max_steps: int = 2_000_000
    jacobian = "neuron rates"

    def init(self, f, jac, C0, ts, event=None) -> rosw.ROSWState:
        return rosw.init(jac, C0, ts, event)

    def _step(self, f, jac, state, ts, event):
        return rosw.step(jac, state, ts, self.rtol, self.atol, self.max_steps, event)


class DiffraxState(NamedTuple):
    """The whole solution ``Cs`` ``(T, m, P+m)``, whether it succeeded, and the steps
    attempted (``nst``) and rejected (``nrej``)."""

    Cs: jax.Array
    ok: jax.Array
    nst: jax.Array
    nrej: jax.Array


# config name -> diffrax class name (diffrax is imported when a solve is traced)
_DIFFRAX = {"kvaerno5": "Kvaerno5", "kvaerno3": "Kvaerno3", "tsit5": "Tsit5", "dopri5": "Dopri5"}


@dataclasses.dataclass(frozen=True)
class Diffrax(FlowSolver):
    """A diffrax solver with a PID step-size controller, solved through all outputs at once."""

    name: str = "kvaerno5"
    rtol: float = 1e-5
    atol: float = 1e-9
    max_steps: int = MAX_STEPS

    def memory(self, R: int, m: int, n: int, T: int, itemsize: int, at_once: int) -> dict[str, int]:
        """Every output ``(R, T, m, n)`` (solved in one go, every replica together), and for
        the implicit solvers the dense Jacobian ``(R, (m n)^2)`` and its factors."""
        parts = {"flow saved outputs": R * T * m * n * itemsize}
        if self.name.startswith("kvaerno"):
            parts["flow dense Jacobian"] = 2 * R * (m * n) ** 2 * itemsize
        return parts

    def init(self, f, jac, C0, ts, event=None) -> DiffraxState:
        import diffrax

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda _, C, args: f(C)),
            getattr(diffrax, _DIFFRAX[self.name])(),
            t0=jnp.asarray(0.0, C0.dtype),
            t1=ts[-1],
            dt0=None,
            y0=C0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
            throw=False,
        )
        ok = sol.result == diffrax.RESULTS.successful
        return DiffraxState(sol.ys, ok, sol.stats["num_steps"], sol.stats["num_rejected_steps"])

    def advance(self, f, jac, state, ts, j, budget, frozen, event=None):
        return state

    def reached(self, state: DiffraxState):
        T = state.Cs.shape[0]
        # a failed solve leaves non-finite outputs past the failure
        good = jnp.all(jnp.isfinite(state.Cs.reshape(T, -1)), axis=1)
        return jnp.where(state.ok, T, jnp.where(jnp.all(good), T - 1, jnp.argmin(good)))

    def current(self, state: DiffraxState, j):
        return state.Cs[j]

    def failed(self, state: DiffraxState):
        return ~state.ok


# name -> constructor(rtol, atol); "auto" is the default
SOLVERS = {
    "auto": lambda rtol, atol: RKC(rtol, atol),
    "rkc": lambda rtol, atol: RKC(rtol, atol),
    "ros2": lambda rtol, atol: ROS2(rtol, atol),
    "rosw": lambda rtol, atol: ROSW(rtol, atol),
    **{name: (lambda rtol, atol, name=name: Diffrax(name, rtol, atol)) for name in _DIFFRAX},
}


def make_solver(name: str, rtol: float, atol: float) -> FlowSolver:
    """The solver ``name`` (one of :data:`SOLVERS`) at the given tolerances."""
    if name not in SOLVERS:
        raise ValueError(f"unknown flow solver {name!r}; accepted: {', '.join(SOLVERS)}")
    return SOLVERS[name](rtol, atol)


def solve(solver: FlowSolver, f, jac, C0, ts):
    """Integrate one replica through every output time: ``(Cs (T, m, n), failed, steps)``.

    The reference use of a solver, outside the driver (outputs past a failure are NaN).
    """
    state = solver.init(f, jac, C0, ts)
    big = jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32)

    def out(state, j):
        state = solver.advance(f, jac, state, ts, j, big, jnp.asarray(False))
        ok = solver.reached(state) > j
        return state, jnp.where(ok, solver.current(state, j), jnp.nan)

    state, Cs = jax.lax.scan(out, state, jnp.arange(ts.shape[0]))
    return Cs, solver.failed(state), solver.steps(state)
