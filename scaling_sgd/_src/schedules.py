"""Learning-rate schedules: the factor ``lr_t / lr`` and its integral, side by side.

A schedule is a function ``s(t, T)`` of the step ``t`` (0-based) and the run length ``T``
multiplying the base learning rate.  The ``sgd`` and ``reduced`` engines use the factor
step by step (:func:`factor`); the ``flow`` engine, the ``lr -> 0`` limit, needs the time
``tau(t) = lr * int_0^t s(u, T) du`` that SGD has travelled after ``t`` steps
(:func:`tau_over_lr`), the continuum limit of ``sum_{u < t} lr_u``.  Each schedule's closed-form
integral sits next to its factor so the two cannot drift apart (a test compares them).

    name           s(t, T)                          int_0^t s(u, T) du
    constant       1                                t
    cosine         (1 + cos(pi t/T)) / 2            t/2 + T/(2 pi) sin(pi min(t/T, 1))
    linear         max(1 - t/T, 0)                  t - t^2/(2T)  (t < T),  T/2 after
    inverse_time   1 / (1 + t/c)                    c log(1 + t/c)
    inverse_sqrt   (1 + t/c)^(-1/2)                 2 c (sqrt(1 + t/c) - 1)

with ``c = n0`` (``train.schedule_n0``) when it is positive, else ``max(T/100, 1)``.

``inverse_sqrt`` is the step size that follows the task being learned (Ren, Nichani, Wu &
Lee 2025, per-task step size ``eta_p ~ a_p / d^(k/2)``): with ``a_p ~ p^-beta`` and the
``p(n) ~ n^(1/(2 beta))``-th direction being learned after ``n`` samples,
``eta(n) ~ a_p(n) ~ n^(-1/2)`` for every ``beta``; ``n0`` is the time of the first emergence.
"""

from __future__ import annotations

import math

import numpy as np

from .lazy import lazy

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = ["SCHEDULES", "factor", "tau_over_lr", "step_at"]

SCHEDULES = ("constant", "cosine", "linear", "inverse_time", "inverse_sqrt")


def _check(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; accepted: {', '.join(SCHEDULES)}")


def factor(schedule: str, t, T, n0: float = 0.0):
    """``s(t, T)``: multiplier of the base learning rate at step ``t`` of ``T`` (JAX,
    float32, traced-friendly; ``schedule`` and ``n0`` are static)."""
    _check(schedule)
    t = jnp.asarray(t, jnp.float32)
    T = jnp.maximum(jnp.asarray(T, jnp.float32), 1.0)
    if schedule == "constant":
        return jnp.ones_like(t)
    if schedule == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t / T, 1.0)))
    if schedule == "linear":
        return jnp.maximum(1.0 - t / T, 0.0)
    c = jnp.asarray(n0, jnp.float32) if n0 > 0 else jnp.maximum(T / 100.0, 1.0)
    if schedule == "inverse_time":
        return 1.0 / (1.0 + t / c)
    return jax.lax.rsqrt(1.0 + t / c)  # inverse_sqrt


def tau_over_lr(schedule: str, t, T, n0: float = 0.0):
    """``int_0^t s(u, T) du``: ``tau / lr`` after ``t`` SGD steps of a run of ``T`` (NumPy,
    float64)."""
    _check(schedule)
    t = np.asarray(t, np.float64)
    T = max(float(T), 1.0)
    if schedule == "constant":
        return t
    if schedule == "cosine":
        return 0.5 * t + T / (2.0 * math.pi) * np.sin(math.pi * np.minimum(t / T, 1.0))
    if schedule == "linear":
        return np.where(t < T, t - t * t / (2.0 * T), T / 2.0)
    c = float(n0) if n0 > 0 else max(T / 100.0, 1.0)
    if schedule == "inverse_time":
        return c * np.log1p(t / c)
    return 2.0 * c * (np.sqrt(1.0 + t / c) - 1.0)  # inverse_sqrt


def step_at(schedule: str, tau, T, n0: float = 0.0, iters: int = 80):
    """The inverse of :func:`tau_over_lr`: the step ``t`` in ``[0, T]`` with
    ``tau_over_lr(t) = tau`` (NumPy, float64; ``inf`` stays ``inf``, a ``tau`` past the
    run's end gives ``T``).  Bisection, ``2^-iters`` of ``T``: the schedules are increasing
    on ``[0, T]``."""
    tau = np.asarray(tau, np.float64)
    if schedule == "constant":
        return tau.copy()
    lo, hi = np.zeros_like(tau), np.full_like(tau, max(float(T), 1.0))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = tau_over_lr(schedule, mid, T, n0) < tau
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.where(np.isinf(tau), tau, 0.5 * (lo + hi))
