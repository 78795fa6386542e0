"""The multi-index model: teacher, 2-homogeneous student, exact loss, observables.

Notation (SPEC section 1), one replica:

* ``d`` input dimension, ``P`` teacher directions, ``m`` student neurons.
* ``W`` ``(m, d)`` student weights, ``r2 = ||w_i||^2`` ``(m,)``.
* ``theta`` ``(P, d)`` orthonormal teacher directions (``e_p`` in the canonical basis).
* ``a`` ``(P,)`` teacher coefficients.
* ``f(x) = sum_i r2_i sigma(<x, w_i>/r_i)``,  ``f*(x) = sum_p a_p sigma*(<x, theta_p>)``.

Everything observable depends on ``W`` only through the Gram blocks
``WW = W W^T`` ``(m, m)`` and ``WT = W theta^T`` ``(m, P)``: the functions here take those,
so the full-dimensional, reduced and flow engines share one implementation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .hermite import Activation

__all__ = [
    "Model",
    "power_law_coefficients",
    "teacher_basis",
    "init_student",
    "gram_observables",
    "population_loss",
    "per_sample_grad_coeffs",
    "student_output",
    "teacher_output",
]

_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class Model:
    """Static description of the model (hashable: a compile-time constant).

    Attributes:
        d, P, m: dimensions.
        teacher: teacher activation ``sigma*``.
        student: student activation ``sigma`` (defaults to the teacher's in the config).
        basis: ``"canonical"`` (``theta_p = e_p``) or ``"random"`` (Haar-orthonormal).
    """

    d: int
    P: int
    m: int
    teacher: Activation
    student: Activation
    basis: str = "canonical"

    def K_ss(self, rho):
        """Student-student kernel ``E[sigma(u.x) sigma(v.x)]``."""
        return self.student.kernel(rho)

    def K_st(self, rho):
        """Student-teacher kernel ``sum_j c_j c*_j rho^j``."""
        return self.student.kernel(rho, self.teacher)

    def K_tt(self, rho):
        """Teacher-teacher kernel."""
        return self.teacher.kernel(rho)


def power_law_coefficients(beta, P: int, dtype=jnp.float32):
    """``a_p = p^-beta / sqrt(sum_q q^-2beta)``, ``p = 1..P`` (so ``sum_p a_p^2 = 1``).

    Args:
        beta: scalar (may be traced).
        P: number of directions (static).
    Returns:
        ``(P,)`` array.
    """
    p = jnp.arange(1, P + 1, dtype=dtype)
    a = p ** (-jnp.asarray(beta, dtype))
    return a / jnp.sqrt(jnp.sum(a * a))


def teacher_basis(key, P: int, d: int, dtype=jnp.float32):
    """A Haar-random orthonormal ``(P, d)`` frame (QR of a Gaussian, signs fixed)."""
    g = jax.random.normal(key, (d, P), dtype)
    q, r = jnp.linalg.qr(g)
    return (q * jnp.sign(jnp.diagonal(r))[None, :]).T


def init_student(key, m: int, d: int, init_scale, dtype=jnp.float32):
    """``w_i ~ N(0, (s^2/d) I_d)`` i.i.d.; returns ``W`` ``(m, d)``."""
    return jax.random.normal(key, (m, d), dtype) * (jnp.asarray(init_scale, dtype) / jnp.sqrt(jnp.asarray(d, dtype)))


def _cosines(WW, WT):
    r2 = jnp.diagonal(WW)
    r = jnp.sqrt(jnp.maximum(r2, _TINY))
    G = WW / (r[:, None] * r[None, :])
    M = WT / r[:, None]
    return r2, G, M


def population_loss(model: Model, WW, WT, a):
    """Exact population MSE (SPEC section 1), from the Gram blocks.

    ``MSE = r2^T K_ss(G) r2 - 2 r2^T K_st(M) a + a^T K_tt(I_P) a``

    Args:
        WW: ``(m, m)`` ``W W^T``.  WT: ``(m, P)`` ``W theta^T``.  a: ``(P,)``.
    Returns:
        scalar MSE (not halved).
    """
    r2, G, M = _cosines(WW, WT)
    # The diagonal of G is 1 up to rounding; set it exactly so K(G_ii) = K(1).
    G = jnp.where(jnp.eye(G.shape[0], dtype=bool), jnp.ones_like(G), G)
    tt = model.K_tt(jnp.asarray(1.0, a.dtype)) * jnp.sum(a * a) + model.K_tt(jnp.asarray(0.0, a.dtype)) * (
        jnp.sum(a) ** 2 - jnp.sum(a * a)
    )
    return r2 @ model.K_ss(G) @ r2 - 2.0 * r2 @ model.K_st(M) @ a + tt


def gram_observables(model: Model, WW, WT, a, with_overlap: bool = False):
    """Loss and per-direction observables from the Gram blocks.

    Returns a dict with
        ``loss`` scalar exact MSE;
        ``alignment`` ``(P,)`` ``max_i M_ip^2``;
        ``skill`` ``(P,)`` ``sum_i r2_i K_st(M_ip) / (a_p K_tt(1))``;
        ``norm2`` ``(m,)`` ``r2``;
        ``overlap`` ``(m, P)`` the cosines ``M`` (only if ``with_overlap``).
    """
    r2, _, M = _cosines(WW, WT)
    one = jnp.asarray(1.0, a.dtype)
    out = {
        "loss": population_loss(model, WW, WT, a),
        "alignment": jnp.max(M * M, axis=0),
        "skill": (r2 @ model.K_st(M)) / (a * model.K_tt(one)),
        "norm2": r2,
    }
    if with_overlap:
        out["overlap"] = M
    return out


def student_output(model: Model, W, x):
    """``f(x) = sum_i r2_i sigma(<x, w_i>/r_i)``.  W ``(m, d)``, x ``(B, d)`` -> ``(B,)``."""
    r2 = jnp.sum(W * W, axis=-1)
    z = (x @ W.T) / jnp.sqrt(r2)[None, :]
    return model.student(z) @ r2


def teacher_output(model: Model, theta, a, x):
    """``f*(x) = sum_p a_p sigma*(<x, theta_p>)``.  ``theta=None`` means canonical."""
    u = x[..., : model.P] if theta is None else x @ theta.T
    return model.teacher(u) @ a


def per_sample_grad_coeffs(model: Model, W, r2, xW, y):
    """Scalars of the SPEC gradient ``grad_{w_i} (1/2) e^2 = alpha_i w_i + gamma_i x``.

    With ``z_i = <x, w_i>/r_i``, ``e = f(x) - y``:
    ``alpha_i = e (2 sigma(z_i) - z_i sigma'(z_i))``, ``gamma_i = e r_i sigma'(z_i)``.

    Args:
        W: unused (kept for signature symmetry); r2 ``(m,)``; xW ``(B, m)`` ``<x_b, w_i>``;
        y ``(B,)`` teacher labels.
    Returns:
        ``alpha`` ``(B, m)``, ``gamma`` ``(B, m)``, ``e`` ``(B,)``.
    """
    del W
    r = jnp.sqrt(r2)
    z = xW / r[None, :]
    s, ds = model.student.value_and_derivative(z)
    e = s @ r2 - y
    alpha = e[:, None] * (2.0 * s - z * ds)
    gamma = e[:, None] * (r[None, :] * ds)
    return alpha, gamma, e
