"""Theory of Ren, Nichani, Wu & Lee (2025) as used for overlays (docs/model.md §3).

Every formula here is checked numerically in the tests before it is drawn.
"""

from __future__ import annotations

import numpy as np

from scaling_sgd import power_law_coefficients

from .emergence import loss_fit_window
from .escape import (
    assign_neurons,
    escape_time_small_m0,
    flow_escape_time,
    kernel_coeffs,
    pair_escape_times,
    predicted_emergence_steps,
    single_direction_flow,
    typical_initial_overlap,
)
from .fit import fit_from_draws
from .frontier import lower_envelope
from .race import RacePrediction, race, race_from_config

__all__ = [
    "single_direction_flow",
    "escape_time_small_m0",
    "power_law_coefficients",
    "kernel_coeffs",
    "flow_escape_time",
    "typical_initial_overlap",
    "predicted_emergence_steps",
    "additive_loss",
    "additive_emergence_times",
    "additive_loss_exponent",
    "additive_frontier_slope",
    "assign_neurons",
    "pair_escape_times",
    "race",
    "race_from_config",
    "RacePrediction",
    "exponents",
    "exponent_reasons",
    "exponent",
    "NO_POWER_LAW",
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


def additive_loss(step, T, a, K1: float = 1.0):
    """Additive (decoupled) model ``MSE(t) = sum_p a_p^2 K(1) 1{t < T_p}``.

    Args: ``step`` ``(N,)``; ``T`` ``(..., P)`` emergence steps; ``a`` ``(..., P)``.
    Returns: ``(..., N)``.
    """
    step = np.asarray(step, np.float64)
    T = np.asarray(T, np.float64)
    a2 = np.asarray(a, np.float64) ** 2
    return K1 * np.sum(a2[..., None, :] * (step[:, None] < T[..., None, :]), axis=-1)


# -- the additive model with log-normal scatter: the finite-P reference ----------------
def additive_emergence_times(beta: float, P: int, T1: float, sigma: float, n_seeds: int = 200, seed: int = 0):
    """Synthetic emergence times of the additive model, ``T_p = T_1 p^beta exp(sigma xi_p)``
    with ``xi_p ~ N(0, 1)`` i.i.d. over directions and seeds (the measured scatter of the
    simulations is log-normal with ``sigma ~ 0.5``, :func:`.emergence.log_scatter`).

    Returns ``(T (n_seeds, P), a (P,))`` with ``a`` the power-law teacher.
    """
    rng = np.random.default_rng(seed)
    p = np.arange(1, P + 1, dtype=np.float64)
    T = T1 * p[None, :] ** beta * np.exp(sigma * rng.standard_normal((n_seeds, P)))
    return T, power_law_coefficients(beta, P)


def additive_loss_exponent(beta: float, P: int, T1: float, sigma: float, n_seeds: int = 200, hi_rank: int | None = None) -> float:
    """Loss exponent of the additive model ``mean_seeds sum_p a_p^2 1{t < T_p}`` with the
    times of :func:`additive_emergence_times`, fitted like a simulation: over the loss fit
    window of their median emergence steps (:func:`.emergence.loss_fit_window`, the 2nd to
    the ``max(P // 10, 4)``-th, or to the ``hi_rank``-th).

    At large P it tends to ``-(2 beta - 1)/beta``; at P ~ 10 it is steeper whatever beta
    (docs/model.md §3, "Where the formulas hold").
    """
    T, a = additive_emergence_times(beta, P, T1, sigma, n_seeds)
    lo, hi = loss_fit_window(np.median(T, axis=0), hi_rank=hi_rank)
    t = np.geomspace(lo, hi, 60)
    return fit_from_draws(t, additive_loss(t, T, a).mean(axis=0)).slope


def additive_frontier_slope(beta: float, P: int, widths, T1, sigma: float, loss_window, n_seeds: int = 100) -> float:
    """Compute-frontier slope of the additive model.

    A width-``m`` student learns the top ``m`` directions at the times of
    :func:`additive_emergence_times` and keeps ``sum_{p>m} a_p^2``; the seed-mean loss
    against ``C = m t`` is enveloped over ``widths`` (:func:`.frontier.lower_envelope`,
    each curve held at its floor after its end) and fitted where the envelope lies inside
    ``loss_window = (lo, hi)``, as for the simulations.  ``nan`` with fewer than 4 points.

    ``T1`` is the first emergence time: a scalar (the same for every width), or one per
    width (shape ``(len(widths),)``), e.g. measured, since in a simulation a wider student
    has a better-aligned best neuron and starts learning earlier.
    """
    T, a = additive_emergence_times(beta, P, 1.0, sigma, n_seeds)
    T1s = np.broadcast_to(np.asarray(T1, np.float64), (len(widths),))
    t = np.geomspace(T1s.min() / 10, T.max() * T1s.max() * 3, 300)
    curves = []
    for m, t1 in zip((int(w) for w in widths), T1s):
        floor = np.sum(a[m:] ** 2)
        curves.append((m * t, floor + additive_loss(t, t1 * T[:, :m], a[:m]).mean(axis=0)))
    grid = np.geomspace(min(widths) * t[0], max(widths) * t[-1], 400)
    _, _, env = lower_envelope(curves, grid, hold_last=True)
    sel = np.isfinite(env) & (env >= loss_window[0]) & (env <= loss_window[1])
    return fit_from_draws(grid[sel], env[sel]).slope if sel.sum() >= 4 else float("nan")


# The power laws of the loss, the width plateau and the compute frontier need beta > 1/2:
# for beta < 1/2 the normalised a_p^2 ~ p^(-2 beta) / P^(1 - 2 beta) make the loss after p
# directions ~ 1 - (p/P)^(1 - 2 beta) (logarithmic at beta = 1/2), not a power law of the
# step, so no exponent is predicted (docs/model.md §3).
NO_POWER_LAW = "no power law for beta <= 1/2 (the loss ~ 1 - (p/P)^(1-2 beta); the paper's corollary needs beta > 1/2)"
_NEEDS_BETA_ABOVE_HALF = ("loss_vs_step", "plateau_vs_m", "compute_frontier")


def exponents(beta: float, k: int | None) -> dict:
    """Theory exponents of Ren, Nichani, Wu & Lee (2025) for ``a_p ~ p^-beta``.

    Every ``beta`` is accepted.  Where the paper predicts no power law the value is
    ``None``, never a number: ``loss_vs_step``, ``plateau_vs_m`` and ``compute_frontier``
    for ``beta <= 1/2``, ``emergence_time_vs_d`` without an information exponent ``k``.
    :func:`exponent_reasons` says why for each ``None``.
    """
    b = float(beta)
    power = b > 0.5
    return {
        "emergence_time_vs_p": b,
        "emergence_time_vs_a": -1.0,
        "loss_vs_step": -(2.0 * b - 1.0) / b if power else None,
        "plateau_vs_m": 1.0 - 2.0 * b if power else None,
        "emergence_time_vs_d": (k / 2.0 - 1.0) if k else None,
        "compute_frontier": (1.0 - 2.0 * b) / (1.0 + b) if power else None,
    }


def exponent_reasons(beta: float, k: int | None) -> dict:
    """``{name: reason}`` for every exponent that :func:`exponents` returns as ``None``."""
    out = {}
    if not float(beta) > 0.5:
        out.update(dict.fromkeys(_NEEDS_BETA_ABOVE_HALF, NO_POWER_LAW))
    if not k:
        out["emergence_time_vs_d"] = "no information exponent: the activation has no nonzero Hermite coefficient"
    return out


def exponent(name: str, beta: float, k: int | None = None) -> tuple[float | None, str]:
    """One theory exponent and, when there is none, the reason (``(None, reason)``)."""
    return exponents(beta, k)[name], exponent_reasons(beta, k).get(name, "")
