"""Theory of Ren, Nichani, Wu & Lee (2025) as used for overlays (SPEC section 3).

Every formula here is checked numerically in the tests before it is drawn.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

__all__ = ["single_direction_flow", "escape_time_small_m0"]


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
