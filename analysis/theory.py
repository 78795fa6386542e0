"""Theory of Ren, Nichani, Wu & Lee (2025) as used for overlays (SPEC section 3).

Every formula here is checked numerically in the tests before it is drawn.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

__all__ = [
    "single_direction_flow",
    "escape_time_small_m0",
    "power_law_coefficients",
    "kernel_coeffs",
    "flow_escape_time",
    "typical_initial_overlap",
    "predicted_emergence_steps",
    "additive_loss",
    "exponents",
    "FORMULAS",
]

# Labels for overlays and summary.json: every theory number is shown with its formula.
FORMULAS = {
    "emergence_time_vs_p": "T_p ~ p^beta  (slope beta)",
    "emergence_time_vs_a": "T_p ~ a_p^-1 lr^-1 d^(k/2-1)  (slope -1)",
    "loss_vs_step": "MSE(t) ~ t^(-(2 beta - 1)/beta)",
    "plateau_vs_m": "MSE_inf ~ m^(1 - 2 beta)",
    "emergence_time_vs_d": "T_p ~ d^(k/2 - 1) at fixed lr",
    "compute_frontier": "min_m MSE(C = m t) ~ C^((1 - 2 beta)/(1 + beta))",
    "flow_escape": "tau_p = int_{m0}^{m*} dm / (a_p K'(m) (1 - m^2)) with r2 from dq/dtau = 4K(1) - 4 a_p K(m) q, q = 1/r2; T_p = tau_p / lr",
    "additive_model": "MSE(t) = sum_p a_p^2 K(1) 1{t < T_p}",
}


def escape_time_small_m0(m0, a, k: int = 4, c_k: float = 1.0):
    """Flow escape time ``tau = m0^-(k-2) / (k (k-2) c_k^2 a)`` (``1/(8 a m0^2)`` for h4).

    The blow-up time of ``dm/dtau = k c_k^2 a m^(k-1)``, the small-``m`` limit of the
    alignment equation; valid for ``k > 2`` and small ``m0``.
    """
    if k <= 2:
        raise ValueError("the escape-time formula needs information exponent k > 2")
    m0 = np.abs(np.asarray(m0, np.float64))
    return m0 ** (2 - k) / (k * (k - 2) * c_k**2 * np.asarray(a, np.float64))


def single_direction_flow(m0, r2_0, a, k: int = 4, c_k: float = 1.0, threshold: float = 0.5, tau_max: float = 1e9):
    """Exact time at which one neuron learning one direction reaches ``skill = threshold``.

    Population gradient flow of ``(1/2) MSE`` for student = teacher = ``c_k h_k``, with
    ``K(rho) = c_k^2 rho^k``, cosine ``m`` and squared norm ``r2``:

        dm/dtau  = a K'(m) (1 - m^2)
        dr2/dtau = -4 r2 (r2 K(1) - a K(m))
        skill    = r2 K(m) / (a K(1))

    Args: scalars or arrays ``m0, r2_0, a`` (broadcast).
    Returns: ``tau`` at the crossing (``inf`` if not reached by ``tau_max``).
    """
    m0, r2_0, a = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (m0, r2_0, a)))
    out = np.empty(m0.shape)
    K1 = c_k**2
    for idx in np.ndindex(m0.shape):
        mm, rr, aa = abs(float(m0[idx])), float(r2_0[idx]), float(a[idx])

        def rhs(_, y, aa=aa):
            m, r2 = y
            K = c_k**2 * m**k
            dK = k * c_k**2 * m ** (k - 1)
            return [aa * dK * (1 - m * m), -4.0 * r2 * (r2 * K1 - aa * K)]

        def hit(_, y, aa=aa):
            return y[1] * c_k**2 * y[0] ** k / (aa * K1) - threshold

        hit.terminal, hit.direction = True, 1
        sol = solve_ivp(rhs, (0.0, tau_max), [mm, rr], method="LSODA", events=hit, rtol=1e-10, atol=1e-14)
        out[idx] = sol.t_events[0][0] if sol.t_events[0].size else np.inf
    return out


# -- teacher and activation ----------------------------------------------------------
def power_law_coefficients(beta, P: int):
    """``a_p = p^-beta / sqrt(sum_q q^-2beta)``, ``p = 1..P``; ``beta`` scalar or ``(R,)``
    (then ``(R, P)``)."""
    p = np.arange(1, P + 1, dtype=np.float64)
    b = np.asarray(beta, np.float64)
    a = p ** (-b[..., None])
    return a / np.sqrt(np.sum(a * a, axis=-1, keepdims=True))


def kernel_coeffs(activation_spec, degree: int = 12) -> np.ndarray:
    """Hermite coefficients ``c_j`` of an activation as written in a resolved config
    (``"h4"``, ``"relu"``, ``{"4": 1.0}``, ...): ``(J+1,)`` float64."""
    from scaling_sgd._src.hermite import activation

    return np.asarray(activation(activation_spec, degree).coeffs, np.float64)


def _K(c2, m):
    """``K(m) = sum_j c_j^2 m^j`` and ``K'(m)`` for squared coefficients ``c2``."""
    K = np.polynomial.polynomial.polyval(m, c2)
    dK = np.polynomial.polynomial.polyval(m, np.arange(1, c2.size) * c2[1:]) if c2.size > 1 else np.zeros_like(m)
    return K, dK


# -- the exact single-direction flow -------------------------------------------------
def flow_escape_time(m0, r2_0, a, coeffs=(0, 0, 0, 0, 1.0), threshold: float = 0.5, observable: str = "skill", n: int = 20001):
    """Exact flow time for one neuron learning one direction to reach ``threshold``.

    Population gradient flow of ``(1/2) MSE`` for student = teacher = ``sigma`` with
    ``K(m) = sum_j c_j^2 m^j``, cosine ``m`` and squared norm ``r2``::

        dm/dtau  = a K'(m) (1 - m^2)             (independent of r2: 2-homogeneity)
        dq/dtau  = 4 K(1) - 4 a K(m) q,   q = 1/r2   (the r2 equation is Bernoulli)

    so, with ``x = log(m^2 / (1 - m^2))`` as the integration variable (smooth on all of
    ``(0, 1)``; ``dm/dx = m (1 - m^2) / 2``)::

        tau(x) = int dx m / (2 a K'(m)),     Phi(x) = 4 a int K dtau = int dx 2 m K / K',
        q(x)   = exp(-Phi) [q0 + 4 K(1) int exp(Phi) dtau].

    For ``sigma = h_k``: ``tau -> m0^-(k-2) / (k (k-2) c_k^2 a)`` as ``m0 -> 0`` and
    ``exp(Phi) = ((1 - m0^2)/(1 - m^2))^(2/k)``.  The integrals are cumulative trapezoids
    on ``n`` points (relative error ~1e-6; checked against an ODE solve in the tests).

    Args:
        m0, r2_0, a: initial cosine (``|m0|`` is used: for even ``k`` the sign does not
            matter), initial squared norm, teacher coefficient; broadcast together.
        coeffs: Hermite coefficients of ``sigma``.
        threshold, observable: crossing of ``skill = r2 K(m) / (a K(1))`` or of
            ``alignment = m^2``.
    Returns:
        ``tau`` (``inf`` when never reached or ``m0 = 0``), the broadcast shape.
    """
    m0, r2_0, a = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (m0, r2_0, a)))
    shape = m0.shape
    m0, r2_0, a = (v.reshape(-1, 1) for v in (np.abs(m0), r2_0, a))
    c2 = np.asarray(coeffs, np.float64) ** 2
    K1 = float(c2.sum())
    with np.errstate(divide="ignore"):
        x0 = np.log(m0**2) - np.log1p(-(m0**2))
    if observable == "alignment":
        x1 = np.full_like(x0, np.log(threshold) - np.log1p(-threshold) if threshold < 1 else np.inf)
    else:
        # far enough for r2 to grow to its fixed point after alignment (tau grows ~linearly in x there)
        x1 = np.maximum(x0, 0.0) + 60.0 + 4.0 * np.abs(np.log(np.maximum(a * r2_0, 1e-300)))
    bad = ~np.isfinite(x0) | ~(x1 > x0) | (a <= 0)
    x0 = np.where(bad, 0.0, x0)
    x1 = np.where(bad, 1.0, np.where(np.isfinite(x1), x1, x0 + 1.0))
    x = x0 + (x1 - x0) * np.linspace(0.0, 1.0, n)[None, :]
    m = np.sqrt(1.0 / (1.0 + np.exp(-x)))
    K, dK = _K(c2, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        dtau = m / (2.0 * a * dK)
        dphi = 2.0 * m * K / dK
    h = np.diff(x, axis=1)

    def cumtrapz(f):
        return np.concatenate([np.zeros((f.shape[0], 1)), np.cumsum(0.5 * h * (f[:, 1:] + f[:, :-1]), axis=1)], axis=1)

    tau = cumtrapz(dtau)
    out = np.full(m0.shape[0], np.inf)
    if observable == "alignment":
        out = np.where(bad[:, 0] | (threshold >= 1), np.inf, tau[:, -1])
        return out.reshape(shape)
    phi = cumtrapz(dphi)
    # exp(Phi) can be huge after alignment; q = exp(-Phi) q0 + 4 K1 int exp(Phi - Phi(x)) dtau
    # is evaluated with a running rescaling by working in logs of the cumulative integral.
    g = np.exp(phi - phi[:, -1:]) * dtau  # scaled integrand, <= dtau
    J = cumtrapz(g)  # = exp(-Phi(x1)) int exp(Phi) dtau
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        q = np.exp(-phi) / r2_0 + 4.0 * K1 * J * np.exp(phi[:, -1:] - phi)
        skill = K / (a * K1 * q)
    for e in range(m0.shape[0]):
        if bad[e, 0]:
            continue
        above = np.nonzero(skill[e] >= threshold)[0]
        if above.size == 0:
            continue
        j = above[0]
        if j == 0:
            out[e] = 0.0
            continue
        f = (threshold - skill[e, j - 1]) / (skill[e, j] - skill[e, j - 1])
        out[e] = tau[e, j - 1] + f * (tau[e, j] - tau[e, j - 1])
    return out.reshape(shape)


def typical_initial_overlap(d: int, m: int) -> float:
    """Median over initialisations of ``max_i |cos(w_i, theta)|`` for ``m`` isotropic
    neurons in dimension ``d`` (used when the cosines were not logged):
    ``Phi^-1((1 + 2^(-1/m)) / 2) / sqrt(d)`` to leading order in ``1/d``."""
    from scipy.stats import norm

    return float(norm.ppf((1.0 + 0.5 ** (1.0 / m)) / 2.0) / np.sqrt(d))


def predicted_emergence_steps(metrics: dict, coeffs, a, threshold: float = 0.5, observable: str = "skill", d=None):
    """Flow prediction of each replica's emergence step from its initial state.

    Per replica ``r`` and direction ``p``: the neuron with the largest initial cosine
    ``|M_ip(0)|`` (``overlap[r, 0]``; the largest *positive* one when ``sigma`` has odd
    components) is the one that learns ``theta_p`` (decoupled
    dynamics, paper Claim 1); its escape time :func:`flow_escape_time` with ``a = a_p``
    and its initial ``r2`` is converted to SGD steps by ``T = tau / lr_r``.

    Args:
        metrics: ``metrics.npz`` mapping (``overlap``, ``norm2``, ``lr`` used when present).
        coeffs: activation Hermite coefficients.  a: ``(R, P)`` teacher coefficients.
        d: input dimension, needed only when ``overlap`` is absent (then ``m0`` is
            :func:`typical_initial_overlap` for every replica).
    Returns:
        ``(T (R, P), source)`` with ``source`` a short description of the ``m0`` used.
    """
    a = np.asarray(a, np.float64)
    R, P = a.shape
    lr = np.asarray(metrics.get("lr", np.ones(R)), np.float64).reshape(R)
    norm2 = np.asarray(metrics["norm2"], np.float64)[:, 0, :]  # (R, m)
    if "overlap" in metrics:
        M0 = np.asarray(metrics["overlap"], np.float64)[:, 0]  # (R, m, P)
        if any(c != 0.0 for j, c in enumerate(coeffs) if j % 2 == 1):
            # With odd Hermite components the sign matters: for sigma = h_k with k odd,
            # dm/dtau = a k c_k^2 m^(k-1) (1 - m^2) >= 0, so a negative cosine creeps up to
            # 0 and never escapes.  Only positive initial cosines are candidates (exact for
            # odd h_k; for mixed parity the even part could rescue a negative one).
            M0 = np.maximum(M0, 0.0)
        else:
            M0 = np.abs(M0)
        best = np.argmax(M0, axis=1)  # (R, P)
        m0 = np.take_along_axis(M0, best[:, None, :], 1)[:, 0]
        r2 = np.take_along_axis(norm2, best, 1)
        source = "best neuron's initial cosine, overlap[:, 0]"
    else:
        if d is None:
            raise ValueError("overlap was not logged: pass d for the typical initial overlap")
        m0 = np.full((R, P), typical_initial_overlap(d, norm2.shape[1]))
        r2 = np.broadcast_to(np.median(norm2, axis=1)[:, None], (R, P))
        source = "typical max initial cosine over m neurons (overlap not logged)"
    tau = flow_escape_time(m0, r2, a, coeffs, threshold, observable)
    return tau / lr[:, None], source


def additive_loss(step, T, a, K1: float = 1.0):
    """Additive (decoupled) model ``MSE(t) = sum_p a_p^2 K(1) 1{t < T_p}``.

    Args: ``step`` ``(N,)``; ``T`` ``(..., P)`` emergence steps; ``a`` ``(..., P)``.
    Returns: ``(..., N)``.
    """
    step = np.asarray(step, np.float64)
    T = np.asarray(T, np.float64)
    a2 = np.asarray(a, np.float64) ** 2
    return K1 * np.sum(a2[..., None, :] * (step[:, None] < T[..., None, :]), axis=-1)


def exponents(beta: float, k: int | None) -> dict:
    """Theory exponents of Ren, Nichani, Wu & Lee (2025) for ``a_p ~ p^-beta`` (``beta > 1/2``)."""
    b = float(beta)
    return {
        "emergence_time_vs_p": b,
        "emergence_time_vs_a": -1.0,
        "loss_vs_step": -(2.0 * b - 1.0) / b if b > 0 else float("nan"),
        "plateau_vs_m": 1.0 - 2.0 * b,
        "emergence_time_vs_d": (k / 2.0 - 1.0) if k else float("nan"),
        "compute_frontier": (1.0 - 2.0 * b) / (1.0 + b),
    }
