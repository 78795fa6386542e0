"""Theory overlays checked numerically: exact flow escape time, small-m0 constant,
additive-model exponent, predicted T_p from the initial overlaps."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from analysis import theory
from analysis.fit import fit_from_draws


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


def test_predicted_emergence_steps_uses_best_neuron_and_lr():
    rng = np.random.default_rng(0)
    R, m, P = 3, 5, 2
    M0 = rng.uniform(-0.3, 0.3, size=(R, m, P))
    r2 = rng.uniform(0.005, 0.02, size=(R, m))
    metrics = {"overlap": M0[:, None], "norm2": r2[:, None], "lr": np.array([1e-3, 2e-3, 4e-3])}
    a = np.tile([0.8, 0.6], (R, 1))
    T, _ = theory.predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), a)
    for r in range(R):
        for p in range(P):
            i = np.argmax(np.abs(M0[r, :, p]))
            tau = theory.flow_escape_time(M0[r, i, p], r2[r, i], a[r, p])
            assert T[r, p] == pytest.approx(tau / metrics["lr"][r], rel=1e-12)


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
    from analysis.theory import flow_escape_time, predicted_emergence_steps

    overlap = np.zeros((1, 2, 2, 1))
    overlap[0, 0, :, 0] = [-0.4, 0.1]  # neuron 0 strongly anti-aligned, neuron 1 weakly aligned
    metrics = {"overlap": overlap, "norm2": np.full((1, 2, 2), 0.01), "lr": np.array([1.0])}
    a = np.array([[1.0]])
    T3, _ = predicted_emergence_steps(metrics, (0, 0, 0, 1.0), a)
    T4, _ = predicted_emergence_steps(metrics, (0, 0, 0, 0, 1.0), a)
    np.testing.assert_allclose(T3[0, 0], flow_escape_time(0.1, 0.01, 1.0, (0, 0, 0, 1.0)), rtol=1e-12)
    np.testing.assert_allclose(T4[0, 0], flow_escape_time(0.4, 0.01, 1.0, (0, 0, 0, 0, 1.0)), rtol=1e-12)
