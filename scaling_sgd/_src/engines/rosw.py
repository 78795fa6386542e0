"""ROS2-W with one scalar per neuron: a Rosenbrock-W step whose matrix is diagonal.

ROS2 (Verwer, Spee, Blom & Hundsdorfer 1999), ``gamma = 1 + 1/sqrt(2)``::

    (I - gamma h J) k1 = F(y)
    (I - gamma h J) k2 = F(y + h k1) - 2 k1
    y+ = y + (3/2) h k1 + (1/2) h k2,      error estimate (1/2) h (k1 + k2)

is second order for *any* ``J`` (a W-method).  Here ``J_i = -max(alpha_i, 0) I`` for the
row ``c_i`` of neuron ``i``, with ``alpha_i`` a relaxation rate that the right-hand side
returns beside ``F`` (the ``flow`` engine's: ``A_i. r2 - B_i. a + r2_i K'(1)``, the rate at
which a learned neuron's ``P + m - 1`` tangent directions relax, ``4 a_p`` for ``h4``, the
stiffest modes of that flow).  The solve is a division; a step costs two evaluations of
``F``, none of a Jacobian or a spectral radius.  Where ``J`` misses the stiff modes (an
activation whose stiff block is not a multiple of the identity) the steps stay second order
but the step size collapses: benchmarks/NOTES.md, "Candidates".

First-same-as-last: ``F`` and ``alpha`` at the end of an accepted step start the next one,
and also give the event's rate there, so that emergence crossings are located between steps
(:mod:`.crossings`) at no extra evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ..lazy import lazy
from . import crossings

jax = lazy("jax")
jnp = lazy("jax.numpy")

__all__ = ["ROSWState", "init", "step", "done", "GAMMA"]

GAMMA = 1.0 + 1.0 / math.sqrt(2.0)


class ROSWState(NamedTuple):
    """Carry of the integrator, one replica (``y`` ``(m, n)``, a row per neuron).

    Attributes:
        t: ``()`` current time.
        y: ``(m, n)`` state at ``t``.
        f, alpha: ``F(y)`` ``(m, n)`` and the neurons' rates ``(m,)`` at ``y``.
        h: ``()`` step size to try next (before shortening to an output time).
        k: ``()`` int32, index of the next output time: ``ts[k-1] <= t < ts[k]``.
        n_steps, n_rejected, n_fevals: ``()`` int32 counters (attempts, rejections,
            evaluations of ``F``).
        failed: ``()`` bool, the step size collapsed, the state is not finite or the step
            budget ran out.
        cross: :class:`.crossings.Crossings` of the event function (``None`` without one).
    """

    t: Any
    y: Any
    f: Any
    alpha: Any
    h: Any
    k: Any
    n_steps: Any
    n_rejected: Any
    n_fevals: Any
    failed: Any
    cross: Any = None


def init(f_rate: Callable, y0, ts, event: Callable | None = None) -> ROSWState:
    """State at ``t = 0``; ``f_rate(y) = (F(y), alpha(y))``.  The first step is a hundredth
    of ``|y| / |F|``, at most the first output interval."""
    dt = y0.dtype
    ts = ts.astype(dt)
    f0, a0 = f_rate(y0)
    tiny = jnp.finfo(dt).tiny
    h0 = 0.01 * jnp.sqrt(jnp.sum(y0 * y0) / jnp.maximum(jnp.sum(f0 * f0), tiny))
    first = ts[jnp.argmax(ts > 0)]
    h0 = jnp.minimum(h0, jnp.where(first > 0, first, 1.0))
    i32 = jnp.int32
    return ROSWState(
        t=jnp.zeros((), dt),
        y=y0,
        f=f0,
        alpha=a0,
        h=h0,
        k=jnp.sum(ts <= 0).astype(i32),
        n_steps=jnp.zeros((), i32),
        n_rejected=jnp.zeros((), i32),
        n_fevals=jnp.ones((), i32),
        failed=jnp.asarray(False),
        cross=None if event is None else crossings.init(event, y0, f0, jnp.zeros((), dt)),
    )


def done(state: ROSWState, ts) -> jax.Array:
    """``True`` once every output time is reached or the solve failed."""
    return (state.k >= ts.shape[0]) | state.failed


def step(f_rate: Callable, state: ROSWState, ts, rtol, atol, max_steps, event: Callable | None = None) -> ROSWState:
    """One attempted step towards the next output time ``ts[k]`` (landing on it exactly).

    Step control as :class:`.flow_solvers.ROS2`: accept when the RMS of the error estimate
    over ``atol + rtol max(|y|, |y+|)`` is at most 1, next step ``h err^(-1/2)`` times 0.9
    within ``[0.2, 5]``.  A finished state is returned unchanged."""
    dt = state.y.dtype
    ts = ts.astype(dt)
    T = ts.shape[0]
    st = state
    target = ts[jnp.minimum(st.k, T - 1)]
    hits = st.h >= target - st.t
    h_try = jnp.where(hits, target - st.t, st.h)

    inv = 1.0 / (1.0 + GAMMA * h_try * jnp.maximum(st.alpha, 0.0))[:, None]
    k1 = inv * st.f
    f2, _ = f_rate(st.y + h_try * k1)
    k2 = inv * (f2 - 2.0 * k1)
    y_new = st.y + h_try * (1.5 * k1 + 0.5 * k2)
    f_new, a_new = f_rate(y_new)

    scale = atol + rtol * jnp.maximum(jnp.abs(st.y), jnp.abs(y_new))
    err = jnp.sqrt(jnp.mean((0.5 * h_try * (k1 + k2) / scale) ** 2))
    finite = jnp.isfinite(err) & jnp.all(jnp.isfinite(f_new))
    acc = finite & (err <= 1.0)
    fac = jnp.where(finite, jnp.clip(0.9 * jnp.maximum(err, 1e-10) ** -0.5, 0.2, 5.0), 0.2)
    # a step shortened to land on an output keeps the longer proposal it was cut from
    h_next = jnp.where(acc & hits, jnp.maximum(st.h, h_try * fac), h_try * fac)

    t_new = jnp.where(hits, target, st.t + h_try)
    k_new = jnp.where(acc & hits, jnp.sum(ts <= t_new).astype(jnp.int32), st.k)
    failed = (h_next < 1e-12 * jnp.maximum(jnp.abs(st.t), 1.0)) | (st.n_steps + 1 >= max_steps)
    cross = st.cross
    if event is not None:
        moved = crossings.update(event, st.cross, st.t, h_try, y_new, f_new)
        cross = jax.tree.map(lambda a, b: jnp.where(acc, a, b), moved, st.cross)
    new = ROSWState(
        t=jnp.where(acc, t_new, st.t),
        y=jnp.where(acc, y_new, st.y),
        f=jnp.where(acc, f_new, st.f),
        alpha=jnp.where(acc, a_new, st.alpha),
        h=h_next,
        k=k_new,
        n_steps=st.n_steps + 1,
        n_rejected=st.n_rejected + (~acc).astype(jnp.int32),
        n_fevals=st.n_fevals + 2,
        failed=st.failed | failed,
        cross=cross,
    )
    finished = done(state, ts)
    return jax.tree.map(lambda a, b: jnp.where(finished, a, b), state, new)
