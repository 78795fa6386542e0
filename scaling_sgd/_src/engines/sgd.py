"""Engine ``sgd``: online SGD in full dimension ``d`` (SPEC section 2.1).

One compiled program per :class:`Static`: ``jit(scan over log segments of vmap(advance)))``.
Per step each replica draws a fresh batch ``x ~ N(0, I_d)`` ``(B, d)`` from
``fold_in(k_data, t)`` (so the numbers do not depend on how the run is chunked), forms the
SPEC gradient ``grad_{w_i} = alpha_i w_i + gamma_i x`` by hand (no autodiff: it is
cheaper and is tested against ``jax.grad``), and updates ``W``.  Observables are reduced
on the device at the log points; only they come back to the host.

Divergence: a step whose per-sample squared error is non-finite or exceeds the bound is
not applied, and the replica is frozen from then on (``diverged``, ``diverged_step``).
The other replicas go on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import model as mdl
from ..optim import make_optimizer, schedule_factor
from .common import TRACE_COUNT, Progress, Replicas, Static, place_replicas, progress_hook, set_progress

__all__ = ["SGDState", "init", "step", "observe", "simulate", "run_compiled"]


class SGDState(NamedTuple):
    """State of one replica.

    W: ``(m, d)`` student weights.  theta: ``(P, d)`` teacher frame or ``None``
    (canonical).  opt_state: optax state (``()`` for plain SGD).  key_data: PRNG key of
    the data stream.  diverged: bool.  diverged_step: int32 (``-1`` if not diverged).
    """

    W: jax.Array
    theta: jax.Array | None
    opt_state: tuple
    key_data: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array


def _dtype(static: Static):
    return jnp.float64 if static.dtype == "float64" else jnp.float32


def _plain(static: Static) -> bool:
    return static.optimizer == "sgd" and not static.optimizer_kwargs


def _optimizer(static: Static, lr, steps):
    return make_optimizer(static.optimizer, dict(static.optimizer_kwargs), lr, static.schedule, steps)


def split_keys(seed):
    """Role-separated keys from one seed: ``(teacher, init, data)``."""
    k_teacher, k_init, k_data = jax.random.split(jax.random.PRNGKey(seed), 3)
    return k_teacher, k_init, k_data


def init(static: Static, seed, init_scale, lr=1.0, steps=1) -> SGDState:
    """Initial state of one replica: ``W ~ N(0, s^2/d)``, teacher frame, optimizer state."""
    m = static.model
    dt = _dtype(static)
    k_teacher, k_init, k_data = split_keys(seed)
    W = mdl.init_student(k_init, m.m, m.d, init_scale, dt)
    theta = mdl.teacher_basis(k_teacher, m.P, m.d, dt) if m.basis == "random" else None
    opt_state = () if _plain(static) else _optimizer(static, lr, steps).init(W)
    return SGDState(W, theta, opt_state, k_data, jnp.asarray(False), jnp.asarray(-1, jnp.int32))


def batch_grad(static: Static, W, theta, a, x):
    """Batch-mean SPEC gradient of ``(1/2) e^2`` and the per-sample errors.

    Args: W ``(m, d)``, theta ``(P, d)`` or None, a ``(P,)``, x ``(B, d)``.
    Returns: ``grad`` ``(m, d)`` ``= mean_b [alpha_bi w_i + gamma_bi x_b]``, ``e`` ``(B,)``.
    """
    m = static.model
    y = mdl.teacher_output(m, theta, a, x)
    r2 = jnp.sum(W * W, axis=-1)
    alpha, gamma, e = mdl.per_sample_grad_coeffs(m, None, r2, x @ W.T, y)
    B = x.shape[0]
    grad = (jnp.sum(alpha, axis=0) / B)[:, None] * W + (gamma.T @ x) / B
    return grad, e, alpha, gamma


def step(static: Static, state: SGDState, t, lr, a, steps, bound) -> SGDState:
    """One online-SGD step ``t`` (0-based) of one replica."""
    m = static.model
    dt = _dtype(static)
    x = jax.random.normal(jax.random.fold_in(state.key_data, t), (static.batch_size, m.d), dt)
    y = mdl.teacher_output(m, state.theta, a, x)
    W = state.W
    r2 = jnp.sum(W * W, axis=-1)
    alpha, gamma, e = mdl.per_sample_grad_coeffs(m, None, r2, x @ W.T, y)
    e2 = e * e
    ok = jnp.all(jnp.isfinite(e2) & (e2 <= bound)) & ~state.diverged
    B = static.batch_size
    if _plain(static):
        lr_t = lr * schedule_factor(static.schedule, t, steps).astype(dt)
        # Scalars zeroed on a bad or frozen step leave W unchanged at O(m) cost.
        ca = jnp.where(ok, lr_t * jnp.sum(alpha, axis=0) / B, 0.0)
        cg = jnp.where(ok, lr_t / B, 0.0) * gamma
        W = (1.0 - ca)[:, None] * W - cg.T @ x
        opt_state = state.opt_state
    else:
        grad = (jnp.sum(alpha, axis=0) / B)[:, None] * W + (gamma.T @ x) / B
        grad = jnp.where(ok, grad, 0.0)
        updates, opt_state = _optimizer(static, lr, steps).update(grad, state.opt_state, W)
        W = jnp.where(ok, W + updates, W)
        opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), opt_state, state.opt_state)
    newly = ~ok & ~state.diverged
    return state._replace(
        W=W,
        opt_state=opt_state,
        diverged=state.diverged | newly,
        diverged_step=jnp.where(newly, jnp.asarray(t, jnp.int32), state.diverged_step),
    )


def observe(static: Static, state: SGDState, a):
    """Observables of one replica from its Gram blocks (see :func:`model.gram_observables`)."""
    m = static.model
    W = state.W
    WT = W[:, : m.P] if state.theta is None else W @ state.theta.T
    return mdl.gram_observables(m, W @ W.T, WT, a, static.with_overlap)


def _check_loss(state: SGDState, obs, bound, t):
    """Flag (at a log point) a replica whose exact loss is non-finite or above the bound."""
    bad = ~(jnp.isfinite(obs["loss"]) & (obs["loss"] <= bound)) & ~state.diverged
    return state._replace(
        diverged=state.diverged | bad,
        diverged_step=jnp.where(bad, jnp.asarray(t, jnp.int32), state.diverged_step),
    )


def advance(static: Static, state: SGDState, t0, t1, lr, a, steps, bound) -> SGDState:
    """Steps ``t0 .. t1-1`` of one replica (a device loop)."""
    return lax.fori_loop(t0, t1, lambda t, s: step(static, s, t, lr, a, steps, bound), state)


@functools.partial(jax.jit, static_argnums=(0,))
def run_compiled(static: Static, seed, lr, a, init_scale, bound, log_steps):
    """The whole run of all replicas in one compiled program.

    Args:
        seed ``(R,)``, lr ``(R,)``, a ``(R, P)``; init_scale, bound scalars;
        log_steps ``(T,)`` int32 non-decreasing, ``log_steps[0] = 0``,
        ``log_steps[-1] = steps``.
    Returns:
        dict of observables stacked ``(T, R, ...)`` plus final ``diverged``,
        ``diverged_step`` ``(R,)``.
    """
    TRACE_COUNT["n"] += 1
    dt = _dtype(static)
    lr = lr.astype(dt)
    a = a.astype(dt)
    steps = log_steps[-1]
    states = jax.vmap(lambda s, l: init(static, s, init_scale, l, steps))(seed, lr)
    v_observe = jax.vmap(lambda st, aa: observe(static, st, aa))
    v_advance = jax.vmap(
        lambda st, l, aa, t0, t1: advance(static, st, t0, t1, l, aa, steps, bound), in_axes=(0, 0, 0, None, None)
    )
    obs0 = v_observe(states, a)
    states = jax.vmap(lambda st, o: _check_loss(st, o, bound, 0))(states, obs0)

    def segment(states, k):
        t0, t1 = log_steps[k], log_steps[k + 1]
        states = v_advance(states, lr, a, t0, t1)
        obs = v_observe(states, a)
        states = jax.vmap(lambda st, o: _check_loss(st, o, bound, t1))(states, obs)
        progress_hook(k)
        return states, obs

    states, obs = lax.scan(segment, states, jnp.arange(log_steps.shape[0] - 1))
    obs = jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs], axis=0), obs0, obs)
    return obs, states.diverged, states.diverged_step


def simulate(static: Static, reps: Replicas, log_steps: np.ndarray, progress: Progress | None = None) -> dict:
    """Run all replicas; return numpy metrics ``(R, T, ...)`` (SPEC section 4 names)."""
    log_steps = np.asarray(log_steps)
    if log_steps[-1] >= 2**31:
        raise ValueError("train.steps must be < 2^31 in engine 'sgd'")
    set_progress(progress)
    try:
        if progress is not None:
            progress.start()
        obs, div, div_step = run_compiled(
            static,
            place_replicas(reps.seed, jnp.uint32),
            place_replicas(reps.lr),
            place_replicas(reps.a),
            jnp.asarray(reps.init_scale),
            jnp.asarray(reps.diverge_bound),
            jnp.asarray(log_steps, jnp.int32),
        )
        obs = jax.device_get(obs)
    finally:
        set_progress(None)
    out = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in obs.items()}
    out["diverged"] = np.asarray(div, bool)
    out["diverged_step"] = np.asarray(div_step, np.int64)
    return out
