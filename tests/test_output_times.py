"""Every flow solver records each output at exactly its time, also when the step that would
land on an output time is rejected: the solvers against the closed form of a linear flow,
and the ``flow`` engine's observables through the driver against a tight reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from scaling_sgd._src import model as mdl
from scaling_sgd._src.engines import driver, flow, flow_solvers
from scaling_sgd._src.schedules import tau_over_lr

from helpers import small_config, spec_parts

# dy/dt = A y with A = -Q diag(lam) Q^T (symmetric, negative definite): y(t) = expm(A t) y0.
# y0 is mostly on the slow modes with 1e-2 on the fast one (rate 100), and the first
# outputs come at 0.005 and 0.01: the first step of rkc and ros2 is cut to land on
# ts[1] and is too long for the fast mode at rtol = 1e-6, so it is rejected.
LAM = np.array([0.05, 1.0, 100.0])
Q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
A = -(Q * LAM) @ Q.T
Y0 = Q @ np.array([1.0, 0.3, 1e-2])
TS = np.concatenate([[0.0, 0.005, 0.01], np.geomspace(0.02, 20.0, 12)])
RTOL, ATOL = 1e-6, 1e-9
# global error allowed at an output, |y| <= 1: the solvers' own errors are below 5e-6 here;
# an output taken one step early (at t = 0 for ts[1]) is off by ~5e-3
TOL = 3e-5
# rosw's scalar J (the fast rate) is far off on the slow modes, and its global error reaches
# 2.4e-4 here: 1e-3 still tells an output taken one step early
TOL_OF = {"rosw": 1e-3}


def _exact(t):
    return scipy.linalg.expm(A * t) @ Y0


def _linear(solver=None):
    """``f``, the ``jac`` the solver asks for, and ``y0`` as one "neuron" row ``(1, 3)``:
    the block Jacobian ``A``, or ``(f, alpha)`` with ``alpha`` the fast rate."""
    Aj = jnp.asarray(A)
    f = lambda C: C @ Aj.T  # noqa: E731
    if solver is not None and solver.jacobian == "neuron rates":
        return f, (lambda C: (f(C), jnp.full((1,), LAM[-1]))), jnp.asarray(Y0[None])
    return f, (lambda C: Aj[None]), jnp.asarray(Y0[None])


def _proposal(solver, before, after) -> float:
    """The step size the attempt from ``before`` would take before any cut to an output
    time (rkc: capped by its stability bound at the ``rho`` the attempt used)."""
    if isinstance(solver, flow_solvers.RKC):
        s_max = solver.settings.s_max
        return min(float(before.h), (s_max**2 - 1) / (1.54 * float(after.rho)))
    return float(before.h)


def _landing_attempt(solver, before, after, ts) -> bool:
    """Whether the attempt from ``before`` was cut to land on the output time ``ts[k]``."""
    return _proposal(solver, before, after) >= float(ts[int(before.k)]) - float(before.t)


def _one_attempt_at_a_time(solver, f, jac, C0, ts):
    """Step with a budget of one attempt per call (the driver's smallest chunk).

    An accepted step that was cut to land on an output leaves the next step size at least
    the proposal it was cut from.  Returns ``(outputs, times, state, landing rejections,
    visited)``: ``outputs[k]`` is
    ``current`` when output ``k`` was first reported reached, with the solver's time then in
    ``times[k]``; ``visited`` maps every time the solver stood at to its solution there.
    """
    T = ts.shape[0]
    one = jax.jit(lambda st: solver.advance(f, jac, st, ts, T - 1, jnp.asarray(1, jnp.int32), jnp.asarray(False)))
    current = jax.jit(solver.current)
    st = jax.jit(lambda c: solver.init(f, jac, c, ts))(C0)
    outputs, times, landing_rejections = {}, {}, 0
    visited = {float(st.t): np.asarray(current(st, 0))}
    for k in range(int(solver.reached(st))):
        outputs[k], times[k] = np.asarray(current(st, k)), float(st.t)
    while int(solver.reached(st)) < T and not bool(solver.failed(st)):
        new = one(st)
        assert int(solver.steps(new)) == int(solver.steps(st)) + 1
        rejected = int(solver.rejected(new)) - int(solver.rejected(st))
        landing = _landing_attempt(solver, st, new, ts)
        landing_rejections += rejected and landing
        if landing and not rejected:  # a step cut to land keeps the longer proposal it was cut from
            assert float(new.h) >= _proposal(solver, st, new), (float(new.t), float(new.h))
        for k in range(int(solver.reached(st)), int(solver.reached(new))):
            outputs[k], times[k] = np.asarray(current(new, k)), float(new.t)
        visited[float(new.t)] = np.asarray(current(new, 0))
        st = new
    return outputs, times, st, landing_rejections, visited


@pytest.mark.parametrize("name", ["rkc", "ros2", "rosw"])
def test_stepping_solvers_record_every_output_at_its_time_through_rejected_landings(name):
    """rkc, ros2 and rosw land their steps on the output times.  One attempt at a time: a rejected
    attempt that would have landed on ``ts[k]`` leaves ``k`` where it is, and whenever output
    ``k`` is reported reached the solver is at exactly ``ts[k]`` with ``y = expm(A ts[k]) y0``.
    The same outputs come from :func:`flow_solvers.solve` in one call, bit for bit."""
    solver, tol = flow_solvers.make_solver(name, RTOL, ATOL), TOL_OF.get(name, TOL)
    f, jac, C0 = _linear(solver)
    ts = jnp.asarray(TS)
    outputs, times, st, landing_rejections, _ = _one_attempt_at_a_time(solver, f, jac, C0, ts)
    assert landing_rejections > 0 and int(solver.rejected(st)) >= landing_rejections  # not vacuous
    assert not bool(solver.failed(st)) and sorted(outputs) == list(range(len(TS)))
    for k, t in enumerate(TS):
        assert times[k] == t, (k, times[k], t)
        np.testing.assert_allclose(outputs[k][0], _exact(t), rtol=0, atol=tol, err_msg=f"output {k} at t = {t}")
    Cs, failed, steps = jax.jit(lambda c: flow_solvers.solve(solver, f, jac, c, ts))(C0)
    assert not bool(failed) and int(steps) == int(solver.steps(st))
    np.testing.assert_array_equal(np.asarray(Cs), np.stack([outputs[k] for k in range(len(TS))]))


@pytest.mark.parametrize("name", ["tsit5", "kvaerno5"])
def test_diffrax_solvers_record_every_output_at_its_time_with_rejections(name):
    """The diffrax solvers save at the output times (interpolating inside a step) and reject
    steps on this problem too: every output is ``expm(A ts[k]) y0``."""
    solver = flow_solvers.make_solver(name, RTOL, ATOL)
    f, jac, C0 = _linear()  # the block Jacobian: diffrax calls neither
    ts = jnp.asarray(TS)
    Cs, failed, _ = jax.jit(lambda c: flow_solvers.solve(solver, f, jac, c, ts))(C0)
    state = jax.jit(lambda c: solver.init(f, jac, c, ts))(C0)
    assert int(solver.rejected(state)) > 0 and not bool(failed)
    for k, t in enumerate(TS):
        np.testing.assert_allclose(np.asarray(Cs[k, 0]), _exact(t), rtol=0, atol=TOL, err_msg=f"output {k} at t = {t}")


@pytest.mark.slow
def test_engine_observables_are_taken_at_the_output_times_through_rejected_landings():
    """The ``flow`` engine through the driver, in chunks of a step or two, on a grid with an
    output at nearly every unit step through the escape (so most rkc steps are cut to land on
    an output) where a step that would land on an output is rejected.  Every logged
    observable is that of the solver's state at exactly ``tau = lr * tau_over_lr(step)``
    (keyed by the solver's time, not by its output index), and close to a Tsit5 solution at rtol = 1e-10."""
    lr = 0.02
    cfg = small_config(
        **{
            "data.d": 30,
            "teacher.P": 3,
            "student.m": 4,
            "teacher.activation": {2: 0.5, 3: 0.4, 4: 0.7},
            "train.dtype": "float64",
            "train.engine": "flow",
            "train.lr": lr,
            "train.steps": 200,
            "log.points": 200,
        }
    )
    static, reps, log_steps = spec_parts(cfg)
    engine = flow.Flow.from_config(cfg)
    assert isinstance(engine.solver, flow_solvers.RKC)
    out = driver.simulate(engine, static, reps, log_steps, first_budget=2, chunk_seconds=1e-4)
    assert not out["diverged"].any()

    a = jnp.asarray(reps.a[0])
    C0 = flow.init(static, int(reps.seed[0]), reps.init_scale)
    ts = jnp.asarray(lr * tau_over_lr(static.schedule, log_steps, log_steps[-1], static.schedule_n0))
    f = lambda c: -flow.gradient(static.model, c, a)  # noqa: E731
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    observe = jax.jit(jax.vmap(lambda c: mdl.observables(static.model, c, a, None, static.with_overlap)))
    # the engine's solver on the same problem, one attempt at a time: its state at every time
    # it stands at, and a rejected attempt that would have landed on an output
    *_, landing_rejections, visited = _one_attempt_at_a_time(engine.solver, f, jac, C0, ts)
    assert landing_rejections > 0
    missing = [t for t in np.asarray(ts).tolist() if t not in visited]
    assert not missing, f"the solver never stands at the output times {missing}"
    at_time = observe(jnp.stack([visited[t] for t in np.asarray(ts).tolist()]))
    ref_solver = flow_solvers.Diffrax("tsit5", 1e-10, 1e-13)
    Cs, failed, _ = jax.jit(lambda c: flow_solvers.solve(ref_solver, f, jac, c, ts))(C0)
    ref = observe(Cs)
    assert not bool(failed) and float(ref["loss"][-1]) < 0.5 * float(ref["loss"][0])  # it learns on this grid
    for key in ("loss", "skill", "alignment", "norm2"):
        np.testing.assert_allclose(out[key][0], np.asarray(at_time[key]), rtol=1e-10, atol=1e-14, err_msg=key)
        np.testing.assert_allclose(out[key][0], np.asarray(ref[key]), rtol=0, atol=2e-3, err_msg=key)
