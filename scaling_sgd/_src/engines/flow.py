"""Engine ``flow``: population gradient flow of ``(1/2) MSE`` (SPEC section 2.3).

``dW/dtau = -grad_W (1/2) MSE(W)``, the ``lr -> 0`` limit of online SGD with
``tau = lr * step`` (for a schedule, ``tau(step) = lr * integral of its factor``).  The
gradient of the closed-form loss keeps every ``w_i`` in ``span{theta_p} + span{w_j(0)}``,
so the flow runs exactly in ``P + m`` coordinates ``C`` (``W = C [theta; Q]``, as in
``reduced``), whatever ``d`` is: ``d`` only enters through the initial condition.

Closed-form gradient (tested against ``jax.grad`` of :func:`model.population_loss`), with
``r2 = ||w_i||^2``, cosines ``G = W W^T / (r r^T)``, ``M = W theta^T / r``::

    grad_{w_i} (1/2) MSE = [sum_j A_ij r2_j - sum_p a_p B_ip] w_i
                           + sum_j r_i r_j K_ss'(G_ij) w_j  -  sum_p a_p r_i K_st'(M_ip) theta_p
    A = 2 K_ss(G) - G K_ss'(G),   B = 2 K_st(M) - M K_st'(M).

Stiffness: once a direction is learned, its neuron relaxes on an ``O(1/a_p)`` time scale
while the remaining plateaus last ``O(d)``; an explicit solver is then limited by
stability, not accuracy.  ``flow.solver = "auto"`` (= ``"ros2"``) is an adaptive
second-order Rosenbrock-W method whose Jacobian is the per-neuron block diagonal
(:func:`ros2_solve`); the diffrax solvers (``"kvaerno5"`` implicit with the dense
``m(P+m)`` Jacobian, ``"tsit5"``/``"dopri5"`` explicit) are kept as references.  Chosen by
measurement: at P = m = 32 Kvaerno5 spends its time in dense LUs of size 2048 and
explicit solvers crawl at the stability limit.

Output: the observables at ``tau = lr * step`` for every log step, vmapped over replicas
(each replica has its own ``lr``, hence its own time grid).
"""

from __future__ import annotations

import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .. import model as mdl
from .common import TRACE_COUNT, Progress, Replicas, Static, call_compiled, progress_hook
from .common import dtype_of as _dtype
from .reduced import coordinates
from .reduced import init as reduced_init

__all__ = ["SOLVERS", "gradient", "loss", "init", "tau_of_step", "simulate", "run_compiled"]

SOLVERS = ("auto", "ros2", "kvaerno5", "kvaerno3", "tsit5", "dopri5")
MAX_STEPS = 200_000


def loss(model: mdl.Model, C, a):
    """``(1/2) MSE`` of coordinates ``C`` ``(m, P + m)`` (first ``P`` columns on ``theta``)."""
    return 0.5 * mdl.population_loss(model, C @ C.T, C[:, : model.P], a)


def gradient(model: mdl.Model, C, a):
    """Closed-form ``grad_C (1/2) MSE`` ``(m, P + m)`` (see the module docstring)."""
    P = model.P
    r2 = jnp.sum(C * C, axis=-1)
    r = jnp.sqrt(jnp.maximum(r2, 1e-300 if C.dtype == jnp.float64 else 1e-30))
    rr = r[:, None] * r[None, :]
    G = (C @ C.T) / rr
    G = jnp.where(jnp.eye(G.shape[0], dtype=bool), jnp.ones_like(G), G)
    M = C[:, :P] / r[:, None]
    s, t = model.student, model.teacher
    dKG = s.kernel_derivative(G)
    A = 2.0 * s.kernel(G) - G * dKG
    dKM = s.kernel_derivative(M, t)
    Bm = 2.0 * s.kernel(M, t) - M * dKM
    coef = A @ r2 - Bm @ a  # (m,)
    g = coef[:, None] * C + (rr * dKG) @ C
    return g.at[:, :P].add(-(r[:, None] * dKM * a[None, :]))


def init(static: Static, seed, init_scale, match_sgd: bool = False):
    """Initial coordinates ``(m, P + m)`` with the law of SGD's ``W(0)``.

    ``match_sgd=False``: drawn directly in ``P + m`` coordinates (Bartlett, cost independent
    of ``d``; the same numbers as the ``reduced`` engine's start).  ``match_sgd=True``: the
    ``sgd`` engine's own ``W(0)`` for this seed (``O(m d)``), so that ``flow`` and ``sgd``
    runs with the same seed start from the same weights (paired comparisons).
    """
    m = static.model
    if not match_sgd:
        return reduced_init(static, seed, init_scale).C[:, : m.P + m.m]
    from .sgd import init as sgd_init

    st = sgd_init(static, seed, init_scale)
    return coordinates(st.W, m.P if st.theta is None else st.theta)


def tau_of_step(schedule: str, step, steps):
    """``tau / lr`` after ``step`` SGD steps of a run of ``steps``: the integral of the
    schedule factor (the continuum limit of ``sum_t lr_t / lr``).  NumPy, float64."""
    t = np.asarray(step, np.float64)
    T = max(float(steps), 1.0)
    if schedule == "constant":
        return t
    if schedule == "cosine":
        return 0.5 * t + T / (2.0 * math.pi) * np.sin(math.pi * np.minimum(t / T, 1.0))
    if schedule == "linear":
        return np.where(t < T, t - t * t / (2.0 * T), T / 2.0)
    if schedule == "inverse_time":
        c = max(T / 100.0, 1.0)
        return c * np.log1p(t / c)
    raise ValueError(schedule)


def gradient_row(model: mdl.Model, ci, C, i, a):
    """Row ``i`` of :func:`gradient` with ``c_i`` replaced by ``ci`` ``(P + m,)``: ``O(m (P+m))``.

    Its Jacobian in ``ci`` is the diagonal block ``d g_i / d c_i`` used by the ROS2 solver
    (no copy of ``C`` is made, so ``vmap(jacfwd)`` over neurons stays ``O(m^2 (P+m)^2)``).
    """
    P = model.P
    tiny = 1e-300 if C.dtype == jnp.float64 else 1e-30
    is_i = jnp.arange(C.shape[0]) == i
    r2 = jnp.where(is_i, ci @ ci, jnp.sum(C * C, axis=-1))
    r = jnp.sqrt(jnp.maximum(r2, tiny))
    Gi = jnp.where(is_i, 1.0, (C @ ci) / (r * r[i]))
    Mi = ci[:P] / r[i]
    s, t = model.student, model.teacher
    dKG = s.kernel_derivative(Gi)
    dKM = s.kernel_derivative(Mi, t)
    coef = (2.0 * s.kernel(Gi) - Gi * dKG) @ r2 - (2.0 * s.kernel(Mi, t) - Mi * dKM) @ a
    w = r[i] * r * dKG  # (m,) weights of the rows c_j (row i is ci, not C[i])
    g = (coef + w[i]) * ci + jnp.where(is_i, 0.0, w) @ C
    return g.at[:P].add(-(r[i] * dKM * a))


def block_jacobian(model: mdl.Model, C, a):
    """Diagonal blocks ``d f_i / d c_i`` ``(m, P+m, P+m)`` of ``f = -grad (1/2) MSE``."""
    m = C.shape[0]
    jac = jax.jacfwd(lambda ci, i: -gradient_row(model, ci, C, i, a))
    return jax.vmap(jac)(C, jnp.arange(m))


def ros2_solve(static: Static, C0, a, ts, rtol, atol, max_steps: int = MAX_STEPS):
    """Adaptive ROS2 W-method with the per-neuron block-diagonal Jacobian.

    ROS2 (Verwer, Spee, Blom & Hundsdorfer 1999), ``gamma = 1 + 1/sqrt(2)``::

        (I - gamma h J) k1 = f(y)
        (I - gamma h J) k2 = f(y + h k1) - 2 k1
        y+ = y + (3/2) h k1 + (1/2) h k2,      error estimate (1/2) h (k1 + k2)

    is second order for *any* ``J`` (a W-method), so ``J`` may be the block-diagonal
    approximation: each neuron's own ``(P+m) x (P+m)`` Jacobian (where the stiffness
    lives: a learned neuron's norm and angle relax on ``O(1/a_p)`` while plateaus last
    ``O(d)``); the weak neuron-neuron coupling is treated explicitly.  Cost per step: two
    gradients, ``m`` small Jacobians and LUs, ``O(m (P+m)^3)``, independent of ``d``.
    Steps land exactly on the output times ``ts`` (no interpolation error).

    Returns ``(C(ts) (T, m, P+m), ok, n_steps)``.
    """
    model = static.model
    dt = C0.dtype
    ts, a = ts.astype(dt), a.astype(dt)
    gam = 1.0 + 1.0 / math.sqrt(2.0)
    n = C0.shape[1]
    eye = jnp.eye(n, dtype=dt)
    T = ts.shape[0]

    def f(C):
        return -gradient(model, C, a)

    def attempt(C, h):
        J = block_jacobian(model, C, a)
        lu = jax.vmap(jax.scipy.linalg.lu_factor)(eye[None] - (gam * h) * J)
        solve = jax.vmap(lambda l, b: jax.scipy.linalg.lu_solve(l, b))
        f0 = f(C)
        k1 = solve(lu, f0)
        k2 = solve(lu, f(C + h * k1) - 2.0 * k1)
        C_new = C + h * (1.5 * k1 + 0.5 * k2)
        scale = atol + rtol * jnp.maximum(jnp.abs(C), jnp.abs(C_new))
        err = jnp.sqrt(jnp.mean((0.5 * h * (k1 + k2) / scale) ** 2))
        return C_new, err, f0

    # initial step: a small fraction of the first output interval and of |y| / |f|
    f_init = f(C0)
    h0 = 0.01 * jnp.sqrt(jnp.sum(C0 * C0) / jnp.maximum(jnp.sum(f_init * f_init), 1e-300 if dt == jnp.float64 else 1e-30))
    first = jnp.argmax(ts > 0)
    h0 = jnp.minimum(h0, jnp.where(ts[first] > 0, ts[first], 1.0))
    outs = jnp.zeros((T,) + C0.shape, dt)
    # outputs at tau = 0 (all leading zeros of ts)
    outs = jnp.where((ts <= 0)[:, None, None], C0[None], outs)
    k0 = jnp.sum(ts <= 0)

    def cond(c):
        t, C, h, k, outs, nst, bad = c
        return (k < T) & (nst < max_steps) & ~bad

    def body(c):
        t, C, h, k, outs, nst, bad = c
        target = ts[jnp.minimum(k, T - 1)]
        h_try = jnp.minimum(h, target - t)
        hits = h >= target - t
        C_new, err, _ = attempt(C, h_try)
        finite = jnp.isfinite(err) & jnp.all(jnp.isfinite(C_new))
        acc = finite & (err <= 1.0)
        fac = jnp.where(finite, jnp.clip(0.9 * jnp.maximum(err, 1e-10) ** -0.5, 0.2, 5.0), 0.2)
        t = jnp.where(acc, jnp.where(hits, target, t + h_try), t)
        C = jnp.where(acc, C_new, C)
        # record every output time reached (several equal ts at once)
        reached = acc & hits
        rec = reached & (ts <= t) & (jnp.arange(T) >= k)
        outs = jnp.where(rec[:, None, None], C[None], outs)
        k = jnp.where(reached, jnp.sum(ts <= t), k)
        h_next = jnp.where(acc & hits, jnp.maximum(h, h_try * fac), h_try * fac)
        bad = bad | (h_next < 1e-12 * jnp.maximum(t, 1.0))
        return t, C, h_next, k, outs, nst + 1, bad

    start = (jnp.asarray(0.0, dt), C0, h0, k0, outs, jnp.asarray(0, jnp.int32), jnp.asarray(False))
    t, C, h, k, outs, nst, bad = jax.lax.while_loop(cond, body, start)
    ok = (k >= T) & ~bad
    outs = jnp.where((jnp.arange(T) < k)[:, None, None], outs, jnp.nan)
    return outs, ok, nst


def _solver(name: str):
    return {
        "kvaerno5": diffrax.Kvaerno5,
        "kvaerno3": diffrax.Kvaerno3,
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
    }[name]()


def solve(static: Static, C0, a, ts):
    """Integrate one replica from ``C0`` and return ``(C(ts) (T, m, P+m), ok)``."""
    model = static.model
    dt = _dtype(static)
    if static.flow_solver in ("auto", "ros2"):
        return ros2_solve(static, C0, a, ts, static.flow_rtol, static.flow_atol)

    def rhs(_, C, a):
        return -gradient(model, C, a)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        _solver(static.flow_solver),
        t0=jnp.asarray(0.0, dt),
        t1=ts[-1],
        dt0=None,
        y0=C0,
        args=a,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=static.flow_rtol, atol=static.flow_atol),
        max_steps=MAX_STEPS,
        throw=False,
    )
    return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]


@functools.partial(jax.jit, static_argnums=(0, 7))
def run_compiled(static: Static, seed, lr, a, init_scale, bound, tau, match_sgd: bool = False):
    """All replicas in one compiled program.

    Args: seed, lr ``(R,)``, a ``(R, P)``, ``tau`` ``(T,)`` ``= tau(step)/lr`` (the
    schedule integral, float).  Returns observables ``(T, R, ...)``, ``ok``, ``num_steps``.
    """
    TRACE_COUNT["n"] += 1
    dt = _dtype(static)
    lr = lr.astype(dt)
    a = a.astype(dt)
    C0 = jax.vmap(lambda s: init(static, s, init_scale, match_sgd))(seed)
    ts = lr[:, None] * tau.astype(dt)[None, :]  # (R, T)
    Cs, ok, nsteps = jax.vmap(lambda c, aa, t: solve(static, c, aa, t))(C0, a, ts)
    obs = jax.vmap(
        jax.vmap(
            lambda C, aa: mdl.gram_observables(static.model, C @ C.T, C[:, : static.model.P], aa, static.with_overlap), (0, None)
        ),
        (0, 0),
    )(Cs, a)
    progress_hook(tau.shape[0] - 2)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), obs), ok, nsteps


def simulate(static: Static, reps: Replicas, log_steps: np.ndarray, progress: Progress | None = None, *, match_sgd=False) -> dict:
    """Integrate all replicas; numpy metrics ``(R, T, ...)`` on the SGD-step grid.

    A replica whose solve fails (step budget exhausted, non-finite state) or whose loss
    leaves the divergence bound is flagged ``diverged`` at the first log step where its
    output is bad (``diverged_step``), as in the SGD engines.
    """
    log_steps = np.asarray(log_steps)
    tau = tau_of_step(static.schedule, log_steps, log_steps[-1])
    out, ok, nsteps = call_compiled(run_compiled, static, reps, jnp.asarray(tau), bool(match_sgd), progress=progress)
    loss_ = out["loss"]
    bad = ~(np.isfinite(loss_) & (loss_ <= reps.diverge_bound))
    bad |= ~np.asarray(ok, bool)[:, None] & ~np.isfinite(loss_)
    out["diverged"] = bad.any(axis=1) | ~np.asarray(ok, bool)
    first = np.where(bad.any(axis=1), np.argmax(bad, axis=1), len(log_steps) - 1)
    out["diverged_step"] = np.where(out["diverged"], log_steps[first], -1).astype(np.int64)
    out["solver_steps"] = np.asarray(nsteps, np.int64)
    return out
