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
from scaling_sgd._src.engines import common, reduced, sgd
from scaling_sgd._src.runner import build

from helpers import assert_close, small_config

LEVEL = 0.01
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
            s, _ = ss.run(_cfg(case, "sgd", SEEDS))
            r, _ = ss.run(_cfg(case, "reduced", [x + 100_000 for x in SEEDS]))
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


@pytest.mark.parametrize("case", list(CASES))
def test_reduced_equals_sgd_in_law(runs, case):
    s, r = runs(case)
    assert s["diverged"].mean() < 0.1 and r["diverged"].mean() < 0.1
    # the compared distributions are far from the initial one
    assert abs(np.median(s["loss"][:, -1]) - np.median(s["loss"][:, 0])) > 0.3 * np.median(s["loss"][:, 0])
    pv = ks_family(s, r)
    print(case, "KS p-values", {k: round(v, 4) for k, v in pv.items()})
    assert min(pv.values()) > LEVEL / len(pv), {k: round(v, 4) for k, v in pv.items()}


def test_dropping_the_chi2_remainder_is_detected(runs):
    s, _ = runs("h4")
    static, reps, grid = build(_cfg("h4", "reduced", [x + 100_000 for x in SEEDS]))
    wrong = reduced.simulate(static, reps, grid, remainder=False)
    pv = ks_family(s, wrong)
    print("wrong chain KS min p-value", min(pv.values()))
    assert min(pv.values()) < LEVEL / len(pv)


def _one_step_samples(static, W0, lr, n, remainder=True):
    """``n`` independent one-step transitions from the same ``W0``: (sgd, reduced) Grams."""
    P = static.model.P
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * n)
    a = jnp.asarray(ss.power_law_coefficients(1.0, P, jnp.float64))

    def sgd_one(key):
        st = sgd.init(static, 0, 0.1)._replace(W=W0, key_data=key)
        W = sgd.step(static, st, 0, lr, a, 1, 1e30).W
        return W @ W.T, W[:, :P]

    def red_one(states):
        states = reduced.new_block(static, states, 0)
        states = jax.vmap(lambda st: reduced.step(static, st, 0, lr, a, 1, 1e30, 1.0 if remainder else 0.0))(states)
        C = states.C
        return jnp.einsum("rip,rjp->rij", C, C), C[:, :, :P]

    C0 = reduced.coordinates(W0, P)
    st0 = jax.vmap(lambda k: reduced.with_coordinates(static, reduced.init(static, 0, 0.1), C0)._replace(key_data=k))(keys[n:])
    return jax.jit(jax.vmap(sgd_one))(keys[:n]), jax.jit(red_one)(st0)


def test_one_step_transition_kernel_equals_sgd():
    """From one fixed ``W0``, 20000 independent steps of each engine: every Gram entry has
    the same law (large ``lr`` so a step moves the Gram by O(1)); the wrong chain fails."""
    cfg = small_config(**{"data.d": 12, "teacher.P": 2, "student.m": 2, "train.batch_size": 3, "train.dtype": "float64"})
    static, _, _ = build(cfg)
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
    static, _, _ = build(small_config(**{"data.d": 20, "teacher.P": 3, "student.m": 4, "train.dtype": "float64"}))
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


def test_recompression_preserves_gram_and_chunking_does_not_change_numbers():
    cfg = small_config(
        **{"train.engine": "reduced", "train.dtype": "float64", "train.steps": 100, "train.lr": 1e-2, "student.m": 5}
    )
    static, _, _ = build(cfg)
    C = jax.random.normal(jax.random.PRNGKey(0), (5, 3 + 5 + reduced.buffer_steps(static)), jnp.float64)
    C2 = reduced.recompress(static, C)
    assert_close(C2 @ C2.T, C @ C.T, rtol=1e-12, atol=1e-12)
    assert_close(C2[:, :3], C[:, :3], rtol=0)
    assert np.all(np.asarray(C2[:, 3 + 5 :]) == 0)
    a, _ = ss.run(small_config(**{"train.engine": "reduced", "train.steps": 64, "log.points": 4}))
    b, _ = ss.run(small_config(**{"train.engine": "reduced", "train.steps": 64, "log.points": 13}))
    assert_close(a["loss"][:, -1], b["loss"][:, -1], dtype=np.float32)


def test_changing_numbers_never_retraces_and_divergence_freezes():
    base = {"train.engine": "reduced", "train.lr": [1e-3, 50.0], "train.steps": 300, "log.points": 30}
    m, meta = ss.run(small_config(**base))
    n0 = common.TRACE_COUNT["n"]
    ss.run(small_config(**{**base, "train.seed": 5, "train.steps": 200, "teacher.beta": 2.0, "train.lr": [2e-3, 1e-3]}))
    assert common.TRACE_COUNT["n"] == n0
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
