"""The ``sgd`` engine: exact step, jit vs loop, reproducibility, no retracing, physics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import eval_hermitenorm

import scaling_sgd as ss
from scaling_sgd._src.engines import driver, sgd
from scaling_sgd._src.engines.base import Replicas, log_grid
from scaling_sgd._src.rng import split_keys

from helpers import assert_close, sgd_reference, small_config, spec_parts


def _np_sigma(coeffs, z, deriv=False):
    """NumPy/scipy reference: sigma = sum c_j He_j/sqrt(j!), sigma' = sum c_j j He_{j-1}/sqrt(j!)."""
    out = np.zeros_like(z)
    for j, c in enumerate(coeffs):
        if c == 0:
            continue
        if deriv:
            if j >= 1:
                out += c * j * eval_hermitenorm(j - 1, z) / math.sqrt(math.factorial(j))
        else:
            out += c * eval_hermitenorm(j, z) / math.sqrt(math.factorial(j))
    return out


def _numpy_step(W, x, a, lr, coeffs, P):
    """The gradient formula of docs/model.md §1, batch-averaged, in plain NumPy (canonical teacher)."""
    r = np.linalg.norm(W, axis=1)
    z = (x @ W.T) / r
    f = (_np_sigma(coeffs, z) * r**2).sum(axis=1)
    y = _np_sigma(coeffs, x[:, :P]) @ a
    e = f - y
    alpha = e[:, None] * (2 * _np_sigma(coeffs, z) - z * _np_sigma(coeffs, z, True))
    gamma = e[:, None] * r * _np_sigma(coeffs, z, True)
    grad = alpha.mean(0)[:, None] * W + gamma.T @ x / x.shape[0]
    return W - lr * grad


@pytest.mark.parametrize("B,act", [(1, "h4"), (5, "h4"), (3, {2: 0.5, 3: 0.6, 4: 0.62})])
def test_one_step_equals_numpy(B, act):
    cfg = small_config(**{"train.dtype": "float64", "train.batch_size": B, "teacher.activation": act, "train.lr": 0.05})
    static, reps, _ = spec_parts(cfg)
    a = jnp.asarray(reps.a[0])
    state = sgd.init(static, 7, 0.3)
    W0 = np.asarray(state.W)
    x = np.asarray(sgd.draw_batch(static, state.key_data, 11))
    assert x.shape == (B, static.model.d) and x.dtype == np.float64
    new = sgd.step(static, state, 11, jnp.asarray(0.05), a, 100, jnp.asarray(1e8))
    ref = _numpy_step(W0, x, np.asarray(a), 0.05, static.model.teacher.coeffs, static.model.P)
    assert_close(new.W, ref, rtol=1e-10, atol=1e-14)
    assert not bool(new.diverged)


def test_gradient_formula_equals_autodiff():
    cfg = small_config(**{"train.dtype": "float64", "train.batch_size": 4, "teacher.basis": "random"})
    static, reps, _ = spec_parts(cfg)
    model = static.model
    state = sgd.init(static, 3, 0.5)
    a = jnp.asarray(reps.a[0])
    x = jax.random.normal(jax.random.PRNGKey(5), (4, model.d), jnp.float64)

    def loss(W):
        e = ss._src.model.student_output(model, W, x) - ss._src.model.teacher_output(model, state.theta, a, x)
        return 0.5 * jnp.mean(e**2)

    g_hand, *_ = sgd.batch_grad(static, state.W, state.theta, a, x)
    assert_close(g_hand, jax.grad(loss)(state.W), rtol=1e-10, atol=1e-14)


def test_jitted_run_equals_python_loop():
    cfg = small_config(
        **{"train.dtype": "float64", "train.steps": 40, "log.points": 5, "train.lr": [0.01, 0.02], "train.seed": [4]}
    )
    static, reps, log_steps = spec_parts(cfg)
    out = driver.simulate(sgd.SGD(), static, reps, log_steps)
    step_j = jax.jit(sgd.step, static_argnums=0)
    for r in range(reps.R):
        st = sgd.init(static, jnp.uint32(reps.seed[r]), 0.1)
        a = jnp.asarray(reps.a[r])
        k = 0
        for t in range(int(log_steps[-1])):
            st = step_j(static, st, t, jnp.asarray(reps.lr[r]), a, 40, 1e8)
        o = sgd.observe(static, st, a)
        k = log_steps.shape[0] - 1
        assert_close(out["loss"][r, k], o["loss"], rtol=1e-12)
        assert_close(out["skill"][r, k], o["skill"], rtol=1e-12, atol=1e-300)
        assert_close(out["norm2"][r, k], o["norm2"], rtol=1e-12)
    assert not np.any(out["diverged"])


@pytest.mark.slow
def test_same_seed_same_numbers_different_seed_different():
    cfg = small_config(**{"train.seed": [1, 2]})
    m1 = ss.run(cfg).metrics
    m2 = ss.run(cfg).metrics
    for k in ("loss", "skill", "alignment", "norm2"):
        np.testing.assert_array_equal(m1[k], m2[k])
    assert not np.allclose(m1["loss"][0, 1:], m1["loss"][1, 1:])
    assert np.all(m1["seed"] == [1, 2])


@pytest.mark.slow
def test_chunking_does_not_change_numbers():
    """The data stream is keyed by the absolute step: a different log grid gives the same
    weights at shared steps."""
    a = ss.run(small_config(**{"train.steps": 64, "log.points": 4})).metrics
    b = ss.run(small_config(**{"train.steps": 64, "log.points": 13})).metrics
    assert_close(a["loss"][:, -1], b["loss"][:, -1], dtype=np.float32)


@pytest.mark.slow
def test_changing_numbers_never_retraces():
    base = small_config(**{"train.lr": [1e-3, 2e-3], "train.seed": 0, "teacher.beta": 1.0})
    ss.run(base)
    n0 = driver.compiled_programs()
    for over in (
        {"train.lr": [5e-4, 1e-3]},
        {"teacher.beta": 1.7, "train.lr": [1e-3, 2e-3]},
        {"train.seed": 9, "train.lr": [1e-3, 2e-3]},
        {"train.steps": 77, "train.lr": [1e-3, 2e-3]},
        {"student.init_scale": 0.3, "train.lr": [1e-3, 2e-3]},
    ):
        ss.run(small_config(**over))
    assert driver.compiled_programs() == n0
    ss.run(small_config(**{"data.d": 17, "train.lr": [1e-3, 2e-3]}))  # a shape: compiles its programs once
    assert driver.compiled_programs() == n0 + driver.PROGRAMS_PER_SHAPE


@pytest.mark.slow
def test_divergent_replica_is_frozen_and_others_go_on():
    cfg = small_config(**{"train.lr": [1e-3, 50.0], "train.steps": 300, "log.points": 30})
    _res = ss.run(cfg)
    m, meta = _res.metrics, _res.meta
    assert list(m["diverged"]) == [False, True]
    ds = m["diverged_step"][1]
    assert 0 <= ds < 300 and m["diverged_step"][0] == -1
    after = m["step"] > ds
    # frozen: the weights (hence every observable) no longer change after divergence
    np.testing.assert_array_equal(m["norm2"][1, after], np.broadcast_to(m["norm2"][1, after][-1], m["norm2"][1, after].shape))
    assert np.all(np.isfinite(m["loss"][1]))
    # the healthy replica is unaffected: identical to running it alone
    alone = ss.run(small_config(**{"train.lr": 1e-3, "train.steps": 300, "log.points": 30})).metrics
    np.testing.assert_array_equal(alone["loss"][0], m["loss"][0])
    assert meta["diverged_replicas"] == 1


@pytest.mark.slow
def test_optax_sgd_path_equals_plain_and_adam_differs():
    plain = ss.run(small_config(**{"train.dtype": "float64"})).metrics
    via_optax = ss.run(small_config(**{"train.dtype": "float64", "train.optimizer_kwargs": {"nesterov": False}})).metrics
    assert_close(via_optax["loss"], plain["loss"], rtol=1e-10)
    adam = ss.run(small_config(**{"train.optimizer": "adam", "train.lr": 1e-3})).metrics
    assert np.all(np.isfinite(adam["loss"])) and not np.allclose(adam["loss"][0, 2:], plain["loss"][0, 2:])


def test_schedule_changes_the_trajectory_only_after_step_zero():
    const = ss.run(small_config(**{"train.dtype": "float64", "train.steps": 100})).metrics
    cos = ss.run(small_config(**{"train.dtype": "float64", "train.steps": 100, "train.schedule": "cosine"})).metrics
    assert const["loss"][0, 0] == cos["loss"][0, 0]
    assert_close(const["loss"][0, 1], cos["loss"][0, 1], rtol=1e-6)  # step 1: factor ~1
    assert abs(const["loss"][0, -1] - cos["loss"][0, -1]) > 1e-9


@pytest.mark.slow
def test_canonical_and_random_basis_agree_in_distribution():
    """Isotropy: the teacher frame is irrelevant in law.  KS over 200 seeds at two times."""
    seeds = list(range(200))
    over = {
        "train.seed": seeds,
        "train.steps": 400,
        "train.lr": 0.02,
        "data.d": 10,
        "teacher.P": 2,
        "student.m": 2,
        "log.points": 8,
    }
    can = ss.run(small_config(**over)).metrics
    rnd = ss.run(small_config(**{**over, "teacher.basis": "random", "train.seed": [s + 1000 for s in seeds]})).metrics
    for k in (3, -1):
        assert stats.ks_2samp(can["loss"][:, k], rnd["loss"][:, k]).pvalue > 0.01
        assert stats.ks_2samp(can["alignment"][:, k, 0], rnd["alignment"][:, k, 0]).pvalue > 0.01
    # and the test has power: a changed model (other beta) is detected
    other = ss.run(small_config(**{**over, "teacher.beta": 3.0, "teacher.basis": "random"})).metrics
    assert stats.ks_2samp(can["loss"][:, -1], other["loss"][:, -1]).pvalue < 0.01


@pytest.mark.slow
def test_single_direction_emergence_matches_flow_prediction():
    """P = m = 1, h4, lr 25x below a/d^(k/2): each seed's emergence step agrees in the
    median with the gradient-flow prediction from its own initial overlap m0 (and norm).

    The flow is integrated exactly (its small-m0 limit is 1/(8 a m0^2 lr), docs/model.md §3).
    Seeds are chosen *by their initial condition* (the largest m0 of a pool), so that the
    escape fits a short run while the SGD noise, whose effect on m grows like
    sqrt(lr tau) / m0, stays negligible."""
    from scaling_sgd.analysis.emergence import emergence_times
    from scaling_sgd.analysis.theory import escape_time_small_m0, single_direction_flow

    d, lr, steps = 64, 1e-5, 600_000
    pool = small_config(
        **{"data.d": d, "teacher.P": 1, "student.m": 1, "train.seed": list(range(400)), "train.steps": 1, "log.points": 2}
    )
    m0_pool = np.abs(ss.run(pool).metrics["overlap"][:, 0, 0, 0])
    seeds = [int(s) for s in np.argsort(m0_pool)[-24:]]
    cfg = small_config(
        **{
            "data.d": d,
            "teacher.P": 1,
            "student.m": 1,
            "train.lr": lr,
            "train.seed": seeds,
            "train.steps": steps,
            "log.points": 80,
        }
    )
    m = ss.run(cfg).metrics
    m0 = np.abs(m["overlap"][:, 0, 0, 0])
    np.testing.assert_allclose(m0, m0_pool[seeds], rtol=1e-6)
    pred = single_direction_flow(m0, m["norm2"][:, 0, 0], m["a"][:, 0]) / lr
    t, cens = emergence_times(m["step"], m["skill"], 0.5)
    assert not cens.any() and not m["diverged"].any()
    ratio = np.median(t[:, 0] / pred)
    assert 0.75 < ratio < 1.25, ratio
    # the closed form is the small-m0 limit: it approaches the exact flow as m0 -> 0
    assert abs(single_direction_flow(1e-3, 0.01, 1.0) / escape_time_small_m0(1e-3, 1.0) - 1) < 0.01


def test_replica_groups_give_the_same_numbers(monkeypatch):
    """sgd advances replicas in cache-sized groups at large d: bitwise the same as one group."""
    cfg = small_config(**{"train.seed": [0, 1, 2, 3, 4, 5], "train.batch_size": 2, "train.steps": 300, "data.d": 64})
    one = ss.run(cfg).metrics
    static = spec_parts(cfg)[0]
    monkeypatch.setattr(sgd, "GROUP_BYTES", 2 * 16 * 2 * 64 * 4 * 2)  # two replicas per group
    assert sgd.SGD().group_size(static, 6) == 2
    grouped = ss.run(cfg).metrics
    for k in ("loss", "norm2", "skill", "alignment", "diverged_step"):
        np.testing.assert_array_equal(grouped[k], one[k], err_msg=k)


def test_each_batch_is_its_own_row_of_its_absolute_block():
    """``draw_batch(t)`` is row ``t mod U`` of block ``t // U``, and block ``b`` is the
    threefry normal draw keyed by ``fold_in(k_data, b)`` with ``b`` the absolute block
    index (so the data depend only on (seed, step)); no row is ever repeated, across
    block boundaries included."""
    B, d = 3, 16
    static, _, _ = spec_parts(small_config(**{"train.batch_size": B, "data.d": d, "train.dtype": "float64"}))
    U = sgd.block_size(B)
    assert U == 10
    key = split_keys(5).data
    with jax.threefry_partitionable(False):
        blocks = [np.asarray(jax.random.normal(jax.random.fold_in(key, b), (U, B, d), jnp.float64)) for b in range(5)]
    xs = np.stack([np.asarray(sgd.draw_batch(static, key, t)) for t in range(5 * U)])
    for t in range(5 * U):
        np.testing.assert_array_equal(xs[t], blocks[t // U][t % U])
    np.testing.assert_array_equal(np.asarray(sgd.draw_block(static, key, 3)), blocks[3])
    rows = xs.reshape(-1, d)
    assert len({r.tobytes() for r in rows}) == rows.shape[0]
    # another replica's data key gives another stream
    other = np.asarray(sgd.draw_batch(static, split_keys(6).data, 0))
    assert not np.any(other == xs[0])


# Seeds and bound chosen so that, at lr 0.02 and init scale 0.5, replica 1 (seed 7) meets a
# batch with squared error above the bound at step 34 (inside block 4 of U = 8 steps) while
# replica 0 (seed 1) never does; the test asserts both facts before relying on them.
_FREEZE = {
    "train.dtype": "float64",
    "train.batch_size": 4,
    "train.steps": 72,
    "train.lr": 0.02,
    "train.seed": [1, 7],
    "train.diverge_bound": 40.0,
    "student.init_scale": 0.5,
    "log.points": 14,
    "log.overlap": True,
}


def test_blocked_run_equals_per_step_reference_over_many_blocks_with_a_frozen_replica():
    """The compiled run (blocks of U = 8 steps advanced in low-rank form, the next block drawn
    ahead) equals the per-step reference ``sgd.step`` on ``draw_batch`` at every log point,
    over 9 blocks with log points inside blocks: a block drawn twice, skipped or keyed by
    a relative index changes the numbers.  A replica that meets a bad batch mid-run is
    frozen: its weights stay bit-identical from the divergence step on (although most later
    batches would have been accepted), while the other replica keeps moving."""
    cfg = small_config(**_FREEZE)
    static, reps, log_steps = spec_parts(cfg)
    assert sgd.block_size(4) == 8 and np.any(log_steps % 8 != 0)
    ref = sgd_reference(static, reps, log_steps, 40.0)
    m = ss.run(cfg).metrics
    idx = np.unique(log_steps, return_index=True)[1]
    assert_close(m["loss"], ref["loss"][:, idx], rtol=1e-11)
    assert_close(m["norm2"], ref["norm2"][:, idx], rtol=1e-11)
    assert_close(m["overlap"], ref["overlap"][:, idx], rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(m["diverged"], ref["diverged"])
    np.testing.assert_array_equal(m["diverged_step"], ref["diverged_step"])
    # the scenario: replica 1 diverges at a batch inside a block, mid-run; replica 0 never
    assert list(m["diverged"]) == [False, True]
    ds = int(m["diverged_step"][1])
    assert ds == int(np.argmax(ref["e2"][1] > 40.0)) and 8 < ds < 64 and ds % 8 != 0
    # ... and later batches would have been accepted, so freezing is what keeps W still
    assert np.mean(ref["e2"][1, ds + 1 :] <= 40.0) > 0.5
    # per-step reference: W bit-identical after the divergence step; replica 0 moves every step
    W1 = ref["W"][1]
    assert np.all(W1[ds + 1 :] == W1[ds]) and not np.all(W1[ds] == W1[ds - 1])
    assert np.all(np.any(np.diff(ref["W"][0], axis=0) != 0, axis=(1, 2)))
    # compiled run: every observable of the frozen replica is bit-identical after ds
    after = m["step"] > ds
    assert after.sum() >= 3
    for k in ("norm2", "overlap", "loss", "skill", "alignment"):
        v = m[k][1, after]
        np.testing.assert_array_equal(v, np.broadcast_to(v[0], v.shape), err_msg=k)
    assert np.all(np.diff(m["norm2"][0, after], axis=0) != 0)


def test_frozen_replica_inside_a_block_keeps_its_weights_bit_identical():
    """The blocked update itself (``form_block``, ``run_steps``, ``current_weights``),
    advanced one step at a time: after the step that fails the bound, the weights formed
    from the block (``c * W0 - G^T X``) no longer change, bit for bit."""
    cfg = small_config(**_FREEZE)
    static, reps, _ = spec_parts(cfg)
    U = sgd.block_size(4)
    a, lr = jnp.asarray(reps.a[1]), jnp.asarray(reps.lr[1])
    st = sgd.init(static, jnp.uint32(7), reps.init_scale)
    ref = sgd_reference(static, reps, np.array([0, 48]), 40.0)
    ds = int(ref["diverged_step"][1])
    b = ds // U
    st = st._replace(W=jnp.asarray(ref["W"][1, b * U]))  # the weights at the start of block b
    blk = sgd.form_block(static, st, sgd.draw_block(static, st.key_data, b), a)
    run = jax.jit(lambda st, blk, s: sgd.run_steps(static, st, blk, b, s, s + 1, lr, a, 72, 40.0))
    Ws = []
    for s in range(U):
        st, blk = run(st, blk, s)
        Ws.append(np.asarray(sgd.current_weights(static, st, blk)))
    j = ds - b * U
    assert bool(st.diverged) and int(st.diverged_step) == ds
    assert_close(Ws[j - 1], ref["W"][1, ds], rtol=1e-12)  # the blocked steps are the reference's
    assert all(np.array_equal(W, Ws[j - 1]) for W in Ws[j:])


@pytest.mark.parametrize("steps,points", [(1, 2), (50, 10), (10**6, 200), (2**31 - 1, 7)])
def test_log_grid_is_zero_then_geometric_from_one_to_steps(steps, points):
    """docs/model.md §1: log points are step 0 plus a geometric grid from 1 to ``steps``."""
    g = log_grid(steps, points)
    assert g.dtype == np.int64 and g.shape == (points + 1,)
    assert g[0] == 0 and g[1] == 1 and g[-1] == steps and np.all(np.diff(g) >= 0)
    # the geometric grid from 1 to steps, rounded to the nearest step
    ideal = np.geomspace(1.0, steps, points)
    assert np.all(np.abs(g[1:] - ideal) <= 0.5 + 1e-12 * ideal)


def test_replica_padding_and_pads_on_several_devices(monkeypatch):
    """R replicas are padded to their bucket (1, 4, 8, ...), then to a multiple of the n
    devices; the pads repeat the last replica."""
    reps = Replicas(seed=np.arange(5), lr=np.linspace(1, 2, 5), a=np.ones((5, 3)) * np.arange(5)[:, None], beta=np.ones(5))
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert [driver.replica_padding(R) for R in (1, 4, 5, 6, 8)] == [3, 0, 3, 2, 0]
    monkeypatch.setattr(jax, "local_device_count", lambda: 3)
    assert [driver.replica_bucket(R) for R in (1, 2, 5, 9)] == [3, 6, 9, 18]
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert [driver.replica_padding(R) for R in (1, 2, 3, 4, 5)] == [0, 2, 1, 0, 3]
    padded = driver.pad_replicas(reps, 2)
    assert padded.R == 7 and list(padded.seed) == [0, 1, 2, 3, 4, 4, 4]
    np.testing.assert_array_equal(padded.a[5:], reps.a[[4, 4]])
    np.testing.assert_array_equal(padded.lr[:5], reps.lr)
    assert driver.pad_replicas(reps, 0) is reps
    assert list(driver.pad_replicas(reps, 1).seed) == [0, 1, 2, 3, 4, 4]


def test_step_counter_overflow_is_refused():
    """The device step counter is int32: a run to 2^31 steps is refused before compiling."""
    ok = np.array([0, 1, 2**31 - 1])
    np.testing.assert_array_equal(driver._check_steps(ok), ok)
    with pytest.raises(ValueError, match="2\\^31"):
        driver._check_steps(np.array([0, 1, 2**31]))


def test_chunks_of_one_step_and_an_interrupt_between_chunks_change_no_number():
    """The driver's chunking: a run advanced one step per chunk logs exactly what one run in
    large chunks logs (each log point is observed once the engine stands at its step), and a
    run stopped by a signal between chunks returns exactly the log points it had reached."""
    import os
    import signal

    from scaling_sgd._src.engines import ENGINES
    from scaling_sgd._src.progress import NoProgress

    cfg = small_config(**{"train.steps": 40, "log.points": 12, "train.lr": [1e-2, 3e-2]})
    static, reps, log_steps = spec_parts(cfg)
    engine = ENGINES["sgd"].from_config(cfg)
    whole = driver.simulate(engine, static, reps, log_steps)
    tiny = driver.simulate(engine, static, reps, log_steps, first_budget=1, chunk_seconds=1e-9)
    for k in whole:
        np.testing.assert_array_equal(tiny[k], whole[k], err_msg=k)

    class StopAfter(NoProgress):
        """Sends SIGUSR1 to this process once the run has passed step 20."""

        def update(self, done, fraction=None, diverged=0):
            if done >= 20:
                os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(driver.Interrupted) as e:
        driver.simulate(
            engine, static, reps, log_steps, StopAfter(), first_budget=1, chunk_seconds=1e-9, stop_signals=(signal.SIGUSR1,)
        )
    part = e.value.partial
    j = part["step"].size
    assert 0 < j < log_steps.size and part["step"][-1] <= 21
    np.testing.assert_array_equal(part["step"], whole["step"][:j])
    for k in ("loss", "skill", "alignment", "norm2"):
        np.testing.assert_array_equal(part[k], whole[k][:, :j], err_msg=k)
