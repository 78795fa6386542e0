"""The RKC integrator of the ``flow`` engine: order, stability, agreement with the
reference solvers, resumability, replica independence and memory; the float32 loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling_sgd._src import model as mdl
from scaling_sgd._src import twofloat as tf
from scaling_sgd._src.engines import driver, flow, flow_solvers, rkc

from helpers import small_config, spec_parts


def _linear_problem(n=40, rho=400.0):
    """``y' = -A y`` with a symmetric ``A`` of spectrum ``[0.5, rho]`` (a stiff gradient flow)."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    lam = np.geomspace(0.5, rho, n)
    A = jnp.asarray((q * lam) @ q.T)
    y0 = jnp.asarray(np.random.default_rng(1).standard_normal(n))
    exact = lambda t: jnp.asarray(q @ (np.exp(-lam * t) * (q.T @ np.asarray(y0))))
    return (lambda y, args: -(A @ y)), y0, exact, rho


def _integrate(F, y0, T, n, s):
    """``n`` fixed steps of ``s`` stages (one compiled loop)."""
    h = jnp.asarray(T / n)
    body = lambda _, y: rkc.rkc_step(F, y, F(y, None), h, jnp.asarray(s, jnp.int32), None)
    return jax.jit(lambda y: jax.lax.fori_loop(0, n, body, y))(y0)


def test_rkc_step_is_second_order_and_stable_to_0653_s2():
    # order 2 for every s: halving h quarters the error (a non-stiff problem: the asymptotic regime)
    F, y0, exact, _ = _linear_problem(rho=4.0)
    for s in (2, 5, 20):
        errs = [float(jnp.max(jnp.abs(_integrate(F, y0, 1.0, n, s) - exact(1.0)))) for n in (16, 32, 64)]
        ratios = [errs[0] / errs[1], errs[1] / errs[2]]
        assert all(3.6 < r < 4.4 for r in ratios), (s, errs, ratios)
    F, y0, exact, rho = _linear_problem()
    integrate = _integrate
    # stability: h rho at 0.98 beta(s) stays bounded over many steps and damps the stiff modes;
    # at 1.3 beta(s) it blows up (so the bound is the method's, not the test's)
    for s in (3, 10, 40):
        h = 0.98 * 0.653 * s * s / rho
        y = integrate(F, y0, 60 * h, 60, s)
        assert float(jnp.max(jnp.abs(y))) < float(jnp.max(jnp.abs(y0))), s
        h = 1.3 * 0.653 * s * s / rho
        assert not float(jnp.max(jnp.abs(integrate(F, y0, 200 * h, 200, s)))) < 1e3, s


def test_spectral_radius_power_iteration():
    F, y0, _, rho = _linear_problem()
    est, v = rkc.spectral_radius(F, y0, None, jnp.ones_like(y0), 60)
    assert 0.97 * rho < float(est) <= rho * (1 + 1e-12)
    assert abs(float(jnp.linalg.norm(v)) - 1.0) < 1e-12


def _small(solver="rkc", **over):
    cfg = small_config(
        **{
            "data.d": 30,
            "teacher.P": 3,
            "student.m": 4,
            "teacher.activation": {2: 0.5, 3: 0.4, 4: 0.7},
            "train.dtype": "float64",
            "flow.solver": solver,
            **over,
        }
    )
    static, reps, _ = spec_parts(cfg)
    return static, jnp.asarray(reps.a[0]), flow.init(static, 3, 0.3)


TS = np.concatenate([[0.0], np.geomspace(0.1, 2000.0, 30)])
TS_SHORT = np.concatenate([[0.0, 0.0], np.geomspace(0.1, 300.0, 20)])  # a repeated output time too


@pytest.mark.slow
def test_rkc_converges_and_agrees_with_ros2():
    """A staircase through plateaus and stiff learned phases: RKC converges as rtol falls (to
    its own rtol = 1e-9 solution) and that solution agrees with ros2 at rtol = 1e-6 (tested
    against diffrax's Kvaerno5 in test_flow) to its accuracy."""
    static, a, C0 = _small()
    ts = jnp.asarray(TS)
    F = flow.vector_field(static.model)
    ys = {}
    for rtol in (1e-4, 1e-6, 1e-9):
        settings = rkc.RKCSettings(rtol=rtol, atol=rtol * 1e-3)
        ys[rtol], st = jax.jit(lambda c, settings=settings: rkc.solve(F, c, ts, a, settings))(C0)
        assert int(st.k) == len(TS) and not bool(st.failed)
    errs = [float(jnp.max(jnp.abs(ys[r] - ys[1e-9]))) for r in (1e-4, 1e-6)]
    assert errs[1] < 1e-4 and errs[1] < 0.1 * errs[0], errs
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    y_ros2, failed, _ = jax.jit(lambda c: flow_solvers.solve(flow_solvers.ROS2(1e-6, 1e-9), lambda y: F(y, a), jac, c, ts))(C0)
    assert not bool(failed) and float(jnp.max(jnp.abs(y_ros2 - ys[1e-9]))) < 1e-5
    loss = jax.vmap(lambda c: 2 * flow.loss(static.model, c, a))(ys[1e-9])
    assert loss[-1] < 0.5 * loss[0]  # it learns: not a trivial plateau


def test_rkc_is_resumable_at_any_output():
    """Stopping at output indices and resuming (what a chunked driver does) gives the same
    numbers, bit for bit, as one solve; and stepping one attempt at a time from the host too."""
    static, a, C0 = _small()
    ts = jnp.asarray(TS_SHORT)
    F, settings = flow.vector_field(static.model), flow_solvers.RKC(1e-5, 1e-9).settings
    y_all, st_all = jax.jit(lambda c: rkc.solve(F, c, ts, a, settings))(C0)
    init = jax.jit(lambda c: rkc.init(F, c, ts, a, settings))
    adv = jax.jit(lambda st, k: rkc.advance(F, st, ts, a, settings, k))
    one = jax.jit(lambda st: rkc.step(F, st, ts, a, settings))
    st = init(C0)
    for k in (1, 7, 8, 15):  # chunks of irregular length; 7 -> 8 is a chunk of one output
        st = adv(st, k)
        assert int(st.k) == k + 1 and float(st.t) == float(ts[k])  # output times are hit exactly
        np.testing.assert_array_equal(np.asarray(st.y), np.asarray(y_all[k]))
    for _ in range(5):  # single attempted steps from the host, then on
        st = one(st)
    st = adv(st, len(TS_SHORT) - 1)
    np.testing.assert_array_equal(np.asarray(st.y), np.asarray(y_all[-1]))
    assert int(st.n_steps) == int(st_all.n_steps) and int(st.n_fevals) == int(st_all.n_fevals)


@pytest.mark.slow
def test_rkc_replicas_map_equals_vmap():
    """Replicas are independent: the flow engine mapping the solver over replicas one after
    another (lax.map) and in lockstep (vmap, where every loop runs to the largest count over
    replicas) gives the same numbers: no replica's numbers depend on the others."""
    cfg = small_config(
        **{
            "data.d": 30,
            "teacher.P": 3,
            "student.m": 4,
            "teacher.activation": {2: 0.5, 3: 0.4, 4: 0.7},
            "train.dtype": "float64",
            "train.engine": "flow",
            "train.lr": [1.0, 0.5, 2.0],
            "train.steps": 300,
            "log.points": 20,
        }
    )
    static, reps, log_steps = spec_parts(cfg)
    out = {
        mode: driver.simulate(flow.Flow(solver=flow_solvers.RKC(1e-5, 1e-9), replicas=mode), static, reps, log_steps)
        for mode in ("map", "vmap")
    }
    om, ov = out["map"], out["vmap"]
    assert not om["diverged"].any() and not ov["diverged"].any()
    assert len(set(om["solver_steps"].tolist())) == 3  # the replicas take different step counts
    np.testing.assert_array_equal(om["solver_steps"], ov["solver_steps"])
    np.testing.assert_array_equal(om["solver_fevals"], ov["solver_fevals"])
    np.testing.assert_allclose(om["loss"], ov["loss"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(om["skill"], ov["skill"], rtol=1e-12, atol=1e-15)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def _step_bytes(Pm: int, with_ros2: bool):
    """Compiled scratch bytes of one RKC step (and of one ros2 attempt) at P = m = Pm."""
    static, reps, _ = spec_parts(small_config(**{"data.d": 4 * Pm, "teacher.P": Pm, "student.m": Pm, "train.dtype": "float64"}))
    C = jnp.zeros((Pm, 2 * Pm))
    a = jnp.asarray(reps.a[0])
    ts = jnp.asarray(TS)
    F, settings = flow.vector_field(static.model), flow_solvers.RKC(1e-5, 1e-9).settings
    st = jax.eval_shape(lambda c: rkc.init(F, c, ts, a, settings), C)
    st = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), st)
    b_rkc = _temp_bytes(lambda st: rkc.step(F, st, ts, a, settings), st)
    if not with_ros2:
        return b_rkc, None
    # ros2: one attempted step, with its m dense (P+m)^2 Jacobian blocks and their LUs
    ros2 = flow_solvers.ROS2(1e-5, 1e-9)
    jac = lambda c: flow.block_jacobian(static.model, c, a)  # noqa: E731
    st2 = jax.eval_shape(lambda c: ros2.init(lambda y: F(y, a), jac, c, ts), C)
    st2 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), st2)
    return b_rkc, _temp_bytes(lambda s: ros2._step(lambda y: F(y, a), jac, s, ts), st2)


@pytest.mark.slow
def test_flow_memory_is_linear_in_m_times_p_plus_m():
    """Compiled memory: the RKC step's scratch grows like ``m (P+m)`` (x4 when P = m doubles),
    while ros2's per-neuron dense Jacobian blocks grow like ``m (P+m)^2`` (x8); and a whole RKC
    run keeps ``O(T (P+m))`` observables, never the ``(T, m, P+m)`` trajectory."""
    rkc_b, ros2_b = {}, {}
    for Pm in (16, 32, 64):
        rkc_b[Pm], ros2_b[Pm] = _step_bytes(Pm, with_ros2=Pm > 16)
        mn = Pm * 2 * Pm * 8  # bytes of one state
        assert rkc_b[Pm] < 30 * mn, (Pm, rkc_b[Pm] / mn)
    assert rkc_b[64] / rkc_b[32] < 5.0 and rkc_b[32] / rkc_b[16] < 5.0, rkc_b
    assert ros2_b[64] / ros2_b[32] > 6.0, ros2_b  # the test can tell the two apart
    # a whole chunk of the driver over T = 201 log points at P = m = 32: scratch far below one
    # (T, m, P+m) trajectory (only the (T, R, ...) observables are kept)
    Pm, R = 32, 2
    cfg = small_config(
        **{
            "data.d": 1000,
            "teacher.P": Pm,
            "student.m": Pm,
            "train.dtype": "float64",
            "train.engine": "flow",
            "train.seed": list(range(R)),
            "log.points": 200,
            "log.overlap": False,
        }
    )
    static, reps, log_steps = spec_parts(cfg)
    engine = flow.Flow(solver=flow_solvers.RKC(1e-5, 1e-9))
    T = log_steps.size
    grid = driver.Grid(jnp.asarray(log_steps, jnp.int32), jnp.asarray(log_steps, jnp.float64))
    dreps = driver._on_devices(reps)
    chunk = jax.eval_shape(lambda r, g: driver._start(engine, static, r, g), dreps, grid)
    run = driver._run.lower(engine, static, chunk, dreps, grid, jnp.asarray(1, jnp.int32)).compile().memory_analysis()
    assert run.temp_size_in_bytes < 0.25 * T * Pm * 2 * Pm * 8, run.temp_size_in_bytes


def _learned_state(P, eps, activation="h4", seed=0):
    """Students on the teacher directions with ``r2 = a``, perturbed by ``eps``: loss ``~eps^2``."""
    static, reps, _ = spec_parts(
        small_config(**{"data.d": 4 * P, "teacher.P": P, "student.m": P, "teacher.activation": activation})
    )
    a = np.asarray(reps.a[0])
    C = np.zeros((P, 2 * P))
    C[np.arange(P), np.arange(P)] = np.sqrt(a)
    C += eps * np.random.default_rng(seed).standard_normal(C.shape) * np.sqrt(a)[:, None] / np.sqrt(2 * P)
    return static, jnp.asarray(C, jnp.float32), jnp.asarray(a, jnp.float32)


@pytest.mark.parametrize("float64", [True, False])
@pytest.mark.parametrize("activation", ["h4", "relu"])
def test_float32_loss_is_accurate_near_a_learned_state(activation, float64, monkeypatch):
    """At a loss of ~4e-6 the plain float32 closed form is off by tens of percent; the logged
    loss of a float32 run (in float64, or double-word on a backend without float64) matches
    float64 of the same float32 state, and its evaluation leaves JAX's x64 mode as it was."""
    monkeypatch.setattr(mdl, "has_float64", lambda: float64)
    P = 32
    static, C, a = _learned_state(P, 1e-3, activation)
    model = static.model
    C64, a64 = jnp.asarray(np.asarray(C), jnp.float64), jnp.asarray(np.asarray(a), jnp.float64)
    ref = float(mdl.population_loss(model, C64 @ C64.T, C64[:, :P], a64))
    plain = float(jax.jit(lambda C, a: mdl.population_loss(model, C @ C.T, C[:, :P], a))(C, a))
    x64 = jax.config.jax_enable_x64
    with jax.enable_x64(False):
        logged_fn = jax.jit(lambda C, a: mdl.observables(model, C, a)["loss"])
        logged = float(logged_fn(C, a))
        assert ("f64" in logged_fn.lower(C, a).as_text()) == float64  # the float64 path, or not
        assert not jax.config.jax_enable_x64
    assert jax.config.jax_enable_x64 == x64
    assert 1e-7 < ref < 1e-4
    assert abs(plain / ref - 1) > 0.05  # the problem is real at this loss
    assert abs(logged / ref - 1) < (1e-6 if float64 else 1e-4), (logged, ref)


def test_twofloat_gram_is_error_free_to_2e_40():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 300)) * np.exp(rng.uniform(-8, 8, (20, 1)))
    X[:, ::7] *= 1e-5  # entries far below their row's largest
    X[3] = 0.0
    Y = rng.standard_normal((5, 300))
    X32, Y32 = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    X64, Y64 = np.asarray(X32, np.float64), np.asarray(Y32, np.float64)
    for got, want, nx, ny in (
        (tf.gram(X32), X64 @ X64.T, X64, X64),
        (tf.gram(X32, Y32), X64 @ Y64.T, X64, Y64),
    ):
        err = np.abs(np.asarray(got.hi, np.float64) + np.asarray(got.lo, np.float64) - want)
        bound = 2.0**-40 * np.linalg.norm(nx, axis=1)[:, None] * np.linalg.norm(ny, axis=1)[None, :]
        assert np.all(err <= bound + 1e-300), float(np.max(err / np.maximum(bound, 1e-300)))
    plain = np.abs(np.asarray(X32 @ X32.T, np.float64) - X64 @ X64.T)
    assert (
        np.max(plain / np.maximum(2.0**-40 * np.linalg.norm(X64, axis=1)[:, None] * np.linalg.norm(X64, axis=1)[None, :], 1e-300))
        > 1e3
    )


def test_twofloat_gram_of_one_matrix_is_bitwise_that_of_two_equal_ones():
    # X X^T multiplies each pair of slices once and transposes it for the mirrored pair;
    # both products are exact, so the sum is the very one of X Y^T with Y = X
    X = jnp.asarray(np.random.default_rng(4).standard_normal((40, 300)), jnp.float32)
    one, two = jax.jit(tf.gram)(X), jax.jit(lambda X: tf.gram(X, X))(X)
    assert np.array_equal(one.hi, two.hi) and np.array_equal(one.lo, two.lo)
    assert not np.array_equal(one.lo, np.zeros_like(one.lo))


def test_twofloat_add_keeps_the_low_parts_when_the_high_parts_cancel():
    """``add`` is accurate to ``~u^2`` of the sum also when ``x.hi = -y.hi``: the sum is then
    ``x.lo + y.lo``, whose own rounding error a float32 sum would lose (``u = 2^-24``)."""
    rng = np.random.default_rng(3)
    hi = rng.standard_normal(1000).astype(np.float32)
    lo_x = (hi * 2.0**-25 * rng.uniform(-1, 1, 1000)).astype(np.float32)
    lo_y = (hi * 2.0**-45 * rng.uniform(-1, 1, 1000)).astype(np.float32)
    got = tf.add(tf.DW(jnp.asarray(hi), jnp.asarray(lo_x)), tf.DW(jnp.asarray(-hi), jnp.asarray(lo_y)))
    exact = lo_x.astype(np.float64) + lo_y.astype(np.float64)  # exact in float64
    total = np.asarray(got.hi, np.float64) + np.asarray(got.lo, np.float64)
    assert np.max(np.abs(total - exact) / np.abs(exact)) < 2.0**-44
