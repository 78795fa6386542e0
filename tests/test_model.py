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
    a = ss.power_law_coefficients(1.2, P, jnp.float64)
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
    a = ss.power_law_coefficients(1.0, P, jnp.float64)
    W = jnp.sqrt(a)[:, None] * jnp.eye(P, d)  # r2_p = a_p, aligned with theta_p
    obs = ss.gram_observables(model, W @ W.T, W[:, :P], a, with_overlap=True)
    assert abs(float(obs["loss"])) < 1e-12
    assert_close(obs["skill"], np.ones(P))
    assert_close(obs["alignment"], np.ones(P))
    assert_close(obs["overlap"], np.eye(P))


def test_power_law_normalised():
    a = ss.power_law_coefficients(1.5, 7, jnp.float64)
    assert_close(jnp.sum(a * a), 1.0)
    assert_close(a[1] / a[0], 2.0**-1.5)
