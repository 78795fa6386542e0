"""The multi-index model: teacher, 2-homogeneous student, exact loss, observables.

Notation (docs/model.md §1), one replica:

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

import numpy as np

from . import twofloat as tf
from .hermite import Activation
from .lazy import lazy

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = [
    "Model",
    "power_law_coefficients",
    "teacher_coefficients",
    "OBSERVABLES",
    "OPTIONAL_OBSERVABLES",
    "teacher_basis",
    "init_student",
    "gram_observables",
    "direction_observables",
    "observables",
    "population_loss",
    "population_loss_accurate",
    "population_loss_float64",
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


def power_law_coefficients(beta, P: int) -> np.ndarray:
    """``a_p = p^-beta / sqrt(sum_q q^-2beta)``, ``p = 1..P``, so that ``sum_p a_p^2 = 1``.

    The one home of the power-law teacher (NumPy, float64: the coefficients are computed
    on the host and cast to the run's dtype on the device).

    Args:
        beta: scalar, or ``(R,)`` for one teacher per replica.
        P: number of directions.
    Returns:
        ``(P,)``, or ``(R, P)`` for an array ``beta``.
    """
    p = np.arange(1, P + 1, dtype=np.float64)
    a = p ** (-np.asarray(beta, np.float64)[..., None])
    return a / np.sqrt(np.sum(a * a, axis=-1, keepdims=True))


def teacher_coefficients(teacher, betas) -> np.ndarray:
    """``(R, P)`` float64 teacher coefficients of a ``[teacher]`` table, one row per replica:
    its explicit ``a`` repeated, or the power law :func:`power_law_coefficients` of each
    replica's ``beta`` (``betas``, ``(R,)``)."""
    betas = np.asarray(betas, np.float64).reshape(-1)
    if teacher.get("a") is not None:
        return np.tile(np.asarray(teacher["a"], np.float64), (betas.size, 1))
    return power_law_coefficients(betas, int(teacher["P"]))


def teacher_basis(key, P: int, d: int, dtype=np.float32):
    """A Haar-random orthonormal ``(P, d)`` frame (QR of a Gaussian, signs fixed)."""
    g = jax.random.normal(key, (d, P), dtype)
    q, r = jnp.linalg.qr(g)
    return (q * jnp.sign(jnp.diagonal(r))[None, :]).T


def init_student(key, m: int, d: int, init_scale, dtype=np.float32):
    """``w_i ~ N(0, (s^2/d) I_d)`` i.i.d.; returns ``W`` ``(m, d)``."""
    return jax.random.normal(key, (m, d), dtype) * (jnp.asarray(init_scale, dtype) / jnp.sqrt(jnp.asarray(d, dtype)))


def _cosines(WW, WT):
    r2 = jnp.diagonal(WW)
    r = jnp.sqrt(jnp.maximum(r2, _TINY))
    G = WW / (r[:, None] * r[None, :])
    M = WT / r[:, None]
    return r2, G, M


def population_loss(model: Model, WW, WT, a):
    """Exact population MSE (docs/model.md §1), from the Gram blocks.

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


#: The observables logged at every log point (:func:`gram_observables`): name -> the names
#: of its dimensions after ``(replica, step)``.  ``overlap`` is optional (``log.overlap``).
OBSERVABLES: dict[str, tuple[str, ...]] = {
    "loss": (),
    "alignment": ("direction",),
    "skill": ("direction",),
    "norm2": ("neuron",),
    "overlap": ("neuron", "direction"),
}
OPTIONAL_OBSERVABLES = ("overlap",)


def direction_observables(model: Model, r2, M, a) -> dict:
    """The per-direction observables from the norms ``r2`` ``(m,)`` and cosines ``M`` ``(m, P)``:
    ``alignment`` ``(P,)`` ``max_i M_ip^2`` and ``skill`` ``(P,)`` ``sum_i r2_i K_st(M_ip) / (a_p K_tt(1))``."""
    one = jnp.asarray(1.0, a.dtype)
    return {"alignment": jnp.max(M * M, axis=0), "skill": (r2 @ model.K_st(M)) / (a * model.K_tt(one))}


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
    out = {"loss": population_loss(model, WW, WT, a), **direction_observables(model, r2, M, a), "norm2": r2}
    if with_overlap:
        out["overlap"] = M
    return out


def _horner_dw(coeffs, x: tf.DW) -> tf.DW:
    """``sum_j coeffs[j] x^j`` in double-word arithmetic (coefficients kept to ~48 bits)."""
    dt = x.hi.dtype
    out = tf.dw(float(coeffs[-1]), dt)
    out = tf.DW(jnp.broadcast_to(out.hi, x.hi.shape), jnp.broadcast_to(out.lo, x.hi.shape))
    for c in reversed(coeffs[:-1]):
        out = tf.add(tf.mul(out, x), tf.dw(float(c), dt))
    return out


def population_loss_accurate(model: Model, X, a, theta=None):
    """The exact population MSE of students ``X`` ``(m, n)``, without cancellation error.

    Same value as :func:`population_loss` of ``X X^T`` and ``X theta^T``, but evaluated in
    double-word arithmetic from the vectors themselves (:mod:`twofloat`): the Gram blocks to
    ``~2^-40`` of ``|x_i| |x_j|`` by an error-free split, then cosines, kernels and the sum of
    ``m^2 + m P`` terms in double-word.  In float32 the plain form keeps only ``~1e-7`` of the
    ``O(1)`` terms that cancel to the loss, so its relative error grows as the loss falls; this
    one stays near float32 rounding (errors of both: benchmarks/NOTES.md, "The float32 loss
    near zero").  The dynamics never use it: it is the logged loss of a run below float64 on
    a backend without float64 (:func:`observables`).

    Args:
        X: ``(m, n)`` students in coordinates where ``theta`` is orthonormal.
        a: ``(P,)``.  theta: ``(P, n)``, or ``None`` when the first ``P`` coordinates are
            the teacher directions (``X theta^T = X[:, :P]``, exact).
    Returns:
        scalar MSE in ``X``'s float type.
    """
    dt = X.dtype
    P = a.shape[-1]
    WW = tf.gram(X)
    WT = tf.dw(X[:, :P]) if theta is None else tf.gram(X, theta.astype(dt))
    r2 = tf.DW(jnp.diagonal(WW.hi), jnp.diagonal(WW.lo))
    tiny = r2.hi < _TINY
    r2 = tf.DW(jnp.where(tiny, jnp.asarray(_TINY, dt), r2.hi), jnp.where(tiny, 0.0, r2.lo))
    r = tf.sqrt(r2)

    def col(x: tf.DW):
        return tf.DW(x.hi[:, None], x.lo[:, None])

    def row(x: tf.DW):
        return tf.DW(x.hi[None, :], x.lo[None, :])

    # Barriers between the stages: XLA would otherwise fuse the whole double-word expression
    # DAG into one loop and recompute shared subexpressions.
    WW, WT, r2, r = jax.lax.optimization_barrier((WW, WT, r2, r))
    G = tf.div(WW, tf.mul(col(r), row(r)))
    eye = jnp.eye(G.hi.shape[0], dtype=bool)
    G = tf.DW(jnp.where(eye, 1.0, G.hi), jnp.where(eye, 0.0, G.lo))  # K(G_ii) = K(1) exactly
    M = tf.div(WT, col(r))
    G, M = jax.lax.optimization_barrier((G, M))
    s, t = model.student, model.teacher
    KG = _horner_dw(s.cross_coeffs(), G)
    KM = _horner_dw(s.cross_coeffs(t), M)
    KG, KM = jax.lax.optimization_barrier((KG, KM))
    ad = tf.dw(a.astype(dt))
    ss = tf.mul(tf.mul(col(r2), row(r2)), KG)  # (m, m)
    st = tf.mul(tf.mul(col(r2), row(ad)), KM)  # (m, P)
    st = tf.DW(-2.0 * st.hi, -2.0 * st.lo)  # exact
    terms = tf.DW(
        jnp.concatenate([ss.hi.reshape(-1), st.hi.reshape(-1)]), jnp.concatenate([ss.lo.reshape(-1), st.lo.reshape(-1)])
    )
    terms = jax.lax.optimization_barrier(terms)
    sum_a2 = tf.total(tf.mul(ad, ad))
    sum_a = tf.total(ad)
    ctt = t.cross_coeffs()
    k1, k0 = float(sum(ctt)), float(ctt[0])  # K_tt(1), K_tt(0)
    tt = tf.add(tf.mul(tf.dw(k1, dt), sum_a2), tf.mul(tf.dw(k0, dt), tf.add(tf.mul(sum_a, sum_a), tf.DW(-sum_a2.hi, -sum_a2.lo))))
    return tf.value(tf.add(tf.total(terms), tt))


def population_loss_float64(model: Model, X, a, theta=None):
    """:func:`population_loss` of students ``X`` ``(m, n)`` of a lower float type, evaluated in
    float64 and rounded back to ``X``'s type (``theta`` as in :func:`population_loss_accurate`).

    JAX's x64 mode is switched on for this expression only (at trace time; nothing global
    changes), so a float32 run logs the loss exactly as a float64 run does, from the same
    float32 coordinates: ``~1e-16`` of the ``O(1)`` terms that cancel, below what
    :func:`population_loss_accurate` leaves, at one float64 Gram product instead of its 25
    slice products and double-word elementwise work (7.2 ms against 64 ms at ``m = 256``,
    benchmarks/NOTES.md)."""
    with jax.enable_x64(True):
        X64, a64 = X.astype(jnp.float64), a.astype(jnp.float64)
        WT = X64[:, : a.shape[-1]] if theta is None else X64 @ theta.astype(jnp.float64).T
        return population_loss(model, X64 @ X64.T, WT, a64).astype(X.dtype)


def has_float64() -> bool:
    """Whether the default backend computes in float64 (TPUs do not)."""
    return jax.default_backend() != "tpu"


def observables(model: Model, X, a, theta=None, with_overlap: bool = False):
    """:func:`gram_observables` of students ``X`` ``(m, n)`` (``theta`` as in
    :func:`population_loss_accurate`), with the loss free of cancellation error in every float
    type: below float64 it is evaluated in float64 (:func:`population_loss_float64`), or in
    double-word arithmetic on a backend without float64 (:func:`population_loss_accurate`);
    in float64 the plain form (its rounding, ``~1e-16`` of the ``O(1)`` terms, is already
    negligible)."""
    P = a.shape[-1]
    WT = X[:, :P] if theta is None else X @ theta.T
    out = gram_observables(model, X @ X.T, WT, a, with_overlap)
    if jnp.finfo(X.dtype).nmant < jnp.finfo(jnp.float64).nmant:
        exact = population_loss_float64 if has_float64() else population_loss_accurate
        out["loss"] = exact(model, X, a, theta)
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
    """Scalars of the gradient ``grad_{w_i} (1/2) e^2 = alpha_i w_i + gamma_i x``.

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
