"""The ``reduced`` engine: exact in law against ``sgd`` (two-sample tests), with power.

Family-wise level: each comparison makes ``n`` KS tests (loss and every direction's
alignment at several log points) and rejects when the smallest p-value is below
``0.01 / n`` (Bonferroni: a 1% level for the family).  The deliberately wrong chain (the
part of ``x`` outside the frame dropped) must be rejected by the same rule.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import scaling_sgd as ss
from scaling_sgd._src.config import ConfigError
from scaling_sgd._src.engines import driver, reduced, sgd

from helpers import assert_close, small_config, spec_parts

LEVEL = 0.01


def _no_remainder(static, key_data, block, d=None):
    """The block's random numbers with the part of ``x`` outside the frame dropped
    (``L = 0``): a deliberately wrong chain that the tests must detect."""
    u, L = reduced.block_noise(static, key_data, block, d)
    return u, jnp.zeros_like(L)


class WrongReduced(reduced.Reduced):
    """The ``reduced`` engine on the wrong chain (:func:`_no_remainder`)."""

    def block_noise(self, static, key_data, block, d=None):
        return _no_remainder(static, key_data, block, d)


SEEDS = list(range(200))

# name -> config overrides: h4 (the paper's activation), a minibatch, an odd activation.
# Steps and lr put the later log points well away from the initial loss while keeping
# divergences rare.
CASES = {
    "h4": {"teacher.activation": "h4", "student.init_scale": 1.0, "train.lr": 1e-4, "train.steps": 4000},
    "minibatch": {
        "teacher.activation": "h4",
        "student.init_scale": 1.0,
        "train.batch_size": 4,
        "train.lr": 3e-4,
        "train.steps": 1500,
    },
    "odd": {"teacher.activation": {1: 0.6, 3: 0.8}, "student.init_scale": 0.5, "train.lr": 1e-3, "train.steps": 3000},
}
BASE = {"data.d": 48, "teacher.P": 3, "student.m": 3, "log.points": 6}


def _cfg(case, engine, seeds):
    return small_config(**{**BASE, **CASES[case], "train.engine": engine, "train.seed": seeds})


@pytest.fixture(scope="module")
def runs():
    """``case -> (sgd metrics, reduced metrics)``, computed once (independent seeds)."""
    cache = {}

    def get(case):
        if case not in cache:
            s = ss.run(_cfg(case, "sgd", SEEDS)).metrics
            r = ss.run(_cfg(case, "reduced", [x + 100_000 for x in SEEDS])).metrics
            cache[case] = (s, r)
        return cache[case]

    return get


def ks_family(a, b, points=(-3, -2, -1)):
    """p-values of KS tests of loss and per-direction alignment at the given log points."""
    out = {}
    for k in points:
        out[(k, "loss")] = stats.ks_2samp(a["loss"][:, k], b["loss"][:, k]).pvalue
        for p in range(a["alignment"].shape[-1]):
            out[(k, f"alignment{p}")] = stats.ks_2samp(a["alignment"][:, k, p], b["alignment"][:, k, p]).pvalue
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_reduced_equals_sgd_in_law(runs, case):
    s, r = runs(case)
    assert s["diverged"].mean() < 0.1 and r["diverged"].mean() < 0.1
    # the compared distributions are far from the initial one
    assert abs(np.median(s["loss"][:, -1]) - np.median(s["loss"][:, 0])) > 0.3 * np.median(s["loss"][:, 0])
    pv = ks_family(s, r)
    print(case, "KS p-values", {k: round(v, 4) for k, v in pv.items()})
    assert min(pv.values()) > LEVEL / len(pv), {k: round(v, 4) for k, v in pv.items()}


@pytest.mark.slow
def test_dropping_the_chi2_remainder_is_detected(runs):
    s, _ = runs("h4")
    static, reps, grid = spec_parts(_cfg("h4", "reduced", [x + 100_000 for x in SEEDS]))
    wrong = driver.simulate(WrongReduced(), static, reps, grid)
    pv = ks_family(s, wrong)
    print("wrong chain KS min p-value", min(pv.values()))
    assert min(pv.values()) < LEVEL / len(pv)


def _one_step_samples(static, W0, lr, n, remainder=True):
    """``n`` independent one-step transitions from the same ``W0``: (sgd, reduced) Grams."""
    P = static.model.P
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * n)
    a = jnp.asarray(ss.power_law_coefficients(1.0, P))

    def sgd_one(key):
        st = sgd.init(static, 0, 0.1)._replace(W=W0, key_data=key)
        W = sgd.step(static, st, 0, lr, a, 1, 1e30).W
        return W @ W.T, W[:, :P]

    def red_one(states):
        states = reduced.new_block(static, states, 0, None if remainder else _no_remainder)
        states = jax.vmap(lambda st: reduced.step(static, st, 0, lr, a, 1, 1e30))(states)
        C = states.C
        return jnp.einsum("rip,rjp->rij", C, C), C[:, :, :P]

    C0 = reduced.coordinates(W0, P)
    st0 = jax.vmap(lambda k: reduced.with_coordinates(static, reduced.init(static, 0, 0.1), C0)._replace(key_data=k))(keys[n:])
    return jax.jit(jax.vmap(sgd_one))(keys[:n]), jax.jit(red_one)(st0)


@pytest.mark.slow
def test_one_step_transition_kernel_equals_sgd():
    """From one fixed ``W0``, 20000 independent steps of each engine: every Gram entry has
    the same law (large ``lr`` so a step moves the Gram by O(1)); the wrong chain fails."""
    cfg = small_config(**{"data.d": 12, "teacher.P": 2, "student.m": 2, "train.batch_size": 3, "train.dtype": "float64"})
    static, _, _ = spec_parts(cfg)
    W0 = jax.random.normal(jax.random.PRNGKey(3), (2, 12), jnp.float64) * 0.5
    n, lr = 20_000, 0.05

    def pvalues(remainder):
        (gs, ms), (gr, mr) = _one_step_samples(static, W0, lr, n, remainder)
        pv = [stats.ks_2samp(gs[:, i, j], gr[:, i, j]).pvalue for i, j in ((0, 0), (1, 1), (0, 1))]
        pv += [stats.ks_2samp(ms[:, i, p], mr[:, i, p]).pvalue for i in range(2) for p in range(2)]
        return np.array(pv), gs, gr

    pv, gs, gr = pvalues(True)
    print("one-step KS p-values", pv.round(4))
    assert pv.min() > LEVEL / pv.size, pv
    # the step is not small: the norm moves by much more than the MC error
    assert np.std(gs[:, 0, 0]) > 0.1 * float(W0[0] @ W0[0])
    pv_wrong, _, _ = pvalues(False)
    print("one-step wrong chain min p-value", pv_wrong.min())
    assert pv_wrong.min() < LEVEL / pv_wrong.size


def test_initial_gram_law():
    """Initial coordinates: ``r_i^2 d / s^2 ~ chi^2_d`` and ``M_ip sqrt(d)/s ~ N(0,1)``."""
    static, _, _ = spec_parts(small_config(**{"data.d": 20, "teacher.P": 3, "student.m": 4, "train.dtype": "float64"}))
    C = jax.jit(jax.vmap(lambda s: reduced.init(static, s, 0.3).C))(jnp.arange(4000, dtype=jnp.uint32))
    C = np.asarray(C)
    r2 = np.sum(C * C, axis=-1) * 20 / 0.09
    assert stats.kstest(r2[:, 3], stats.chi2(20).cdf).pvalue > 1e-3
    assert stats.kstest(C[:, 1, 2] * np.sqrt(20) / 0.3, "norm").pvalue > 1e-3
    G01 = np.sum(C[:, 0] * C[:, 1], axis=-1) * 20 / 0.09  # sum of 20 products of N(0,1)
    assert abs(G01.mean()) < 5 * np.sqrt(20 / G01.size) and abs(G01.var() / 20 - 1) < 0.1


def test_chisquare_sampler():
    dfs = np.array([1.0, 2.5, 7.0, 5000.0])
    x = jax.jit(lambda k: reduced.chisquare(k, jnp.asarray(np.repeat(dfs[:, None], 50_000, 1)), jnp.float64))(
        jax.random.PRNGKey(1)
    )
    for df, xs in zip(dfs, np.asarray(x)):
        assert stats.kstest(xs, stats.chi2(df).cdf).pvalue > 1e-3 / dfs.size, df


@pytest.mark.slow
def test_recompression_preserves_gram_and_chunking_does_not_change_numbers():
    cfg = small_config(
        **{"train.engine": "reduced", "train.dtype": "float64", "train.steps": 100, "train.lr": 1e-2, "student.m": 5}
    )
    static, _, _ = spec_parts(cfg)
    C = jax.random.normal(jax.random.PRNGKey(0), (5, 3 + 5 + reduced.buffer_steps(static)), jnp.float64)
    C2 = reduced.recompress(static, C)
    assert_close(C2 @ C2.T, C @ C.T, rtol=1e-12, atol=1e-12)
    assert_close(C2[:, :3], C[:, :3], rtol=0)
    assert np.all(np.asarray(C2[:, 3 + 5 :]) == 0)
    a = ss.run(small_config(**{"train.engine": "reduced", "train.steps": 64, "log.points": 4})).metrics
    b = ss.run(small_config(**{"train.engine": "reduced", "train.steps": 64, "log.points": 13})).metrics
    assert_close(a["loss"][:, -1], b["loss"][:, -1], dtype=np.float32)


@pytest.mark.slow
def test_changing_numbers_never_retraces_and_divergence_freezes():
    base = {"train.engine": "reduced", "train.lr": [1e-3, 50.0], "train.steps": 300, "log.points": 30}
    _res = ss.run(small_config(**base))
    m, meta = _res.metrics, _res.meta
    n0 = driver.compiled_programs()
    ss.run(small_config(**{**base, "train.seed": 5, "train.steps": 200, "teacher.beta": 2.0, "train.lr": [2e-3, 1e-3]}))
    assert driver.compiled_programs() == n0
    assert list(m["diverged"]) == [False, True] and meta["diverged_replicas"] == 1
    after = m["step"] > m["diverged_step"][1]
    frozen = m["norm2"][1, after]
    np.testing.assert_array_equal(frozen, np.broadcast_to(frozen[-1], frozen.shape))
    assert np.all(np.isfinite(m["loss"][0]))


def test_bad_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="d >= P \\+ m \\+ batch_size"):
        small_config(**{"train.engine": "reduced", "data.d": 9, "teacher.P": 3, "student.m": 4, "train.batch_size": 3})
    with pytest.raises(ConfigError, match="not exact in engine 'reduced'"):
        small_config(**{"train.engine": "reduced", "train.optimizer": "adam"})


def _noise(d, P, m, B, n_keys, block=3):
    """``n_keys`` independent draws of one block's random numbers (float64)."""
    static, _, _ = spec_parts(
        small_config(
            **{
                "data.d": d,
                "teacher.P": P,
                "student.m": m,
                "train.batch_size": B,
                "train.engine": "reduced",
                "train.dtype": "float64",
            }
        )
    )
    keys = jax.random.split(jax.random.PRNGKey(11), n_keys)
    u, L = jax.jit(jax.vmap(lambda k: reduced.block_noise(static, k, block)))(keys)
    return static, reduced.buffer_steps(static), np.asarray(u), np.asarray(L)


def test_block_noise_inputs_are_standard_gaussian_in_d_dimensions():
    """Each step's batch in frame coordinates: ``u`` (the ``P + m + jB`` frame columns of
    slot ``j``) plus its row of the Bartlett factor ``L`` (the rest of ``x``).  The squared
    norm of every input is ``chi^2_d`` (KS over all slots and rows), the Bartlett diagonal
    of row ``b`` of slot ``j`` is ``chi^2`` with ``d - P - m - jB - b`` degrees of freedom,
    the off-diagonals and the frame coordinates are ``N(0, 1)``, and the Gram of a batch has
    the Wishart moments ``E <x_b, x_b'> = d delta``, ``Var |x_b|^2 = 2d``,
    ``Var <x_b, x_b'> = d``.  Each law is also checked against its off-by-one neighbours,
    which must be rejected overwhelmingly (the power of the test).

    d is small (the complement has a few dimensions) so that one degree of freedom is a
    large relative change; 4000 draws of a block of K B = 8 inputs take well under a second.
    """
    d, P, m, B, n = 14, 2, 2, 2, 4000
    static, K, u, L = _noise(d, P, m, B, n)
    width = P + m + K * B
    assert K == 4 and u.shape == L.shape == (n, K, B, width)
    alpha = LEVEL / (2 * K * B + 3)  # Bonferroni over every KS test below
    for j in range(K):
        used = P + m + j * B
        # structure: u lives on the frame in use, L on the slot's B new columns, lower-triangular
        assert np.all(u[:, j, :, used:] == 0) and np.all(L[:, j, :, :used] == 0) and np.all(L[:, j, :, used + B :] == 0)
        Lj = L[:, j, :, used : used + B]  # (n, B, B)
        assert np.all(np.triu(Lj, 1) == 0)
        for b in range(B):
            df = d - used - b
            diag2 = Lj[:, b, b] ** 2
            assert np.all(Lj[:, b, b] > 0)
            assert stats.kstest(diag2, stats.chi2(df).cdf).pvalue > alpha, (j, b, df)
            for wrong in (df - 1, df + 1):
                assert stats.kstest(diag2, stats.chi2(wrong).cdf).pvalue < 1e-12, (j, b, wrong)
        # Wishart moments of the whole inputs x = u + L (rows): Gram mean d I
        X = u[:, j] + L[:, j]  # (n, B, width): coordinates of the B inputs
        gram = np.einsum("nbw,ncw->nbc", X, X)
        mean_se = np.sqrt(np.where(np.eye(B, dtype=bool), 2 * d, d) / n)
        assert np.all(np.abs(gram.mean(0) - d * np.eye(B)) < 5 * mean_se), gram.mean(0)
        assert abs(gram[:, 0, 0].var() / (2 * d) - 1) < 5 * np.sqrt(2 / n) * 2  # var of a variance estimate ~ kurtosis
        assert abs(gram[:, 0, 1].var() / d - 1) < 5 * np.sqrt(2 / n) * 2
    # every input's squared norm is chi^2_d (all slots and rows pooled: 32000 values)
    sq = np.sum((u + L) ** 2, axis=-1).reshape(-1)
    p_ok = stats.kstest(sq, stats.chi2(d).cdf).pvalue
    p_off = [stats.kstest(sq, stats.chi2(d + k).cdf).pvalue for k in (-1, 1)]
    print("chi^2_d p-value", p_ok, "chi^2_(d -+ 1)", p_off)
    assert p_ok > alpha and max(p_off) < 1e-30
    # the frame coordinates and the Bartlett off-diagonals are N(0, 1)
    coords = np.concatenate([u[:, j, :, : P + m + j * B].reshape(-1) for j in range(K)])
    offd = np.concatenate([L[:, j, 1, P + m + j * B] for j in range(K)])  # row 1, column 0 of each factor
    assert stats.kstest(coords, "norm").pvalue > alpha and stats.kstest(offd, "norm").pvalue > alpha


def test_block_noise_is_keyed_by_the_absolute_block_and_fresh_per_block():
    """The same (key, block) gives the same numbers; another block gives independent ones."""
    static, _, _ = spec_parts(small_config(**{"train.engine": "reduced", "train.dtype": "float64", "train.batch_size": 2}))
    key = jax.random.PRNGKey(3)
    noise = jax.jit(lambda b: reduced.block_noise(static, key, b))
    u1, L1 = noise(5)
    u2, L2 = noise(5)
    u3, _ = noise(6)
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(L1, L2)
    nz = np.asarray(u1) != 0
    assert not np.any(np.asarray(u1)[nz] == np.asarray(u3)[nz])


def test_initial_bartlett_factor_has_the_right_degrees_of_freedom():
    """``init``: teacher coordinates ``N(0, s^2/d)``; residual block ``s/sqrt(d)`` times the
    Bartlett factor of ``m`` vectors in ``R^(d-P)``: row ``i``'s diagonal squared is
    ``chi^2_(d-P-i)``, the strict lower triangle ``N(0,1)``, the upper triangle 0; so each
    row's squared norm is ``(s^2/d) chi^2_d``.  Off-by-one degrees of freedom are rejected."""
    d, P, m, s, n = 9, 3, 4, 0.3, 4000
    static, _, _ = spec_parts(small_config(**{"data.d": d, "teacher.P": P, "student.m": m, "train.dtype": "float64"}))
    C = np.asarray(jax.jit(jax.vmap(lambda k: reduced.init(static, k, s).C))(jnp.arange(n, dtype=jnp.uint32)))
    z = C * np.sqrt(d) / s
    R = z[:, :, P : P + m]
    assert np.all(np.triu(R, 1) == 0) and np.all(z[:, :, P + m :] == 0)
    alpha = LEVEL / (m + 3)
    for i in range(m):
        df = d - P - i
        assert stats.kstest(R[:, i, i] ** 2, stats.chi2(df).cdf).pvalue > alpha, (i, df)
        for wrong in (df - 1, df + 1):
            if wrong > 0:
                assert stats.kstest(R[:, i, i] ** 2, stats.chi2(wrong).cdf).pvalue < 1e-12, (i, wrong)
    assert stats.kstest(R[:, 2, 0], "norm").pvalue > alpha
    assert stats.kstest(z[:, :, :P].reshape(-1), "norm").pvalue > alpha
    sq = np.sum(z * z, axis=-1).reshape(-1)
    assert stats.kstest(sq, stats.chi2(d).cdf).pvalue > alpha
    assert max(stats.kstest(sq, stats.chi2(d + k).cdf).pvalue for k in (-1, 1)) < 1e-20


def test_recompression_is_an_orthogonal_change_of_the_residual_basis():
    """``recompress``: the residual block ``(m, m + KB)`` becomes ``(m, m)`` lower-triangular
    ``R`` with ``block = R Q`` for ``Q`` with orthonormal rows (so every inner product is
    kept); the teacher coordinates are untouched and the padding is zero.  Checked on a
    generic block and on one whose buffer columns dominate."""
    cfg = small_config(**{"train.engine": "reduced", "train.dtype": "float64", "student.m": 5, "train.batch_size": 2})
    static, _, _ = spec_parts(cfg)
    P, m = 3, 5
    K = reduced.buffer_steps(static)
    rng = np.random.default_rng(2)
    for scale_new in (1.0, 30.0):
        C = rng.standard_normal((m, P + m + K * 2))
        C[:, P : P + m] = np.tril(C[:, P : P + m])
        C[:, P + m :] *= scale_new
        C2 = np.asarray(reduced.recompress(static, jnp.asarray(C)))
        assert C2.shape == C.shape
        np.testing.assert_array_equal(C2[:, :P], C[:, :P])
        assert np.all(C2[:, P + m :] == 0)
        R = C2[:, P : P + m]
        assert np.all(np.triu(R, 1) == 0)
        Q = np.linalg.solve(R, C[:, P:])  # block = R Q
        assert_close(Q @ Q.T, np.eye(m), rtol=0, atol=1e-12)
        assert_close(C2 @ C2.T, C @ C.T, rtol=1e-12, atol=1e-12)


def test_schedule_scales_the_reduced_step_exactly():
    """A learning-rate schedule multiplies the step: from the same state and the same random
    numbers, a step ``t`` under a schedule equals the constant-rate step with
    ``lr * factor(t)`` (and at ``t = steps`` of a linear schedule nothing moves)."""
    from scaling_sgd._src.schedules import factor as schedule_factor

    over = {"train.engine": "reduced", "train.dtype": "float64", "train.batch_size": 2, "student.init_scale": 0.5}
    const, reps, _ = spec_parts(small_config(**over))
    a = jnp.asarray(reps.a[0])
    T, lr = 100, 0.05
    st = jax.vmap(lambda s: reduced.init(const, s, 0.5))(jnp.arange(1, dtype=jnp.uint32))
    st = jax.tree.map(lambda x: x[0], reduced.new_block(const, st, 0))
    K = reduced.buffer_steps(const)
    step = jax.jit(reduced.step, static_argnums=(0,))
    for sched in ("cosine", "linear"):
        static, _, _ = spec_parts(small_config(**{**over, "train.schedule": sched}))
        for t in (K - 1, 37 * K + 1, T):
            f = float(schedule_factor(sched, t, T))
            got = step(static, st, t, lr, a, T, 1e30).C
            want = step(const, st, t, lr * f, a, T, 1e30).C
            assert_close(got, want, rtol=1e-12, atol=1e-15)
            if t == T and sched == "linear":
                np.testing.assert_array_equal(got, st.C)
            elif f < 0.99:
                assert not np.allclose(got, step(const, st, t, lr, a, T, 1e30).C, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["reduced", "sgd"])
def test_initial_loss_above_the_bound_is_flagged_at_step_zero(engine):
    """A replica whose loss at initialisation already exceeds the bound diverges at step 0
    and keeps its initial weights (init scale 2: the loss starts near r^4 K(1) ~ 16 x 4)."""
    over = {"train.engine": engine, "train.lr": 1e-3, "train.diverge_bound": 3.0, "student.init_scale": 2.0}
    m = ss.run(small_config(**over)).metrics
    assert m["loss"][0, 0] > 3.0
    assert bool(m["diverged"][0]) and int(m["diverged_step"][0]) == 0
    np.testing.assert_array_equal(m["norm2"][0], np.broadcast_to(m["norm2"][0, 0], m["norm2"][0].shape))
