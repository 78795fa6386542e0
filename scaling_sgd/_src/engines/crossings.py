"""First upward zero crossings of an event function along a solver's steps.

A solver that keeps ``y`` and ``F(y)`` at both ends of every step (first-same-as-last, as
:mod:`.rkc` does) knows each component of an event function ``g(y)`` ``(P,)`` and its time
derivative ``dg/dt = g'(y) F(y)`` (one Jacobian-vector product of ``g``) at both ends.  The
first time ``g_p`` reaches ``0`` is then located inside the step where its sign changes, as
the root of the cubic Hermite interpolant of ``g_p`` on that step::

    g(t0 + th h) ~ (2 th^3 - 3 th^2 + 1) g0 + (th^3 - 2 th^2 + th) h g0'
                   + (3 th^2 - 2 th^3) g1 + (th^3 - th^2) h g1'

whose error is ``O(h^4)`` in ``g``, below the ``O(h^3)`` local error of a second-order step.
Steps are far finer than log points, so the crossing no longer depends on the log grid.
The cost per step is one evaluation of ``g`` and its derivative, ``O(size of y)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..lazy import lazy

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = ["Crossings", "init", "update", "hermite_root"]

BISECTIONS = 40  # 2^-40 of a step: below float64's resolution of the time itself


class Crossings(NamedTuple):
    """``g`` ``(P,)`` and ``dg`` ``(P,)``: the event and its time derivative at the
    solver's current ``y``; ``t`` ``(P,)``: the first time ``g_p >= 0`` (``inf`` until then)."""

    g: Any
    dg: Any
    t: Any


def _value_and_rate(event: Callable, y, f):
    return jax.jvp(event, (y,), (f,))


def init(event: Callable, y0, f0, t0) -> Crossings:
    """Crossings at the start: a component already ``>= 0`` crossed at ``t0``."""
    g, dg = _value_and_rate(event, y0, f0)
    return Crossings(g, dg, jnp.where(g >= 0, t0, jnp.inf).astype(y0.dtype))


def hermite_root(g0, dg0, g1, dg1, h):
    """``th`` in ``[0, 1]`` where the cubic Hermite interpolant of ``(g0, h dg0)`` at 0 and
    ``(g1, h dg1)`` at 1 reaches 0, by bisection between a point below and one at or above
    (``g0 < 0 <= g1`` elementwise; any root of the cubic in between when it has several)."""

    def p(th):
        th2, th3 = th * th, th * th * th
        return (2 * th3 - 3 * th2 + 1) * g0 + (th3 - 2 * th2 + th) * h * dg0 + (3 * th2 - 2 * th3) * g1 + (th3 - th2) * h * dg1

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        below = p(mid) < 0
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECTIONS, body, (jnp.zeros_like(g0), jnp.ones_like(g0)))
    return 0.5 * (lo + hi)


def update(event: Callable, c: Crossings, t0, h, y1, f1) -> Crossings:
    """Crossings after a step from ``t0`` to ``t0 + h`` that ends at ``y1`` with
    ``F(y1) = f1`` (the caller keeps the old value for a rejected step)."""
    g1, dg1 = _value_and_rate(event, y1, f1)
    new = jnp.isinf(c.t) & (c.g < 0) & (g1 >= 0)
    th = hermite_root(c.g, c.dg, g1, dg1, h)
    return Crossings(g1, dg1, jnp.where(new, t0 + th * h, c.t))
