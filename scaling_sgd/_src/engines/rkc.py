"""Second-order Runge-Kutta-Chebyshev (RKC) integrator, written as a resumable state machine.

The ``flow`` engine integrates a gradient flow ``dy/dtau = F(y) = -grad L(y)``: its Jacobian
``J = -Hess L`` is symmetric, so its spectrum is real, and once directions are learned its
most negative eigenvalue ``-rho`` (the relaxation rate of the best-learned neuron, about
``4 a_1``) is far larger than the rates that set the accuracy on the long plateaus.  A
Chebyshev method is built for exactly that case: ``s`` evaluations of ``F`` buy a real
stability interval ``[-0.653 s^2, 0]`` (``s^2``, not ``s``), so a stiff step costs
``O(sqrt(h rho))`` evaluations of ``F`` and nothing else: no Jacobian is formed, stored or
factorised.  Cost per evaluation is that of the closed-form gradient, ``O(m^2 (P + m))``;
memory is a handful of copies of ``y``, ``O(m (P + m))``.

Method: RKC2 of Sommeijer, Shampine & Verwer (1997), damping ``eps = 2/13``.  With
``w0 = 1 + eps/s^2``, ``w1 = T_s'(w0)/T_s''(w0)``, ``b_j = T_j''(w0)/T_j'(w0)^2``
(``b_0 = b_1 = b_2``), ``a_j = 1 - b_j T_j(w0)`` and ``T_j`` the Chebyshev polynomials::

    Y_0 = y_n,   Y_1 = y_n + mu~_1 h F_0,            mu~_1 = b_1 w1
    Y_j = (1 - mu_j - nu_j) y_n + mu_j Y_{j-1} + nu_j Y_{j-2}
          + mu~_j h F(Y_{j-1}) - a_{j-1} mu~_j h F_0,      j = 2..s
    mu_j = 2 w0 b_j / b_{j-1},  nu_j = -b_j / b_{j-2},  mu~_j = 2 w1 b_j / b_{j-1}
    y_{n+1} = Y_s

is second order for every ``s >= 2`` and stable for ``h rho <= beta(s) ~ 0.653 s^2``.  The
stage count of a step is ``s = 1 + floor(sqrt(1 + 1.54 h rho))`` (the smallest with a margin).
Error estimate (the RKC paper's)::

    est = 0.8 (y_n - y_{n+1}) + 0.4 h (F(y_n) + F(y_{n+1}))

measured in the RMS norm weighted by ``atol + rtol max(|y_n|, |y_{n+1}|)``; the step size
follows RKC's PI rule ``h_new = h min(10, max(0.1, 0.8 (h/h_old) err_old^(1/3) / err^(2/3)))``.
``F(y_{n+1})`` is kept for the next step (first-same-as-last), so a step costs ``s``
evaluations.

Spectral radius: ``rho`` is the largest ``|eigenvalue|`` of ``J``, estimated by a few power
iterations with Jacobian-vector products (``jax.jvp`` of ``F``; ``J`` is symmetric, so
``||J v||`` with a unit ``v`` converges to ``rho`` from below), warm-started from the
previous iterate, every ``rho_every`` accepted steps and after a rejected step (unless it
was estimated at that very ``y``), times a safety factor 1.2 (as RKC does).

State machine: :class:`RKCState` holds everything a step needs; :func:`init` builds it,
:func:`step` makes one attempted step, :func:`advance` steps until an output index is
reached and :func:`solve` integrates to every output time.  Steps land exactly on the
output times ``ts`` (a step that would overshoot ``ts[k]`` is shortened to reach it, and
the step size proposed before shortening is kept), so no output is interpolated and the
sequence of steps does not depend on where a caller stops and resumes: stopping at an output
index only reads the state.  All numbers (``ts``, the ``args`` of ``F``) are traced; shapes and
the method's settings are static.  Every function works on one replica; replicas are mapped
by the caller (``vmap``, or ``lax.map``: see :mod:`.flow`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..lazy import lazy
from . import crossings

jax = lazy("jax")
jnp = lazy("jax.numpy")


__all__ = ["RKCSettings", "RKCState", "init", "step", "advance", "solve", "rkc_step", "spectral_radius", "stage_count"]

EPS_DAMPING = 2.0 / 13.0  # RKC's damping: stability interval 0.653 s^2, margin 5%
BETA_COEF = 0.653  # beta(s) ~ 0.653 s^2 for eps = 2/13
RHO_SAFETY = 1.2


class RKCSettings(NamedTuple):
    """Static settings (compile-time constants).

    Attributes:
        rtol, atol: error tolerances (per component, RMS over components).
        rho_every: accepted steps between spectral-radius estimates.
        power_iters: power iterations per estimate (warm-started).
        power_iters_init: power iterations of the first estimate.
        s_max: the most stages a step may use (the step is shortened to stay stable).
        max_steps: the most attempted steps of a solve (``ok`` is ``False`` beyond).
    """

    rtol: float = 1e-5
    atol: float = 1e-9
    rho_every: int = 20
    power_iters: int = 3
    power_iters_init: int = 20
    s_max: int = 400
    max_steps: int = 1_000_000


class RKCState(NamedTuple):
    """Carry of the integrator, one replica (``y`` any array shape, written ``(n,)`` here).

    Attributes:
        t: ``()`` current time.
        y: ``(n,)`` state at ``t``.
        f: ``(n,)`` ``F(y)`` (first-same-as-last).
        h: ``()`` step size to try next (before shortening to an output time).
        h_prev, err_prev: ``()`` last accepted step size and its error norm (PI control).
        rho: ``()`` spectral-radius estimate of ``J`` (safety factor included).
        v: ``(n,)`` unit power-iteration vector (warm start of the next estimate).
        since_rho: ``()`` int32, accepted steps since ``rho`` was estimated.
        rejected: ``()`` bool, the last attempt was rejected (re-estimate ``rho``, do not grow ``h``).
        k: ``()`` int32, index of the next output time: ``ts[k-1] <= t < ts[k]``.
        n_steps, n_rejected, n_fevals: ``()`` int32 counters (attempts, rejections,
            evaluations of ``F`` including the Jacobian-vector products).
        failed: ``()`` bool, the step size collapsed or the step budget ran out.
        cross: :class:`.crossings.Crossings` of the event function given to :func:`init`
            (``None`` without one).
    """

    t: Any
    y: Any
    f: Any
    h: Any
    h_prev: Any
    err_prev: Any
    rho: Any
    v: Any
    since_rho: Any
    rejected: Any
    k: Any
    n_steps: Any
    n_rejected: Any
    n_fevals: Any
    failed: Any
    cross: Any = None


def _norm(x):
    return jnp.sqrt(jnp.sum(x * x))


def spectral_radius(vector_field: Callable, y, args, v, iters: int):
    """Power iteration for the largest ``|eigenvalue|`` of ``J = dF/dy`` at ``y``.

    ``J`` is symmetric (a gradient flow), so for a unit ``v`` ``||J v|| <= rho`` and it rises
    to ``rho`` as ``v`` converges.  ``F`` is linearised once; each iteration is one
    Jacobian-vector product (about two evaluations of ``F``).

    Returns ``(||J v_last||, v)`` with ``v`` the next unit iterate (the warm start).
    """
    _, jvp = jax.linearize(lambda z: vector_field(z, args), y)
    tiny = jnp.finfo(y.dtype).tiny

    def body(_, c):
        v, _ = c
        Jv = jvp(v)
        nrm = _norm(Jv)
        # a zero or non-finite product (J = 0 at a critical point) keeps v and reports 0
        good = jnp.isfinite(nrm) & (nrm > tiny)
        return jnp.where(good, Jv / jnp.where(good, nrm, 1.0), v), jnp.where(good, nrm, 0.0)

    v = v / jnp.maximum(_norm(v), tiny)
    return jax.lax.fori_loop(0, iters, body, (v, jnp.zeros((), y.dtype)))[::-1]


def stage_count(h, rho, s_max: int):
    """``s = 1 + floor(sqrt(1 + 1.54 h rho))`` in ``[2, s_max]`` (so ``h rho <= 0.653 s^2``)."""
    s = 1 + jnp.floor(jnp.sqrt(1.0 + 1.54 * h * rho))
    return jnp.clip(s, 2, s_max).astype(jnp.int32)


def rkc_step(vector_field: Callable, y, f0, h, s, args):
    """One RKC2 step of ``s`` stages (``s >= 2``, traced) from ``y`` with ``f0 = F(y)``.

    Returns ``y_{n+1}`` (``s - 1`` evaluations of ``F``).  The Chebyshev values
    ``T_j(w0), T_j'(w0), T_j''(w0)`` follow their three-term recurrences stage by stage;
    ``w0 - 1 = eps/s^2`` is kept exact (it is below float32's resolution near 1 for large ``s``).
    """
    dt = y.dtype
    sf = s.astype(dt)
    e = EPS_DAMPING / (sf * sf)  # w0 - 1
    w0 = 1.0 + e
    t1 = e * (2.0 + e)  # w0^2 - 1
    t2 = jnp.sqrt(t1)
    arg = sf * jnp.log1p(e + t2)  # s acosh(w0)
    w1 = jnp.sinh(arg) * t1 / (jnp.cosh(arg) * sf * t2 - w0 * jnp.sinh(arg))  # T_s'(w0)/T_s''(w0)
    b1 = 1.0 / (2.0 * w0) ** 2  # b_0 = b_1 = b_2
    y1 = y + (h * w1 * b1) * f0
    one, zero = jnp.ones((), dt), jnp.zeros((), dt)
    # (j, Y_{j-1}, Y_{j-2}, T_{j-1}, T_{j-2}, T'_{j-1}, T'_{j-2}, T''_{j-1}, T''_{j-2}, b_{j-1}, b_{j-2})
    start = (jnp.asarray(2, jnp.int32), y1, y, w0, one, one, zero, zero, zero, b1, b1)

    def cond(c):
        return c[0] <= s

    def body(c):
        j, ym1, ym2, z1, z2, dz1, dz2, d2z1, d2z2, bm1, bm2 = c
        z = 2.0 * w0 * z1 - z2
        dz = 2.0 * w0 * dz1 - dz2 + 2.0 * z1
        d2z = 2.0 * w0 * d2z1 - d2z2 + 4.0 * dz1
        b = d2z / (dz * dz)
        a_m1 = 1.0 - z1 * bm1
        mu = 2.0 * w0 * b / bm1
        nu = -b / bm2
        mut = mu * w1 / w0
        yj = (1.0 - mu - nu) * y + mu * ym1 + nu * ym2 + (h * mut) * (vector_field(ym1, args) - a_m1 * f0)
        return (j + 1, yj, ym1, z, z1, dz, dz1, d2z, d2z1, b, bm1)

    return jax.lax.while_loop(cond, body, start)[1]


def init(vector_field: Callable, y0, ts, args, settings: RKCSettings, v0=None, event: Callable | None = None) -> RKCState:
    """State at ``t = 0`` for the output times ``ts`` ``(T,)`` (non-decreasing, ``>= 0``).

    ``event(y, args)`` ``(P,)``, if given, is followed step by step: the state records the
    first time each component reaches ``0`` (:mod:`.crossings`; the steps do not change).

    Outputs at ``t = 0`` (the leading zeros of ``ts``) count as reached.  The first ``rho`` is
    ``power_iters_init`` power iterations from ``v0`` (default: a fixed pseudo-random vector,
    the same for every replica).  The first step size is a small fraction of ``|y| / |F(y)|``,
    of ``1/rho`` and of the first output time.
    """
    dt = y0.dtype
    ts = ts.astype(dt)
    tiny = jnp.finfo(dt).tiny
    f0 = vector_field(y0, args)
    if v0 is None:
        v0 = jax.random.normal(jax.random.PRNGKey(0), y0.shape, dt)
    rho, v = spectral_radius(vector_field, y0, args, v0, settings.power_iters_init)
    rho = RHO_SAFETY * rho
    first = jnp.argmax(ts > 0)
    t_first = jnp.where(ts[first] > 0, ts[first], 1.0)
    h0 = 0.01 * _norm(y0) / jnp.maximum(_norm(f0), tiny)
    h0 = jnp.minimum(jnp.minimum(h0, t_first), 1.0 / jnp.maximum(rho, tiny))
    i32 = jnp.int32
    return RKCState(
        t=jnp.zeros((), dt),
        y=y0,
        f=f0,
        h=h0,
        h_prev=h0,
        err_prev=jnp.ones((), dt),
        rho=rho,
        v=v,
        since_rho=jnp.zeros((), i32),
        rejected=jnp.asarray(False),
        k=jnp.sum(ts <= 0).astype(i32),
        n_steps=jnp.zeros((), i32),
        n_rejected=jnp.zeros((), i32),
        n_fevals=jnp.asarray(1 + 2 * settings.power_iters_init, i32),
        failed=jnp.asarray(False),
        cross=None if event is None else crossings.init(lambda y: event(y, args), y0, f0, jnp.zeros((), dt)),
    )


def done(state: RKCState, ts) -> jax.Array:
    """``True`` once every output time is reached or the solve failed."""
    return (state.k >= ts.shape[0]) | state.failed


def step(
    vector_field: Callable, state: RKCState, ts, args, settings: RKCSettings, axis_name=None, event: Callable | None = None
) -> RKCState:
    """One attempted step towards the next output time ``ts[k]``.

    Re-estimates ``rho`` first when due (every ``rho_every`` accepted steps, or after a
    rejection).  A finished state (:func:`done`) is returned unchanged, so the function can
    sit in any loop.  ``axis_name``: the name of an enclosing ``vmap`` axis over replicas, if
    any (the spectral-radius branch then runs only when some replica needs it).
    ``event``: the event function given to :func:`init`, if any.
    """
    dt = state.y.dtype
    ts = ts.astype(dt)
    T = ts.shape[0]
    st = state

    # -- spectral radius, when due -------------------------------------------------------------
    # (after a rejection only if rho was last estimated at another y: as RKC does, since a
    # rejection is usually an accuracy failure and a fresh estimate at the same y changes little)
    due = (st.since_rho >= settings.rho_every) | (st.rejected & (st.since_rho > 0))
    # Under vmap a cond on a per-replica predicate runs both branches for everyone; with the
    # vmapped axis named, the estimate runs (for all) only when some replica needs it, and
    # each replica keeps it only if it asked: its numbers do not depend on the other replicas.
    any_due = due if axis_name is None else jax.lax.psum(due.astype(jnp.int32), axis_name) > 0
    rho, v = jax.lax.cond(
        any_due,
        lambda: spectral_radius(vector_field, st.y, args, st.v, settings.power_iters),
        lambda: (st.rho / RHO_SAFETY, st.v),
    )
    v = jnp.where(due, v, st.v)
    # After a rejection the fresh estimate may only raise rho (the rejection may have been an
    # instability; over-estimating only costs stages).  On the schedule it follows the flow.
    rho = jnp.where(due, jnp.maximum(RHO_SAFETY * rho, jnp.where(st.rejected, st.rho, 0.0)), st.rho)
    since_rho = jnp.where(due, 0, st.since_rho)
    n_fevals = st.n_fevals + jnp.where(due, 2 * settings.power_iters, 0)

    # -- step size and stage count -------------------------------------------------------------
    target = ts[jnp.minimum(st.k, T - 1)]
    h_stable = (settings.s_max**2 - 1) / (1.54 * jnp.maximum(rho, jnp.finfo(dt).tiny))
    h = jnp.minimum(st.h, h_stable)
    hits = h >= target - st.t
    h_try = jnp.where(hits, target - st.t, h)
    s = stage_count(h_try, rho, settings.s_max)

    y_new = rkc_step(vector_field, st.y, st.f, h_try, s, args)
    f_new = vector_field(y_new, args)
    n_fevals = n_fevals + s

    # -- error control -------------------------------------------------------------------------
    est = 0.8 * (st.y - y_new) + 0.4 * h_try * (st.f + f_new)
    scale = settings.atol + settings.rtol * jnp.maximum(jnp.abs(st.y), jnp.abs(y_new))
    err = jnp.sqrt(jnp.mean((est / scale) ** 2))
    finite = jnp.isfinite(err)
    acc = finite & (err <= 1.0)
    err_safe = jnp.where(finite, jnp.maximum(err, 1e-10), 1.0)
    # accepted: RKC's PI rule; rejected: 0.8 err^(-1/3); non-finite: 0.1; no growth right after a rejection
    fac_pi = 0.8 * (h_try / st.h_prev) * st.err_prev ** (1.0 / 3.0) / err_safe ** (2.0 / 3.0)
    fac = jnp.where(acc, jnp.clip(fac_pi, 0.1, 10.0), jnp.where(finite, jnp.clip(0.8 / err_safe ** (1.0 / 3.0), 0.1, 1.0), 0.1))
    fac = jnp.where(acc & st.rejected, jnp.minimum(fac, 1.0), fac)
    h_next = h_try * fac
    # a step shortened to land on an output keeps the longer proposal it was cut from
    h_next = jnp.where(acc & hits, jnp.maximum(h_next, h), h_next)

    t_new = jnp.where(hits, target, st.t + h_try)
    k_new = jnp.where(acc & hits, jnp.sum(ts <= t_new).astype(jnp.int32), st.k)
    failed = (h_next < 1e-12 * jnp.maximum(jnp.abs(st.t), 1.0)) | (st.n_steps + 1 >= settings.max_steps)
    cross = st.cross
    if event is not None:
        moved = crossings.update(lambda y: event(y, args), st.cross, st.t, h_try, y_new, f_new)
        cross = jax.tree.map(lambda a, b: jnp.where(acc, a, b), moved, st.cross)
    new = RKCState(
        t=jnp.where(acc, t_new, st.t),
        y=jnp.where(acc, y_new, st.y),
        f=jnp.where(acc, f_new, st.f),
        h=h_next,
        h_prev=jnp.where(acc, h_try, st.h_prev),
        err_prev=jnp.where(acc, err_safe, st.err_prev),
        rho=rho,
        v=v,
        since_rho=since_rho + acc.astype(jnp.int32),
        rejected=~acc,
        k=k_new,
        n_steps=st.n_steps + 1,
        n_rejected=st.n_rejected + (~acc).astype(jnp.int32),
        n_fevals=n_fevals,
        failed=st.failed | failed,
        cross=cross,
    )
    finished = done(state, ts)
    return jax.tree.map(lambda a, b: jnp.where(finished, a, b), state, new)


def advance(vector_field: Callable, state: RKCState, ts, args, settings: RKCSettings, k_stop, axis_name=None) -> RKCState:
    """Step until output index ``k_stop`` is reached (``state.k > k_stop``) or the solve is done."""

    def cond(st):
        return (st.k <= k_stop) & ~done(st, ts)

    return jax.lax.while_loop(cond, lambda st: step(vector_field, st, ts, args, settings, axis_name), state)


def solve(vector_field: Callable, y0, ts, args, settings: RKCSettings, observe: Callable | None = None):
    """Integrate ``dy/dt = F(y, args)`` from ``y(0) = y0`` to every ``ts`` ``(T,)``.

    Returns ``(obs, state)``: ``obs`` the pytree ``observe(y(ts[k]))`` stacked over ``k``
    (default: ``y`` itself, ``(T, n)``), ``NaN`` for outputs not reached; ``state`` the final
    :class:`RKCState` (``ok = (state.k >= T) & ~state.failed``).
    """
    observe = (lambda y: y) if observe is None else observe
    state = init(vector_field, y0, ts, args, settings)

    def per_output(st, k):
        st = advance(vector_field, st, ts, args, settings, k)
        reached = st.k > k
        obs = jax.tree.map(lambda o: jnp.where(reached, o, jnp.nan), observe(st.y))
        return st, obs

    state, obs = jax.lax.scan(per_output, state, jnp.arange(ts.shape[0]))
    return obs, state
