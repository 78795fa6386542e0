"""The ``sgd`` engine: exact step, jit vs loop, reproducibility, no retracing, physics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import eval_hermitenorm

import scaling_sgd as ss
from scaling_sgd._src.engines import common, sgd
from scaling_sgd._src.runner import build

from helpers import assert_close, small_config


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
    """The SPEC's gradient formula, batch-averaged, in plain NumPy (canonical teacher)."""
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
    static, reps, _ = build(cfg)
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
    static, reps, _ = build(cfg)
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
    static, reps, log_steps = build(cfg)
    obs, div, _ = sgd.run_compiled(
        static,
        jnp.asarray(reps.seed, jnp.uint32),
        jnp.asarray(reps.lr),
        jnp.asarray(reps.a),
        0.1,
        1e8,
        jnp.asarray(log_steps, jnp.int32),
    )
    step_j = jax.jit(sgd.step, static_argnums=0)
    for r in range(reps.R):
        st = sgd.init(static, jnp.uint32(reps.seed[r]), 0.1)
        a = jnp.asarray(reps.a[r])
        k = 0
        for t in range(int(log_steps[-1])):
            st = step_j(static, st, t, jnp.asarray(reps.lr[r]), a, 40, 1e8)
        o = sgd.observe(static, st, a)
        k = log_steps.shape[0] - 1
        assert_close(obs["loss"][k, r], o["loss"], rtol=1e-12)
        assert_close(obs["skill"][k, r], o["skill"], rtol=1e-12, atol=1e-300)
        assert_close(obs["norm2"][k, r], o["norm2"], rtol=1e-12)
    assert not np.any(div)


def test_same_seed_same_numbers_different_seed_different():
    cfg = small_config(**{"train.seed": [1, 2]})
    m1, _ = ss.run(cfg)
    m2, _ = ss.run(cfg)
    for k in ("loss", "skill", "alignment", "norm2"):
        np.testing.assert_array_equal(m1[k], m2[k])
    assert not np.allclose(m1["loss"][0, 1:], m1["loss"][1, 1:])
    assert np.all(m1["seed"] == [1, 2])


def test_chunking_does_not_change_numbers():
    """The data stream is keyed by the absolute step: a different log grid gives the same
    weights at shared steps."""
    a, _ = ss.run(small_config(**{"train.steps": 64, "log.points": 4}))
    b, _ = ss.run(small_config(**{"train.steps": 64, "log.points": 13}))
    assert_close(a["loss"][:, -1], b["loss"][:, -1], dtype=np.float32)


def test_changing_numbers_never_retraces():
    base = small_config(**{"train.lr": [1e-3, 2e-3], "train.seed": 0, "teacher.beta": 1.0})
    ss.run(base)
    n0 = common.TRACE_COUNT["n"]
    for over in (
        {"train.lr": [5e-4, 1e-3]},
        {"teacher.beta": 1.7, "train.lr": [1e-3, 2e-3]},
        {"train.seed": 9, "train.lr": [1e-3, 2e-3]},
        {"train.steps": 77, "train.lr": [1e-3, 2e-3]},
        {"student.init_scale": 0.3, "train.lr": [1e-3, 2e-3]},
    ):
        ss.run(small_config(**over))
    assert common.TRACE_COUNT["n"] == n0
    ss.run(small_config(**{"data.d": 17, "train.lr": [1e-3, 2e-3]}))  # a shape: must trace once
    assert common.TRACE_COUNT["n"] == n0 + 1


def test_divergent_replica_is_frozen_and_others_go_on():
    cfg = small_config(**{"train.lr": [1e-3, 50.0], "train.steps": 300, "log.points": 30})
    m, meta = ss.run(cfg)
    assert list(m["diverged"]) == [False, True]
    ds = m["diverged_step"][1]
    assert 0 <= ds < 300 and m["diverged_step"][0] == -1
    after = m["step"] > ds
    # frozen: the weights (hence every observable) no longer change after divergence
    np.testing.assert_array_equal(m["norm2"][1, after], np.broadcast_to(m["norm2"][1, after][-1], m["norm2"][1, after].shape))
    assert np.all(np.isfinite(m["loss"][1]))
    # the healthy replica is unaffected: identical to running it alone
    alone, _ = ss.run(small_config(**{"train.lr": 1e-3, "train.steps": 300, "log.points": 30}))
    np.testing.assert_array_equal(alone["loss"][0], m["loss"][0])
    assert meta["diverged_replicas"] == 1


def test_optax_sgd_path_equals_plain_and_adam_differs():
    plain, _ = ss.run(small_config(**{"train.dtype": "float64"}))
    via_optax, _ = ss.run(small_config(**{"train.dtype": "float64", "train.optimizer_kwargs": {"nesterov": False}}))
    assert_close(via_optax["loss"], plain["loss"], rtol=1e-10)
    adam, _ = ss.run(small_config(**{"train.optimizer": "adam", "train.lr": 1e-3}))
    assert np.all(np.isfinite(adam["loss"])) and not np.allclose(adam["loss"][0, 2:], plain["loss"][0, 2:])


def test_schedule_changes_the_trajectory_only_after_step_zero():
    const, _ = ss.run(small_config(**{"train.dtype": "float64", "train.steps": 100}))
    cos, _ = ss.run(small_config(**{"train.dtype": "float64", "train.steps": 100, "train.schedule": "cosine"}))
    assert const["loss"][0, 0] == cos["loss"][0, 0]
    assert_close(const["loss"][0, 1], cos["loss"][0, 1], rtol=1e-6)  # step 1: factor ~1
    assert abs(const["loss"][0, -1] - cos["loss"][0, -1]) > 1e-9


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
    can, _ = ss.run(small_config(**over))
    rnd, _ = ss.run(small_config(**{**over, "teacher.basis": "random", "train.seed": [s + 1000 for s in seeds]}))
    for k in (3, -1):
        assert stats.ks_2samp(can["loss"][:, k], rnd["loss"][:, k]).pvalue > 0.01
        assert stats.ks_2samp(can["alignment"][:, k, 0], rnd["alignment"][:, k, 0]).pvalue > 0.01
    # and the test has power: a changed model (other beta) is detected
    other, _ = ss.run(small_config(**{**over, "teacher.beta": 3.0, "teacher.basis": "random"}))
    assert stats.ks_2samp(can["loss"][:, -1], other["loss"][:, -1]).pvalue < 0.01


def test_single_direction_emergence_matches_flow_prediction():
    """P = m = 1, h4, lr 25x below a/d^(k/2): each seed's emergence step agrees in the
    median with the gradient-flow prediction from its own initial overlap m0 (and norm).

    The flow is integrated exactly (its small-m0 limit is 1/(8 a m0^2 lr), SPEC section 3).
    Seeds are chosen *by their initial condition* (the largest m0 of a pool), so that the
    escape fits a short run while the SGD noise, whose effect on m grows like
    sqrt(lr tau) / m0, stays negligible."""
    from analysis.emergence import emergence_times
    from analysis.theory import escape_time_small_m0, single_direction_flow

    d, lr, steps = 64, 1e-5, 600_000
    pool = small_config(
        **{"data.d": d, "teacher.P": 1, "student.m": 1, "train.seed": list(range(400)), "train.steps": 1, "log.points": 2}
    )
    m0_pool = np.abs(ss.run(pool)[0]["overlap"][:, 0, 0, 0])
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
    m, _ = ss.run(cfg)
    m0 = np.abs(m["overlap"][:, 0, 0, 0])
    np.testing.assert_allclose(m0, m0_pool[seeds], rtol=1e-6)
    pred = single_direction_flow(m0, m["norm2"][:, 0, 0], m["a"][:, 0]) / lr
    t, cens = emergence_times(m["step"], m["skill"], 0.5)
    assert not cens.any() and not m["diverged"].any()
    ratio = np.median(t[:, 0] / pred)
    assert 0.75 < ratio < 1.25, ratio
    # the closed form is the small-m0 limit: it approaches the exact flow as m0 -> 0
    assert abs(single_direction_flow(1e-3, 0.01, 1.0) / escape_time_small_m0(1e-3, 1.0) - 1) < 0.01
