"""Theory overlays checked numerically: exact flow escape time, small-m0 constant,
additive-model exponent, predicted T_p from the initial overlaps."""

import itertools

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from scaling_sgd.analysis import theory
from scaling_sgd.analysis.fit import fit_from_draws


@pytest.mark.parametrize("k", [3, 4, 6])
def test_exact_flow_integral_matches_ode(k):
    m0 = np.array([0.3, 0.1, 0.03])
    a = np.array([0.9, 0.4, 0.15])
    coeffs = np.zeros(k + 1)
    coeffs[k] = 1.3
    got = theory.flow_escape_time(m0, 0.01, a, coeffs, threshold=0.5)
    ode = theory.single_direction_flow(m0, 0.01, a, k=k, c_k=1.3, threshold=0.5)
    np.testing.assert_allclose(got, ode, rtol=1e-4)


def test_exact_flow_integral_general_activation_matches_ode():
    c = np.array([0.0, 0.0, 0.4, 0.0, 1.0, 0.0, 0.3])  # K(m) = 0.16 m^2 + m^4 + 0.09 m^6
    c2 = c**2
    K1 = c2.sum()
    a, m0, r20, thr = 0.6, 0.05, 0.02, 0.7

    def rhs(_, y):
        m, r2 = y
        K = np.polyval(c2[::-1], m)
        dK = np.polyval((np.arange(1, c2.size) * c2[1:])[::-1], m)
        return [a * dK * (1 - m * m), -4 * r2 * (r2 * K1 - a * K)]

    def hit(_, y):
        return y[1] * np.polyval(c2[::-1], y[0]) / (a * K1) - thr

    hit.terminal, hit.direction = True, 1
    sol = solve_ivp(rhs, (0, 1e7), [m0, r20], method="LSODA", events=hit, rtol=1e-11, atol=1e-14)
    got = theory.flow_escape_time(m0, r20, a, c, threshold=thr)
    assert got == pytest.approx(sol.t_events[0][0], rel=1e-4)
    # alignment observable: tau at m^2 = thr depends on the m equation only
    al = theory.flow_escape_time(m0, r20, a, c, threshold=thr, observable="alignment")
    hit2 = lambda _, y: y[0] ** 2 - thr  # noqa: E731
    hit2.terminal = True
    sol2 = solve_ivp(rhs, (0, 1e7), [m0, r20], method="LSODA", events=hit2, rtol=1e-11, atol=1e-14)
    assert al == pytest.approx(sol2.t_events[0][0], rel=1e-4)


def test_small_m0_escape_time_constant_within_one_percent():
    # tau ~ m0^-(k-2) / (k (k-2) c_k^2 a): 1/(8 a m0^2) for h4
    for m0, a in [(0.01, 0.8), (0.005, 0.2)]:
        ode = theory.single_direction_flow(m0, 0.01, a)
        asym = theory.escape_time_small_m0(m0, a)
        assert asym == pytest.approx(ode, rel=0.01)
        assert asym == pytest.approx(1.0 / (8 * a * m0**2))
    # k = 3: m0^-1 / (3 c^2 a)
    ode3 = theory.single_direction_flow(0.001, 0.01, 0.5, k=3)
    assert theory.escape_time_small_m0(0.001, 0.5, k=3) == pytest.approx(ode3, rel=0.01)


def test_additive_model_exponent():
    # T_p = p^beta exactly; for a long power law the additive loss decays as t^-(2beta-1)/beta
    P = 20000
    for beta in (0.8, 1.5):
        a = theory.power_law_coefficients(beta, P)
        T = np.arange(1, P + 1.0) ** beta
        t = np.geomspace(10.0, T[P // 100], 60)
        L = theory.additive_loss(t, T, a)
        f = fit_from_draws(t, L)
        assert f.slope == pytest.approx(theory.exponents(beta, 4)["loss_vs_step"], abs=0.03)
    assert theory.exponents(0.8, 4)["compute_frontier"] == pytest.approx(-1 / 3)


def _brute_force(tau):
    """Minimum-total one-to-one assignment of an (m, P) cost matrix with m >= P, by
    enumerating every injective map from directions to neurons."""
    m, P = tau.shape
    best = min(itertools.permutations(range(m), P), key=lambda who: sum(tau[i, p] for p, i in enumerate(who)))
    return np.array(best)


def test_predicted_emergence_steps_assigns_neurons_one_to_one_and_uses_lr():
    rng = np.random.default_rng(0)
    R, m, P = 3, 5, 2
    M0 = rng.uniform(-0.3, 0.3, size=(R, m, P))
    r2 = rng.uniform(0.005, 0.02, size=(R, m))
    metrics = {"overlap": M0[:, None], "norm2": r2[:, None], "lr": np.array([1e-3, 2e-3, 4e-3])}
    a = np.tile([0.8, 0.6], (R, 1))
    T, source = theory.predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), a, assign="total")
    assert "one-to-one" in source
    for r in range(R):
        tau = theory.flow_escape_time(M0[r], r2[r][:, None], a[r][None, :])  # (m, P)
        who = _brute_force(tau)
        for p in range(P):
            assert T[r, p] == pytest.approx(tau[who[p], p] / metrics["lr"][r], rel=1e-12)


def test_one_neuron_best_for_two_directions_is_given_to_one_of_them_only():
    """Neuron 0 has the largest initial cosine with both directions.  Each direction taking
    its best neuron (a greedy overlay) would let neuron 0 learn both; the one-to-one
    assignment gives it to one direction and the other direction its next neuron, the
    minimum-total assignment found by enumeration."""
    M0 = np.array([[0.30, 0.25], [0.10, 0.20], [0.12, 0.05]])  # (m = 3, P = 2)
    r2 = np.array([0.01, 0.012, 0.008])
    a = np.array([0.9, 0.4])
    metrics = {"overlap": M0[None, None], "norm2": r2[None, None], "lr": np.array([1e-3])}
    T, _ = theory.predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), a[None])
    tau = theory.flow_escape_time(M0, r2[:, None], a[None, :])
    argmax = np.argmax(M0, axis=0)
    assert argmax.tolist() == [0, 0]  # the case: one neuron best for both directions
    who = _brute_force(tau)
    assert len(set(who.tolist())) == 2 and who.tolist() != argmax.tolist()
    np.testing.assert_allclose(T[0], tau[who, [0, 1]] / 1e-3, rtol=1e-12)
    assert not np.allclose(T[0], tau[argmax, [0, 1]] / 1e-3)
    assert theory.assign_neurons(tau[None]).tolist() == [who.tolist()]


def test_assign_neurons_matches_brute_force_and_leaves_directions_without_a_neuron():
    rng = np.random.default_rng(3)
    for _ in range(30):
        m, P = rng.integers(2, 6), rng.integers(1, 4)
        tau = np.exp(rng.normal(0.0, 2.0, size=(m, P)))
        tau[rng.random((m, P)) < 0.15] = np.inf  # some pairs never escape (odd k, negative cosine)
        who = theory.assign_neurons(tau[None])[0]
        assigned = who >= 0
        assert len(set(who[assigned].tolist())) == assigned.sum()  # one-to-one
        if m >= P and np.isfinite(tau).all():
            ref = _brute_force(tau)
            got = sum(tau[who[p], p] for p in range(P))
            assert got == pytest.approx(sum(tau[ref[p], p] for p in range(P)), rel=1e-12)
        assert np.all(np.isfinite(tau[who[assigned], np.flatnonzero(assigned)]))  # never a pair that does not escape
    # more directions than neurons: the extra directions get no neuron, and the flow
    # prediction says they are never learned
    tau = np.array([[1.0, 2.0, 3.0]])
    assert theory.assign_neurons(tau[None]).tolist() == [[0, -1, -1]]
    metrics = {"overlap": np.full((1, 1, 1, 3), 0.2), "norm2": np.full((1, 1, 1), 0.01), "lr": np.ones(1)}
    T, _ = theory.predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), np.array([[0.8, 0.5, 0.3]]))
    assert np.isfinite(T[0, 0]) and np.all(np.isinf(T[0, 1:]))


def test_assignment_in_the_order_of_the_escapes_differs_from_the_minimum_total():
    """Neuron 0 escapes first for direction 0 (tau 1.0) and is also the only fast one for
    direction 1; the minimum total gives direction 0 to neuron 1 (1.1 + 2.0), the order of
    the escapes gives it to neuron 0 and leaves direction 1 the slow neuron 1 (1.0 + 100)."""
    tau = np.array([[[1.0, 2.0], [1.1, 100.0]]])
    assert theory.assign_neurons(tau, "total").tolist() == [[1, 0]]
    assert theory.assign_neurons(tau, "order").tolist() == [[0, 1]]
    assert theory.assign_neurons(tau).tolist() == [[0, 1]]  # the default is the race the dynamics run
    tau_inf = np.array([[[1.0, np.inf], [np.inf, np.inf]]])  # nothing left that escapes: no neuron
    assert theory.assign_neurons(tau_inf, "order").tolist() == [[0, -1]]
    with pytest.raises(ValueError, match="rule: got 'best'"):
        theory.assign_neurons(tau, "best")
    M0 = np.array([[0.30, 0.25], [0.10, 0.20], [0.12, 0.05]])
    metrics = {"overlap": M0[None, None], "norm2": np.full((1, 1, 3), 0.01), "lr": np.array([1.0])}
    _, src = theory.predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), np.array([[0.9, 0.4]]), assign="order")
    assert "order of their predicted escapes" in src


@pytest.mark.parametrize("coeffs", [(0, 0, 0, 1.0), (0, 0, 0.4, 0, 1.0, 0, 0.3)])
def test_pair_escape_times_table_matches_the_exact_flow(coeffs):
    """The ranking costs of the assignment: a tau depends on (m0, a / r2_0) only, and the
    interpolated table (used for many pairs) agrees with the direct quadrature."""
    rng = np.random.default_rng(4)
    n = 150
    m0 = np.minimum(np.abs(rng.standard_normal(n)) / np.sqrt(rng.choice([32, 64, 256], n)), 0.5)
    r2 = rng.uniform(0.005, 0.03, n)
    a = theory.power_law_coefficients(1.0, 64)[rng.integers(0, 64, n)]
    exact = theory.flow_escape_time(m0, r2, a, coeffs)
    np.testing.assert_allclose(theory.flow_escape_time(m0, r2 / a, 1.0, coeffs) / a, exact, rtol=1e-5)  # the scaling
    direct = theory.pair_escape_times(m0, r2, a, coeffs)  # n <= max_direct
    table = theory.pair_escape_times(m0, r2, a, coeffs, max_direct=0)
    np.testing.assert_allclose(direct, exact, rtol=5e-4)
    np.testing.assert_allclose(table, exact, rtol=2e-3)
    m0[:3] = 0.0  # a neuron orthogonal to the direction never escapes
    assert np.all(np.isinf(theory.pair_escape_times(m0, r2, a, coeffs, max_direct=0)[:3]))


def test_typical_initial_overlap_matches_monte_carlo():
    rng = np.random.default_rng(1)
    d, m = 400, 8
    W = rng.standard_normal((4000, m, d))
    cos = np.abs(W[..., 0]) / np.linalg.norm(W, axis=-1)
    mc = np.median(cos.max(axis=1))
    assert theory.typical_initial_overlap(d, m) == pytest.approx(mc, rel=0.03)


def test_predicted_emergence_uses_signed_cosines_for_odd_activations():
    """h3: a neuron with a large negative cosine never escapes; the prediction must use the
    best positive cosine (for h4 the sign is irrelevant)."""
    from scaling_sgd.analysis.theory import flow_escape_time, predicted_emergence_steps

    overlap = np.zeros((1, 2, 2, 1))
    overlap[0, 0, :, 0] = [-0.4, 0.1]  # neuron 0 strongly anti-aligned, neuron 1 weakly aligned
    metrics = {"overlap": overlap, "norm2": np.full((1, 2, 2), 0.01), "lr": np.array([1.0])}
    a = np.array([[1.0]])
    T3, _ = predicted_emergence_steps(metrics, (0, 0, 0, 1.0), a)
    T4, _ = predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), a)
    np.testing.assert_allclose(T3[0, 0], flow_escape_time(0.1, 0.01, 1.0, (0, 0, 0, 1.0)), rtol=1e-12)
    np.testing.assert_allclose(T4[0, 0], flow_escape_time(0.4, 0.01, 1.0, (0, 0, 0, 0, 1.0)), rtol=1e-12)


def test_additive_loss_counts_the_directions_not_yet_learned():
    step = np.array([0.0, 10.0, 100.0, 1000.0])
    T = np.array([[5.0, 50.0, np.inf]])  # third direction never learned
    a = np.array([[0.8, 0.5, 0.3]])
    np.testing.assert_allclose(theory.additive_loss(step, T, a)[0], [0.98, 0.34, 0.09, 0.09])
    np.testing.assert_allclose(theory.additive_loss(step, T, a, K1=2.0)[0], [1.96, 0.68, 0.18, 0.18])


def test_additive_emergence_times_are_log_normal_around_p_to_the_beta():
    from scaling_sgd.analysis.emergence import log_scatter

    T, a = theory.additive_emergence_times(1.5, 8, 100.0, 0.4, n_seeds=4000, seed=1)
    assert T.shape == (4000, 8)
    np.testing.assert_allclose(a, theory.power_law_coefficients(1.5, 8))
    med = np.median(T, axis=0)
    np.testing.assert_allclose(med, 100.0 * np.arange(1, 9) ** 1.5, rtol=0.05)  # the median of exp(sigma xi) is 1
    assert log_scatter(T) == pytest.approx(0.4, rel=0.03)
    T0, _ = theory.additive_emergence_times(1.5, 8, 100.0, 0.0, n_seeds=2)
    np.testing.assert_allclose(T0[1], 100.0 * np.arange(1, 9) ** 1.5)  # no scatter: the law itself


def test_additive_model_reaches_the_asymptotic_exponents_only_at_large_P():
    """The finite-P reference of the validation report (docs/model.md §3): with
    T_p = T_1 p^beta the additive model has the paper's exponents when P is large, and is
    visibly steeper at P = 8 / 16, for the loss and for the compute frontier."""
    for beta in (1.0, 1.5):
        big = theory.additive_loss_exponent(beta, 1024, 1e5, 0.0, n_seeds=1)  # 2nd to 102nd emergence
        assert big == pytest.approx(-(2 * beta - 1) / beta, abs=0.05)
        # at P = 8 over the 2nd to the next-to-last emergence (experiment 3's window)
        assert theory.additive_loss_exponent(beta, 8, 1e5, 0.0, n_seeds=1, hi_rank=-2) < big - 0.2
    widths = [2**j for j in range(11)]
    big = theory.additive_frontier_slope(0.8, 1024, widths, 1.0, 0.0, (0.02, 0.5), n_seeds=1)
    assert big == pytest.approx(theory.exponents(0.8, 4)["compute_frontier"], abs=0.05)
    assert theory.additive_frontier_slope(0.8, 16, widths[:5], 1.0, 0.0, (0.02, 0.5), n_seeds=1) < -0.45
    # a loss window the envelope never enters has no fit
    assert np.isnan(theory.additive_frontier_slope(0.8, 16, widths[:5], 1.0, 0.0, (10.0, 20.0), n_seeds=1))


def test_additive_frontier_with_a_first_emergence_time_per_width():
    """T1 per width: one common value (scalar or repeated) only shifts C, so the slope is
    the same for any T1; a T1 that falls with the width (a wider student's best neuron is
    better aligned) makes the frontier steeper."""
    widths = [2**j for j in range(9)]
    args = (0.8, 256, widths)
    base = theory.additive_frontier_slope(*args, 1.0, 0.3, (0.02, 0.5), n_seeds=8)
    assert theory.additive_frontier_slope(*args, [7.0] * len(widths), 0.3, (0.02, 0.5), n_seeds=8) == pytest.approx(
        base, abs=1e-9
    )
    falling = theory.additive_frontier_slope(*args, np.asarray(widths, float) ** -0.3, 0.3, (0.02, 0.5), n_seeds=8)
    assert falling < base - 0.02


def test_additive_frontier_is_the_lower_envelope_of_the_width_curves():
    """A direct check of the envelope, not only of its slope: with no scatter and two widths,
    the frontier at compute C is the smaller of the two additive-model losses."""
    from scaling_sgd.analysis.frontier import lower_envelope

    T, a = theory.additive_emergence_times(1.0, 4, 10.0, 0.0, n_seeds=1)
    t = np.geomspace(1.0, 1e3, 50)
    L1 = np.sum(a[1:] ** 2) + theory.additive_loss(t, T[:, :1], a[:1])[0]
    L4 = theory.additive_loss(t, T, a)[0]
    grid = np.geomspace(4.0, 1e3, 30)
    _, vals, env = lower_envelope([(1 * t, L1), (4 * t, L4)], grid, hold_last=True)
    np.testing.assert_allclose(env, np.minimum(vals[0], vals[1]))
    # width 1 holds its floor a_2^2 + ... + a_4^2 past its last point; width 4 has learned everything by then
    assert vals[0][-1] == pytest.approx(np.sum(a[1:] ** 2))


@pytest.mark.parametrize("beta,k", [(0.8, 4), (1.0, 4), (1.5, 6), (0.75, 3)])
def test_exponents_are_the_spec_formulas(beta, k):
    """docs/model.md §3: T_p ~ p^beta, T_p ~ a_p^-1, MSE ~ t^-((2 beta - 1)/beta),
    plateau ~ m^(1 - 2 beta), T_p ~ d^(k/2 - 1), compute frontier (1 - 2 beta)/(1 + beta)."""
    e = theory.exponents(beta, k)
    want = {
        "emergence_time_vs_p": beta,
        "emergence_time_vs_a": -1.0,
        "loss_vs_step": (1 - 2 * beta) / beta,
        "plateau_vs_m": 1 - 2 * beta,
        "emergence_time_vs_d": k / 2 - 1,
        "compute_frontier": (1 - 2 * beta) / (1 + beta),
    }
    assert e == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("beta", [0.25, 0.5])
def test_no_power_law_exponent_at_beta_at_most_one_half(beta):
    """For beta <= 1/2 the loss is not a power law: no value (None, never a number such as
    -(2 beta - 1)/beta = 2 at beta = 0.25), with the reason; the other exponents stay."""
    e, why = theory.exponents(beta, 4), theory.exponent_reasons(beta, 4)
    for name in ("loss_vs_step", "plateau_vs_m", "compute_frontier"):
        assert e[name] is None and why[name] == theory.NO_POWER_LAW
        assert theory.exponent(name, beta, 4) == (None, theory.NO_POWER_LAW)
    assert e["emergence_time_vs_p"] == beta and e["emergence_time_vs_d"] == 1.0
    assert set(why) == {"loss_vs_step", "plateau_vs_m", "compute_frontier"}
    assert theory.exponent_reasons(0.51, 4) == {} and theory.exponents(0.51, 4)["loss_vs_step"] < 0
    assert theory.exponents(1.0, None)["emergence_time_vs_d"] is None and "emergence_time_vs_d" in theory.exponent_reasons(
        1.0, None
    )
