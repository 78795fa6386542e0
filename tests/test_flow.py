"""The ``flow`` engine: closed-form gradient, solver accuracy, theory and the SGD limit."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src.config import ConfigError
from scaling_sgd._src.engines import driver, flow, flow_solvers, sgd
from scaling_sgd._src.schedules import factor as schedule_factor
from scaling_sgd._src.schedules import tau_over_lr
from scaling_sgd.analysis.emergence import emergence_times
from scaling_sgd.analysis.theory import escape_time_small_m0, single_direction_flow

from helpers import assert_close, small_config, spec_parts


def test_closed_form_gradient_equals_autodiff_and_block_jacobian():
    act_t, act_s = {2: 0.5, 3: 0.4, 4: 0.7}, {1: 0.2, 3: 0.6, 4: 0.9}
    static, reps, _ = spec_parts(
        small_config(**{"data.d": 30, "teacher.P": 3, "student.m": 4, "teacher.activation": act_t, "student.activation": act_s})
    )
    model = static.model
    C = jax.random.normal(jax.random.PRNGKey(0), (4, 7), jnp.float64)
    a = jnp.asarray(reps.a[0])
    g_auto = jax.grad(lambda c: flow.loss(model, c, a))(C)
    assert_close(flow.gradient(model, C, a), g_auto, rtol=1e-12, atol=1e-12)
    # the diagonal Jacobian blocks used by the ROS2 solver
    J = jax.jacfwd(lambda c: -flow.gradient(model, c, a))(C)
    Jb = flow.block_jacobian(model, C, a)
    for i in range(4):
        assert_close(Jb[i], J[i, :, i, :], rtol=1e-11, atol=1e-11)


@pytest.mark.slow
def test_ros2_agrees_with_kvaerno5_and_converges():
    """The block-Jacobian W-method against diffrax's implicit Kvaerno5 (dense Jacobian) on a
    staircase that goes through plateaus and learned (stiff) phases."""
    cfg = small_config(
        **{"data.d": 30, "teacher.P": 3, "student.m": 4, "teacher.activation": {2: 0.5, 3: 0.4, 4: 0.7}, "train.dtype": "float64"}
    )
    static, reps, _ = spec_parts(cfg)
    a = jnp.asarray(reps.a[0])
    C0 = flow.init(static, 3, 0.3)
    ts = jnp.asarray(np.concatenate([[0.0], np.geomspace(0.1, 2000.0, 30)]))
    f = lambda c: -flow.gradient(static.model, c, a)  # noqa: E731
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    ref, failed_ref, _ = jax.jit(lambda c: flow_solvers.solve(flow_solvers.Diffrax("kvaerno5", 1e-10, 1e-13), f, jac, c, ts))(C0)
    errs = []
    for rtol in (1e-4, 1e-6):
        y, failed, n = jax.jit(lambda c, rtol=rtol: flow_solvers.solve(flow_solvers.ROS2(rtol, rtol * 1e-3), f, jac, c, ts))(C0)
        assert not bool(failed) and not bool(failed_ref)
        errs.append(float(jnp.max(jnp.abs(y - ref))))
    loss = jax.vmap(lambda c: 2 * flow.loss(static.model, c, a))(ref)
    assert loss[-1] < 0.5 * loss[0]  # the run does learn (it is not a trivial plateau)
    assert errs[1] < 1e-5 and errs[1] < 0.1 * errs[0], errs


def test_single_direction_escape_time_matches_theory():
    """P = m = 1, h4: the engine's emergence step equals the exact 2-variable flow of
    ``analysis.theory`` from each replica's own (m0, r2_0); and for large d (small m0) it
    approaches the closed form ``1/(8 a m0^2)``."""
    d, lr = 4096, 1e-3
    # seeds whose |m0| sqrt(d) is O(1) (not a rare near-zero overlap: the escape then fits the run)
    st, _, _ = spec_parts(small_config(**{"data.d": d, "teacher.P": 1, "student.m": 1, "train.dtype": "float64"}))
    C0 = np.asarray(jax.vmap(lambda s: flow.init(st, s, 0.1))(jnp.arange(64, dtype=jnp.uint32)))
    z = np.abs(C0[:, 0, 0]) / np.linalg.norm(C0[:, 0], axis=-1) * np.sqrt(d)
    seeds = [int(s) for s in np.flatnonzero((z > 0.5) & (z < 3.0))[:8]]
    cfg = small_config(
        **{
            "data.d": d,
            "teacher.P": 1,
            "student.m": 1,
            "train.engine": "flow",
            "train.lr": lr,
            "train.seed": seeds,
            "train.steps": 2_000_000_000,
            "log.points": 3000,
            "train.dtype": "float64",
            "flow.rtol": 1e-8,
            "flow.atol": 1e-12,
        }
    )
    m = ss.run(cfg).metrics
    m0 = np.abs(m["overlap"][:, 0, 0, 0])
    t, cens = emergence_times(m["step"], m["skill"], 0.5)
    assert not cens.any()
    exact = single_direction_flow(m0, m["norm2"][:, 0, 0], m["a"][:, 0]) / lr
    assert_close(t[:, 0], exact, rtol=1e-2)  # log-grid interpolation of the crossing (cells of 0.7%)
    ratio = t[:, 0] * lr / escape_time_small_m0(m0, m["a"][:, 0])
    assert np.all((ratio > 0.9) & (ratio < 1.1)), ratio


@pytest.mark.slow
def test_flow_is_the_small_lr_limit_of_sgd():
    """Median emergence step of direction 1: ``sgd`` at small lr vs ``flow`` from the same
    ``W(0)`` (paired by seed), within 10%.  Seeds are chosen by their initial condition (the
    largest initial overlap with direction 1 from a pool), so the escape fits a short run."""
    d, P, m_, lr = 16, 2, 2, 3e-5
    pool = small_config(**{"data.d": d, "teacher.P": P, "student.m": m_, "train.dtype": "float64"})
    static, _, _ = spec_parts(pool)
    W0 = jax.jit(jax.vmap(lambda s: sgd.init(static, s, 0.3).W))(jnp.arange(400, dtype=jnp.uint32))
    cos0 = np.max(np.abs(np.asarray(W0[:, :, 0])) / np.linalg.norm(np.asarray(W0), axis=-1), axis=1)
    seeds = [int(s) for s in np.argsort(cos0)[-48:]]
    over = {
        "data.d": d,
        "teacher.P": P,
        "student.m": m_,
        "train.lr": lr,
        "train.steps": 70_000,
        "train.seed": seeds,
        "log.points": 120,
        "train.dtype": "float64",
        "student.init_scale": 0.3,
    }
    s = ss.run(small_config(**over)).metrics
    static, reps, grid = spec_parts(small_config(**{**over, "train.engine": "flow"}))
    f = driver.simulate(flow.Flow(match_sgd=True), static, reps, grid)
    _, idx = np.unique(grid, return_index=True)
    assert_close(f["loss"][:, 0], s["loss"][:, 0], rtol=1e-12)  # same W(0)
    ts, cs = emergence_times(s["step"], s["skill"][..., :1])
    tf, cf = emergence_times(s["step"], f["skill"][:, idx, :1])
    assert not s["diverged"].any() and not cs.any() and not cf.any()
    ratio = np.median(ts[:, 0]) / np.median(tf[:, 0])
    print("median emergence sgd/flow", ratio, "paired median ratio", np.median(ts[:, 0] / tf[:, 0]))
    assert 0.9 < ratio < 1.1, ratio


@pytest.mark.slow
def test_results_format_no_retrace_and_schedule_time():
    base = {"train.engine": "flow", "train.lr": [1e-3, 2e-3], "train.steps": 1000, "log.points": 8}
    m = ss.run(small_config(**base)).metrics
    sg = ss.run(small_config(**{**base, "train.engine": "sgd"})).metrics
    for k in ("step", "loss", "alignment", "skill", "norm2", "overlap", "diverged", "diverged_step", "seed", "lr"):
        assert m[k].shape == sg[k].shape and m[k].dtype == sg[k].dtype, k
    assert not m["diverged"].any() and np.all(m["diverged_step"] == -1)
    n0 = driver.compiled_programs()
    ss.run(small_config(**{**base, "train.lr": [5e-4, 1e-3], "train.seed": 4, "train.steps": 5000, "teacher.beta": 2.0}))
    assert driver.compiled_programs() == n0
    # tau(step)/lr is the integral of the schedule factor: equals the sum to O(1)
    T = 10_000
    for sched, n0 in (("cosine", 0), ("linear", 0), ("inverse_time", 0), ("inverse_sqrt", 0), ("inverse_sqrt", 37.0)):
        f = np.asarray(schedule_factor(sched, jnp.arange(T), T, n0), np.float64)
        steps = np.array([1, 100, 5000, T])
        tau = tau_over_lr(sched, steps, T, n0)
        assert np.max(np.abs(tau - np.cumsum(f)[steps - 1])) < 1.0, sched
        assert tau[-1] < 0.9 * T, sched  # the schedule does decay (the comparison is not with the constant one)
    # inverse_sqrt: the closed form 2 c (sqrt(1 + t/c) - 1), and the factor at t = 3 c is 1/2
    assert abs(float(schedule_factor("inverse_sqrt", 111.0, T, 37.0)) - 0.5) < 1e-6


@pytest.mark.parametrize("name", sorted(flow_solvers.SOLVERS))
def test_each_solver_gets_the_configured_tolerances(name):
    """``[flow]`` rtol and atol reach the solver as they are (not swapped, not defaulted)."""
    cfg = small_config(**{"train.engine": "flow", "flow.solver": name, "flow.rtol": 3e-6, "flow.atol": 7e-11})
    solver = flow.Flow.from_config(cfg).solver
    assert (solver.rtol, solver.atol) == (3e-6, 7e-11)
    assert isinstance(
        solver,
        {"auto": flow_solvers.RKC, "rkc": flow_solvers.RKC, "ros2": flow_solvers.ROS2, "rosw": flow_solvers.ROSW}.get(
            name, flow_solvers.Diffrax
        ),
    )
    if isinstance(solver, flow_solvers.Diffrax):
        assert solver.name == name


def test_bad_solver_is_one_clear_error():
    with pytest.raises(ConfigError, match="flow.solver"):
        small_config(**{"train.engine": "flow", "flow.solver": "euler"})


def test_ros2_counts_its_steps_and_stops_at_the_budget():
    """``nst`` counts attempted steps; a budget too small to reach the last output time
    makes the solver fail after exactly that many steps, with NaN at the outputs not reached
    (the engine then flags the replica as diverged)."""
    static, reps, _ = spec_parts(small_config(**{"data.d": 30, "teacher.P": 3, "student.m": 4, "train.dtype": "float64"}))
    a = jnp.asarray(reps.a[0])
    C0 = flow.init(static, 3, 0.3)
    ts = jnp.asarray(np.concatenate([[0.0], np.geomspace(0.1, 2000.0, 30)]))
    f = lambda c: -flow.gradient(static.model, c, a)  # noqa: E731
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    solve = jax.jit(lambda c, n: flow_solvers.solve(flow_solvers.ROS2(1e-6, 1e-9, max_steps=n), f, jac, c, ts), static_argnums=1)
    y, failed, n_full = solve(C0, 200_000)
    assert not bool(failed) and 30 <= int(n_full) < 200_000 and np.all(np.isfinite(y))
    y5, failed5, n5 = solve(C0, 5)
    assert bool(failed5) and int(n5) == 5
    assert np.isnan(np.asarray(y5[-1])).all() and np.isfinite(np.asarray(y5[0])).all()


@pytest.mark.slow
def test_a_flow_call_counts_its_log_points_as_work_so_progress_comes_early():
    """The flow crosses dozens of log points per solver step early on, each observed with the
    exact loss (about a solver step of work at large P): the first compiled call stops after
    the engine's first budget of steps *and* log points, and the numbers do not change."""
    from scaling_sgd._src.engines import ENGINES, driver
    from scaling_sgd._src.progress import NoProgress

    cfg = small_config(**{"train.engine": "flow", "train.steps": 200_000, "train.lr": 1e-3, "log.points": 60})
    static, reps, log_steps = spec_parts(cfg)
    engine = ENGINES["flow"].from_config(cfg)
    seen = []

    class Record(NoProgress):
        def update(self, done, fraction=None, diverged=0):
            seen.append(done)

    out = driver.simulate(engine, static, reps, log_steps, Record(), chunk_seconds=1e-9)
    # the first call observes at most first_budget / observe_work log points after step 0
    k = int(engine.first_budget / engine.observe_work)
    assert seen[0] <= log_steps[k] < log_steps[-1]
    # were log points free, the first call's few solver steps would pass more of them
    free_engine = type("FreeFlow", (type(engine),), {"observe_work": 0.0})(
        **{f.name: getattr(engine, f.name) for f in dataclasses.fields(engine)}
    )
    seen.clear()
    free = driver.simulate(free_engine, static, reps, log_steps, Record(), chunk_seconds=1e-9)
    assert seen[0] > log_steps[k]
    whole = driver.simulate(engine, static, reps, log_steps, first_budget=10**9)  # one call
    for key in out:
        np.testing.assert_array_equal(out[key], whole[key], err_msg=key)
        np.testing.assert_array_equal(free[key], whole[key], err_msg=key)
