"""Closed-form population loss and observables against Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src import model as mdl

from helpers import assert_close, mc_se_tol


def _random_problem(key, d, m, P, teacher, student, basis):
    k1, k2, k3 = jax.random.split(key, 3)
    model = ss.Model(d=d, P=P, m=m, teacher=teacher, student=student, basis=basis)
    # random weights of unequal norms, some aligned with the teacher
    W = jax.random.normal(k1, (m, d)) * jax.random.uniform(k2, (m, 1), minval=0.2, maxval=1.0) / np.sqrt(d)
    theta = jnp.eye(P, d) if basis == "canonical" else mdl.teacher_basis(k3, P, d, jnp.float64)
    W = W.at[0].add(0.8 * theta[0])
    a = jnp.asarray(ss.power_law_coefficients(1.2, P))
    return model, W, theta, a


@pytest.mark.parametrize(
    "d,m,P,student,basis",
    [
        (10, 3, 2, "h4", "canonical"),
        (24, 5, 4, "h3", "random"),
        (16, 2, 6, {1: 0.4, 2: 0.5, 4: 0.7}, "random"),
        (8, 4, 3, "h2", "canonical"),
    ],
)
def test_closed_form_mse_matches_monte_carlo(d, m, P, student, basis):
    act = ss.activation(student)
    model, W, theta, a = _random_problem(jax.random.PRNGKey(d * 7 + m), d, m, P, act, act, basis)
    x = jax.random.normal(jax.random.PRNGKey(1), (400_000, d), jnp.float64)
    f = mdl.student_output(model, W, x)
    fs = mdl.teacher_output(model, None if basis == "canonical" else theta, a, x)
    sq = np.asarray((f - fs) ** 2)
    exact = float(mdl.population_loss(model, W @ W.T, W @ theta.T, a))
    assert abs(sq.mean() - exact) < mc_se_tol(sq), (sq.mean(), exact)


def test_mse_with_different_student_and_teacher_activations():
    teacher, student = ss.activation({3: 0.6, 4: 0.8}), ss.activation({0: 0.1, 4: 1.0})
    model, W, theta, a = _random_problem(jax.random.PRNGKey(3), 12, 3, 3, teacher, student, "canonical")
    x = jax.random.normal(jax.random.PRNGKey(2), (400_000, 12), jnp.float64)
    sq = np.asarray((mdl.student_output(model, W, x) - mdl.teacher_output(model, None, a, x)) ** 2)
    exact = float(mdl.population_loss(model, W @ W.T, W @ theta.T, a))
    assert abs(sq.mean() - exact) < mc_se_tol(sq)


def test_perfect_student_has_zero_loss_and_unit_skill():
    P, d = 4, 9
    act = ss.hn(4)
    model = ss.Model(d=d, P=P, m=P, teacher=act, student=act)
    a = jnp.asarray(ss.power_law_coefficients(1.0, P))
    W = jnp.sqrt(a)[:, None] * jnp.eye(P, d)  # r2_p = a_p, aligned with theta_p
    obs = ss.gram_observables(model, W @ W.T, W[:, :P], a, with_overlap=True)
    assert abs(float(obs["loss"])) < 1e-12
    assert_close(obs["skill"], np.ones(P))
    assert_close(obs["alignment"], np.ones(P))
    assert_close(obs["overlap"], np.eye(P))


def test_power_law_normalised():
    a = jnp.asarray(ss.power_law_coefficients(1.5, 7))
    assert_close(jnp.sum(a * a), 1.0)
    assert_close(a[1] / a[0], 2.0**-1.5)


def _np_sigma(act, z):
    """NumPy evaluation of an activation's (truncated) Hermite expansion, independent of the
    JAX code under test."""
    return act.numpy(z)


def _np_kernel(c1, c2, rho):
    """``sum_j c1_j c2_j rho^j`` entrywise (coefficients as tuples), by ``np.polynomial``."""
    n = max(len(c1), len(c2))
    c = [(c1[j] if j < len(c1) else 0.0) * (c2[j] if j < len(c2) else 0.0) for j in range(n)]
    return np.polynomial.polynomial.polyval(np.asarray(rho, np.float64), c)


# Activations whose Hermite expansion has a constant term c_0 (all four non-polynomial
# ones), alone and mixed with polynomial ones, as teacher and as student.
NONPOLY_PAIRS = [
    ("relu", "relu"),
    ("abs", "abs"),
    ("sigmoid", "sigmoid"),
    ("gelu", "gelu"),
    ("relu", "h4"),
    ("h4", "relu"),
    ("sigmoid", "abs"),
    ("gelu", {1: 0.5, 2: 0.3, 4: 0.6}),
]


@pytest.mark.parametrize("teacher,student", NONPOLY_PAIRS)
def test_closed_form_mse_nonpolynomial_and_mixed_activations(teacher, student):
    """The exact loss against Monte Carlo when ``c_0 != 0``: then ``K(0) = c_0^2`` enters
    every off-diagonal pair, in particular the teacher term
    ``K_tt(0) ((sum_p a_p)^2 - |a|^2)``.  The Monte Carlo uses NumPy evaluations of the
    same truncated expansions (the model simulated is that polynomial)."""
    t, s = ss.activation(teacher, degree=6), ss.activation(student, degree=6)
    d, m, P = 10, 3, 4
    model, W, theta, a = _random_problem(jax.random.PRNGKey(11), d, m, P, t, s, "canonical")
    # students of norm ~0.5: the heavy tails of a degree-6 polynomial of r z stay moderate
    W, a = 0.5 * np.asarray(W, np.float64), np.asarray(a, np.float64)
    x = np.random.default_rng(5).standard_normal((200_000, d))
    r = np.linalg.norm(W, axis=1)
    f = _np_sigma(s, (x @ W.T) / r) @ (r * r)
    fs = _np_sigma(t, x[:, :P]) @ a
    sq = (f - fs) ** 2
    exact = float(mdl.population_loss(model, jnp.asarray(W @ W.T), jnp.asarray(W[:, :P]), jnp.asarray(a)))
    tol = mc_se_tol(sq)
    assert abs(sq.mean() - exact) < tol, (sq.mean(), exact, tol)
    # The test has power against a dropped teacher cross term: it is many tolerances wide.
    cross = t.c(0) ** 2 * (a.sum() ** 2 - (a * a).sum())
    if t.c(0) != 0.0:
        assert cross > 4 * tol, (cross, tol)


def test_every_observable_by_hand_on_partly_aligned_students():
    """``gram_observables`` against NumPy formulas on students that are partly aligned,
    some anti-aligned (negative cosines), with unequal norms, a random teacher frame and
    different student and teacher activations (both with a constant term)."""
    d, P, m = 12, 3, 4
    teacher = ss.activation({0: 0.3, 2: 0.5, 3: 0.4, 4: 0.8})
    student = ss.activation({0: 0.2, 1: 0.4, 3: 0.5, 4: 0.7})
    model = ss.Model(d=d, P=P, m=m, teacher=teacher, student=student, basis="random")
    rng = np.random.default_rng(7)
    theta = np.linalg.qr(rng.standard_normal((d, P)))[0].T  # (P, d) orthonormal
    noise = rng.standard_normal((m, d)) / np.sqrt(d)
    W = np.stack(
        [
            0.7 * theta[0] + 0.3 * noise[0],  # mostly direction 0
            -0.6 * theta[1] + 0.4 * noise[1],  # anti-aligned with direction 1
            0.4 * theta[0] + 0.5 * theta[2] + 0.3 * noise[2],  # between 0 and 2
            1.5 * noise[3],  # unaligned, larger norm
        ]
    )
    a = np.array([0.8, 0.5, 0.33])
    obs = ss.gram_observables(model, jnp.asarray(W @ W.T), jnp.asarray(W @ theta.T), jnp.asarray(a), with_overlap=True)

    r2 = np.sum(W * W, axis=1)
    r = np.sqrt(r2)
    M = (W @ theta.T) / r[:, None]
    G = (W @ W.T) / np.outer(r, r)
    Ktt = lambda rho: _np_kernel(teacher.coeffs, teacher.coeffs, rho)  # noqa: E731
    Kst = lambda rho: _np_kernel(student.coeffs, teacher.coeffs, rho)  # noqa: E731
    Kss = lambda rho: _np_kernel(student.coeffs, student.coeffs, rho)  # noqa: E731
    loss = r2 @ Kss(G) @ r2 - 2 * r2 @ Kst(M) @ a + a @ Ktt(theta @ theta.T) @ a
    assert_close(obs["loss"], loss, rtol=1e-12)
    assert_close(obs["alignment"], np.max(M * M, axis=0), rtol=1e-12)
    assert_close(obs["skill"], (r2 @ Kst(M)) / (a * Ktt(1.0)), rtol=1e-12)
    assert_close(obs["norm2"], r2, rtol=1e-12)
    assert_close(obs["overlap"], M, rtol=1e-12, atol=1e-15)
    # The students discriminate the plausible wrong formulas: max |M| or the signed max
    # differ from max M^2 here (direction 1's best neuron is anti-aligned).
    assert np.min(np.abs(np.max(np.abs(M), axis=0) - np.max(M * M, axis=0))) > 0.05
    assert np.max(np.abs(np.max(M, axis=0) ** 2 - np.max(M * M, axis=0))) > 0.1
    assert 0.05 < np.min(np.abs(M).max(axis=0)) and np.max(np.abs(M)) < 0.99


def test_h2_loss_depends_only_on_the_sum_of_outer_products():
    """For sigma = h2 (K(rho) = rho^2) the exact MSE is ||S - A||_F^2 with S = sum_i w_i w_i^T
    and A = sum_p a_p theta_p theta_p^T (08's note): two students with the same S, one of
    them with every neuron mixing directions, have the same loss."""
    act = ss.activation("h2")
    model, W, theta, a = _random_problem(jax.random.PRNGKey(5), 12, 4, 3, act, act, "random")
    W, theta, a = (np.asarray(v, np.float64) for v in (W, theta, a))
    S, A = W.T @ W, (theta.T * a) @ theta
    exact = float(mdl.population_loss(model, jnp.asarray(W @ W.T), jnp.asarray(W @ theta.T), jnp.asarray(a)))
    assert exact == pytest.approx(np.sum((S - A) ** 2), rel=1e-10)
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))  # rotate the neurons: same S, mixed rows
    W2 = Q @ W
    other = float(mdl.population_loss(model, jnp.asarray(W2 @ W2.T), jnp.asarray(W2 @ theta.T), jnp.asarray(a)))
    assert other == pytest.approx(exact, rel=1e-10)
