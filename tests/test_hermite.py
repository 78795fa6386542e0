"""Hermite basis, kernels and activations against scipy and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import eval_hermitenorm

import scaling_sgd as ss

from helpers import assert_close, mc_se_tol


@pytest.mark.parametrize("j", range(0, 11))
def test_hn_matches_scipy(j):
    z = np.linspace(-4.0, 4.0, 101)
    ref = eval_hermitenorm(j, z) / math.sqrt(math.factorial(j))
    assert_close(ss.hn(j)(jnp.asarray(z)), ref, rtol=1e-10, atol=1e-10)
    assert_close(ss.hn(j).numpy(z), ref, rtol=1e-10, atol=1e-10)


def test_orthonormality_by_quadrature():
    z, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / np.sqrt(2 * np.pi)
    H = np.stack([eval_hermitenorm(j, z) / math.sqrt(math.factorial(j)) for j in range(12)])
    assert_close((H * w) @ H.T, np.eye(12), atol=1e-10)


@pytest.mark.parametrize("spec", ["h3", "h4", {2: 0.6, 4: 0.8}, {1: 0.3, 3: 0.5, 6: 0.4}, "tanh"])
def test_derivative_equals_autodiff(spec):
    act = ss.activation(spec, degree=9)
    z = jnp.linspace(-3.0, 3.0, 41)
    auto = jax.vmap(jax.grad(lambda t: act(t)))(z)
    assert_close(act.derivative(z), auto, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec", ["h4", {2: 0.6, 4: 0.8}, {0: 0.2, 1: 0.5, 3: 0.5}, "relu"])
@pytest.mark.parametrize("rho", [0.0, 0.35, 0.8, -0.6])
def test_kernel_against_monte_carlo(spec, rho):
    act = ss.activation(spec, degree=8)
    rng = np.random.default_rng(12345)
    n = 400_000
    g1, g2 = rng.standard_normal((2, n))
    u = g1
    v = rho * g1 + np.sqrt(1 - rho * rho) * g2  # corr(u, v) = rho
    prod = act.numpy(u) * act.numpy(v)
    k = float(act.kernel(jnp.asarray(rho)))
    assert abs(prod.mean() - k) < mc_se_tol(prod), (prod.mean(), k)


def test_information_exponent_and_norm():
    assert ss.hn(4).info_exponent == 4
    assert ss.activation({2: 0.0, 3: 1.0, 5: 2.0}).info_exponent == 3
    assert ss.activation("relu").info_exponent == 1
    assert ss.activation({0: 1.0}).info_exponent is None
    act = ss.activation({1: 0.5, 4: 2.0})
    assert act.norm2 == pytest.approx(4.25)
    assert float(act.kernel(jnp.asarray(1.0))) == pytest.approx(4.25)


def test_relu_coefficients_closed_form():
    """ReLU: c_0 = phi(0), c_1 = 1/2, and for j >= 2 (integrating by parts twice)
    E[relu(z) He_j(z)] = phi(0) He_{j-2}(0)."""
    c = ss.activation("relu", degree=12).coeffs
    phi0 = 1 / np.sqrt(2 * np.pi)
    ref = [phi0, 0.5] + [phi0 * eval_hermitenorm(j - 2, 0.0) / math.sqrt(math.factorial(j)) for j in range(2, 13)]
    assert_close(c, ref, rtol=1e-9, atol=1e-12)


def test_relu_expansion_converges():
    """Parseval: the truncated expansion's L2 error is 1/2 - K(1), decreasing in the degree."""
    z = np.linspace(-12, 12, 200_001)
    w = np.exp(-z * z / 2) / np.sqrt(2 * np.pi) * (z[1] - z[0])
    errs = []
    for deg in (2, 6, 12, 24):
        act = ss.activation("relu", degree=deg)
        errs.append(np.sum(w * (act.numpy(z) - np.maximum(z, 0)) ** 2))
        assert errs[-1] == pytest.approx(0.5 - act.norm2, abs=1e-7)
    assert all(b < a for a, b in zip(errs, errs[1:]))


@pytest.mark.parametrize("bad", ["h99", "softplus2", {}, {"x": 1.0}, {4: "a"}])
def test_bad_activation_rejected(bad):
    with pytest.raises(ValueError, match="accepted|need"):
        ss.activation(bad)


# (activation, other): self kernels and cross kernels, with a constant term, odd and even
# parts, other of higher and of lower degree than self, and a constant activation.
KDERIV_CASES = [
    ("h4", None),
    ({0: 0.3, 1: 0.5, 3: 0.2, 6: 0.4}, None),
    ("relu", "h4"),
    ({1: 0.2, 3: 0.6, 4: 0.9}, {0: 0.7, 2: 0.5, 3: 0.4, 4: 0.7, 7: 0.3}),
    ("gelu", "sigmoid"),
    ({0: 1.0}, {0: 0.5, 2: 1.0}),
]


@pytest.mark.parametrize("spec,other", KDERIV_CASES)
def test_kernel_derivative_is_the_derivative_of_the_kernel(spec, other):
    """``K'(rho) = sum_j j c_j c'_j rho^(j-1)`` against ``np.polynomial``'s derivative of the
    coefficient products, against central finite differences of ``kernel`` and against
    autodiff of ``kernel``, on ``[-1, 1]``; and the cross kernel is symmetric."""
    act = ss.activation(spec, degree=8)
    oth = None if other is None else ss.activation(other, degree=8)
    o = act if oth is None else oth
    rho = np.linspace(-1.0, 1.0, 41)
    n = max(len(act.coeffs), len(o.coeffs))
    prod = [act.c(j) * o.c(j) for j in range(n)]
    ref = np.polynomial.polynomial.polyval(rho, np.polynomial.polynomial.polyder(prod))
    got = np.asarray(act.kernel_derivative(jnp.asarray(rho), oth))
    assert_close(got, ref, rtol=1e-12, atol=1e-12)
    h = 1e-5
    fd = (np.asarray(act.kernel(jnp.asarray(rho + h), oth)) - np.asarray(act.kernel(jnp.asarray(rho - h), oth))) / (2 * h)
    assert_close(got, fd, rtol=1e-6, atol=1e-8)  # O(h^2 K''') truncation, O(eps/h) rounding
    auto = jax.vmap(jax.grad(lambda r: act.kernel(r, oth)))(jnp.asarray(rho))
    assert_close(got, auto, rtol=1e-12, atol=1e-12)
    if oth is not None:
        assert_close(got, oth.kernel_derivative(jnp.asarray(rho), act), rtol=1e-14, atol=1e-14)
    # the derivative keeps the input's shape (scalar and matrix arguments)
    assert np.shape(act.kernel_derivative(jnp.asarray(0.3), oth)) == ()
    assert act.kernel_derivative(jnp.ones((2, 3)), oth).shape == (2, 3)


def test_hn_names_accepted_exactly_up_to_h30():
    """The accepted range of ``'h<n>'`` is the one the error message states: h0..h30."""
    for n in (0, 1, 29, 30):
        act = ss.activation(f"h{n}")
        assert act.info_exponent == (n or None) and act.degree == n and act.coeffs[-1] == 1.0
    with pytest.raises(ValueError, match="'h1'..'h30'"):
        ss.activation("h31")
