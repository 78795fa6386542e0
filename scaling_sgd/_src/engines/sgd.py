"""Engine ``sgd``: online SGD in full dimension ``d`` (docs/model.md §2).

One compiled program per :class:`Static`: ``jit(scan over log segments of while(blocks of
vmap(block))))``.  The inputs are drawn ``U`` steps at a time (:func:`draw_block`): block
``b`` holds steps ``b U .. b U + U - 1`` and is keyed by ``fold_in(k_data, b)``, so the
numbers depend only on (seed, absolute step), never on how the run is chunked.  With plain
SGD a block is advanced in low-rank form (:class:`Block`): the ``O(d)`` work becomes
matrix products and the per-step work is independent of ``d``, so the cost per sample is
the ``d`` Gaussian draws plus ``4 d m + 2 d U`` flops of small matrix products; the next
block is drawn while the current one is advanced (benchmarks/NOTES.md, candidate 15).  The gradient
``grad_{w_i} = alpha_i w_i + gamma_i x`` is formed by hand (tested against ``jax.grad``);
:func:`step` is the direct per-step reference the blocked run is tested against.
Observables are reduced on the device at the log points; only they come back to the host.

Divergence: a step whose per-sample squared error is non-finite or exceeds the bound is
not applied, and the replica is frozen from then on (``diverged``, ``diverged_step``).
The other replicas go on.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .. import model as mdl
from ..lazy import lazy
from ..optim import make_optimizer
from ..rng import split_keys
from ..schedules import factor as schedule_factor
from .base import Engine, Grid, Replicas, Static, Target, itemsize
from .base import dtype_of as _dtype

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

__all__ = [
    "SGD",
    "SGDState",
    "SGDRun",
    "Block",
    "init",
    "step",
    "observe",
    "draw_batch",
    "draw_block",
    "block_size",
    "form_block",
    "run_steps",
    "current_weights",
]

# Samples per replica drawn (and folded into matrix products) per block: see block_size.
SAMPLES_PER_BLOCK = 32
# Input-block bytes of a group of replicas advanced together (SGD.group_size): about the
# share of the last-level cache a group may use (benchmarks/NOTES.md, "`sgd` at d = 16384").
GROUP_BYTES = 16 * 2**20
# Copies held at the peak of a compiled step, for the memory estimate: the input blocks about
# 6 times (the block in progress, the next, the one being drawn, and their copies inside the
# loop), the weights about 3 times (calibration: benchmarks/NOTES.md, "Memory estimate of the
# preflight").
INPUT_COPIES = 6
WEIGHT_COPIES = 3
# How the inputs are drawn (recorded with every result): see draw_block.
INPUT_STREAM = "jax.random.normal, threefry2x32, threefry_partitionable=False, block key fold_in(k_data, t // U)"


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


def _optimizer(static: Static, lr, steps):
    return make_optimizer(static.optimizer, dict(static.optimizer_kwargs), lr, static.schedule, steps, static.schedule_n0)


def init(static: Static, seed, init_scale, lr=1.0, steps=1) -> SGDState:
    """Initial state of one replica: ``W ~ N(0, s^2/d)``, teacher frame, optimizer state."""
    m = static.model
    dt = _dtype(static)
    k_teacher, k_init, k_data = split_keys(seed)
    W = mdl.init_student(k_init, m.m, m.d, init_scale, dt)
    theta = mdl.teacher_basis(k_teacher, m.P, m.d, dt) if m.basis == "random" else None
    opt_state = () if static.plain_sgd else _optimizer(static, lr, steps).init(W)
    return SGDState(W, theta, opt_state, k_data, jnp.asarray(False), jnp.asarray(-1, jnp.int32))


def batch_grad(static: Static, W, theta, a, x):
    """Batch-mean gradient of ``(1/2) e^2`` and the per-sample errors.

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


def block_size(batch_size: int) -> int:
    """Steps per block of Gaussian draws: ``U = max(1, SAMPLES_PER_BLOCK // B)``.

    A function of ``B`` only (never of the backend or the replica count), so a seed gives
    the same data stream everywhere.
    """
    return max(1, SAMPLES_PER_BLOCK // int(batch_size))


def draw_block(static: Static, key_data, b):
    """The inputs of steps ``b U .. b U + U - 1``: ``X`` ``(U, B, d)`` i.i.d. ``N(0, 1)``.

    Keyed by the block index ``b`` (absolute), so the stream depends only on (seed, step).
    ``jax.random.normal`` with threefry2x32 in its non-partitionable counter layout
    (:data:`INPUT_STREAM`), whatever the process-wide ``jax_threefry_partitionable`` flag:
    the stream is then fixed by the seed alone, and it hashes one counter pair per two
    numbers instead of one per number (draw rate: benchmarks/NOTES.md, candidate 14).
    The partitionable layout only matters for one array split across devices; replicas
    are split across devices whole.
    """
    m = static.model
    U = block_size(static.batch_size)
    with jax.threefry_partitionable(False):
        return jax.random.normal(jax.random.fold_in(key_data, b), (U, static.batch_size, m.d), _dtype(static))


def draw_batch(static: Static, key_data, t):
    """The batch ``x`` ``(B, d)`` of step ``t``: row ``t mod U`` of block ``t // U``."""
    U = block_size(static.batch_size)
    return draw_block(static, key_data, t // U)[t % U]


def _step_x(static: Static, state: SGDState, x, t, lr, a, steps, bound) -> SGDState:
    """One SGD step of one replica on the batch ``x`` ``(B, d)``."""
    m = static.model
    dt = _dtype(static)
    y = mdl.teacher_output(m, state.theta, a, x)
    W = state.W
    r2 = jnp.sum(W * W, axis=-1)
    alpha, gamma, e = mdl.per_sample_grad_coeffs(m, None, r2, x @ W.T, y)
    e2 = e * e
    good = jnp.all(jnp.isfinite(e2) & (e2 <= bound))
    ok = good & ~state.diverged
    B = static.batch_size
    if static.plain_sgd:
        lr_t = lr * schedule_factor(static.schedule, t, steps, static.schedule_n0).astype(dt)
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
    newly = ~good & ~state.diverged
    return state._replace(
        W=W,
        opt_state=opt_state,
        diverged=state.diverged | newly,
        diverged_step=jnp.where(newly, jnp.asarray(t, jnp.int32), state.diverged_step),
    )


def step(static: Static, state: SGDState, t, lr, a, steps, bound) -> SGDState:
    """One online-SGD step ``t`` (0-based) of one replica: the per-step reference.

    Applies the update directly to ``W``; :meth:`SGD.advance` advances by blocks
    (:class:`Block`) and is tested equal to a Python loop of this function.
    """
    return _step_x(static, state, draw_batch(static, state.key_data, t), t, lr, a, steps, bound)


class Block(NamedTuple):
    """The block in progress of one replica (steps ``b U .. b U + U - 1``).

    With plain SGD the update of every step is a rank-``B`` correction along the block's
    own inputs, so inside a block

        W(s) = c(s) * W0 - G(s)^T X,     c ``(m,)``, G ``(U B, m)``, X ``(U B, d)``

    (``*`` scales rows; ``W0`` is ``SGDState.W``, the weights at the block start).  Hence
    ``<x_s, w_i(s)> = c_i XW[s, i] - (XX[s] G)_i`` with the Gram blocks ``XW = X W0^T``
    and ``XX = X X^T`` computed once per block as matrix products, and the norms follow
    the exact recurrence

        r2' = (1 - ca)^2 r2 - 2 (1 - ca) sum_b cg_b <x_b, w> + sum_bb' cg_b cg_b' <x_b, x_b'>.

    The sequential work is ``O(U B^2 m)`` per step instead of ``O(B d m)``; the ``O(d)``
    work per sample is two matrix products (``4 d m`` flops) plus ``XX``.  ``W`` is formed
    once at the block end and ``r2`` recomputed from it, so rounding in the recurrence never
    accumulates across blocks.  With an optax optimizer only ``X`` is used and ``W`` is
    updated step by step.

    Fields: X ``(U B, d)``, y ``(U, B)`` teacher labels, XW ``(U, B, m)``,
    XX ``(U, B, U B)``, c ``(m,)``, G ``(U B, m)``, r2 ``(m,)``.
    """

    X: jax.Array
    y: jax.Array
    XW: jax.Array
    XX: jax.Array
    c: jax.Array
    G: jax.Array
    r2: jax.Array


def form_block(static: Static, state: SGDState, X, a) -> Block:
    """Block of inputs ``X`` ``(U, B, d)`` of one replica with its Gram blocks against ``state.W``."""
    m = static.model
    dt = _dtype(static)
    B = static.batch_size
    U = block_size(B)
    X = X.reshape(U * B, m.d)
    y = mdl.teacher_output(m, state.theta, a, X).reshape(U, B)
    W0 = state.W
    if static.plain_sgd:
        XW = (X @ W0.T).reshape(U, B, m.m)
        XX = (X @ X.T).reshape(U, B, U * B)
    else:
        XW = jnp.zeros((U, B, m.m), dt)
        XX = jnp.zeros((U, B, U * B), dt)
    return Block(X, y, XW, XX, jnp.ones((m.m,), dt), jnp.zeros((U * B, m.m), dt), jnp.sum(W0 * W0, axis=-1))


def current_weights(static: Static, state: SGDState, blk: Block):
    """``W`` at the current step: ``c * W0 - G^T X`` (exactly ``W0`` before any step)."""
    if not static.plain_sgd:
        return state.W
    return blk.c[:, None] * state.W - blk.G.T @ blk.X


def run_steps(static: Static, state: SGDState, blk: Block, b, s0, s1, lr, a, steps, bound):
    """Steps ``b U + s0 .. b U + s1 - 1`` of one replica (``0 <= s0 <= s1 <= U``).

    Returns ``(state, blk)``.  Each step is the same code whatever ``s0, s1`` are, so a
    block advanced in pieces gives the same numbers as in one go.
    """
    m = static.model
    dt = _dtype(static)
    B = static.batch_size
    U = block_size(B)
    t0 = b * U
    if not static.plain_sgd:
        X = blk.X.reshape(U, B, m.d)

        def one_optax(s, st):
            return _step_x(static, st, X[s], t0 + s, lr, a, steps, bound)

        return lax.fori_loop(s0, s1, one_optax, state), blk

    act = m.student

    def one(s, carry):
        c, G, r2, diverged, diverged_step = carry
        # <x_sb, w_i(s)> = c_i XW[s,b,i] - sum_j XX[s,b,j] G[j,i]
        xw = c[None, :] * blk.XW[s] - blk.XX[s] @ G  # (B, m)
        r = jnp.sqrt(r2)
        z = xw / r[None, :]
        sz, dsz = act.value_and_derivative(z)
        e = sz @ r2 - blk.y[s]  # (B,) f(x) - f*(x)
        alpha = e[:, None] * (2.0 * sz - z * dsz)
        gamma = e[:, None] * (r[None, :] * dsz)
        e2 = e * e
        good = jnp.all(jnp.isfinite(e2) & (e2 <= bound))
        ok = good & ~diverged
        t = t0 + s
        lr_t = lr * schedule_factor(static.schedule, t, steps, static.schedule_n0).astype(dt)
        ca = jnp.where(ok, lr_t * jnp.sum(alpha, axis=0) / B, 0.0)  # (m,)
        cg = jnp.where(ok, lr_t / B, 0.0) * gamma  # (B, m)
        keep = 1.0 - ca
        xx_s = lax.dynamic_slice_in_dim(blk.XX[s], s * B, B, axis=1)  # (B, B): <x_sb, x_sb'>
        quad = jnp.sum(cg * (xx_s @ cg), axis=0)
        r2 = keep * keep * r2 - 2.0 * keep * jnp.sum(cg * xw, axis=0) + quad
        G = lax.dynamic_update_slice_in_dim(keep[None, :] * G, cg, s * B, axis=0)
        newly = ~good & ~diverged
        return (
            keep * c,
            G,
            r2,
            diverged | newly,
            jnp.where(newly, jnp.asarray(t, jnp.int32), diverged_step),
        )

    carry = (blk.c, blk.G, blk.r2, state.diverged, state.diverged_step)
    c, G, r2, diverged, diverged_step = lax.fori_loop(s0, s1, one, carry)
    return state._replace(diverged=diverged, diverged_step=diverged_step), blk._replace(c=c, G=G, r2=r2)


def observe(static: Static, state: SGDState, a):
    """Observables of one replica (:func:`model.observables`: the loss free of cancellation
    error in float32 too)."""
    return mdl.observables(static.model, state.W, a, state.theta, static.with_overlap)


class SGDRun(NamedTuple):
    """State of all replicas between chunks (batched over replicas, except ``b, s``).

    Every replica is ``s`` steps into block ``b`` (:class:`Block`; ``0 <= s < U``), i.e.
    at step ``b U + s``.  ``X_next`` ``(R, U, B, d)`` holds the inputs of block ``b + 1``,
    drawn one block ahead so that the draw (which depends only on the key) can run on a
    free core while the block in progress is advanced (software pipelining;
    benchmarks/NOTES.md, candidate 15).
    """

    states: SGDState
    blocks: Block
    X_next: jax.Array
    b: jax.Array
    s: jax.Array


@dataclasses.dataclass(frozen=True)
class SGD(Engine):
    """Online SGD in full dimension ``d`` (see the module docstring)."""

    name = "sgd"

    def memory(self, static: Static, R: int, T: int) -> dict[str, int]:
        """Weights ``(R, m, d)`` (:data:`WEIGHT_COPIES`, plus two optimizer moments unless
        plain SGD), a Haar teacher frame ``(R, P, d)`` for ``teacher.basis = "random"``, and
        the input blocks ``(R, U, B, d)`` with ``U = block_size(B)``: the block in progress,
        the next one, the one drawn while the current is advanced, and their working copies
        (:data:`INPUT_COPIES`)."""
        m, f = static.model, itemsize(static)
        opt = 0 if static.plain_sgd else 2
        parts = {"weights": int((WEIGHT_COPIES + opt) * R * m.m * m.d * f)}
        if m.basis == "random":
            parts["teacher frame"] = R * m.P * m.d * f
        B = static.batch_size
        parts["sgd input blocks"] = INPUT_COPIES * R * block_size(B) * B * m.d * f
        return parts

    def advice(self, top: str) -> str:
        return 'reduce replicas or data.d, or use engine "reduced"'

    def init(self, static: Static, reps: Replicas, grid: Grid) -> SGDRun:
        dt = _dtype(static)
        steps = grid.step[-1]
        lr = reps.lr.astype(dt)
        a = reps.a.astype(dt)
        states = jax.vmap(lambda s, l: init(static, s, reps.init_scale, l, steps))(reps.seed, lr)
        zero = jnp.asarray(0, jnp.int32)
        blocks = self._form(static, states, self._draw(static, states, zero), a)
        return SGDRun(states, blocks, self._draw(static, states, zero + 1), zero, zero)

    @staticmethod
    def _draw(static, states, b):
        return jax.vmap(lambda st: draw_block(static, st.key_data, b))(states)

    @staticmethod
    def _form(static, states, X, a):
        return jax.vmap(lambda st, x, aa: form_block(static, st, x, aa))(states, X, a)

    @staticmethod
    def _current(static, states, blocks):
        return jax.vmap(lambda st, bk: current_weights(static, st, bk))(states, blocks)

    def advance(self, static: Static, run: SGDRun, reps: Replicas, target: Target, grid: Grid) -> SGDRun:
        """Advance to ``min(target.step, position + target.budget)``.

        Whole blocks while the stop is past the block end (forming ``W``, the next
        block's Gram blocks, and drawing the block after it), then the remaining steps
        inside the block.  Every step is the same code wherever a chunk or a log point
        ends, so the trajectory does not depend on either (tested bitwise).
        """
        dt = _dtype(static)
        lr = reps.lr.astype(dt)
        a = reps.a.astype(dt)
        U = block_size(static.batch_size)
        pos = run.b * U + run.s
        # (written so that nothing overflows int32 when steps is close to 2^31)
        t1 = jnp.where(target.step - pos > target.budget, pos + target.budget, target.step)
        R = lr.shape[0]
        g = self.group_size(static, R)
        if g == R:
            states, blocks, X_next, b, s = self._advance_group(static, run, lr, a, t1, reps.diverge_bound, grid.step[-1])
            return SGDRun(states, blocks, X_next, b, s)

        # Replica groups one after another: each group's input blocks stay in the cache
        # while it is advanced (replicas are independent, so the numbers are the same).
        def split(x):
            return x.reshape((R // g, g) + x.shape[1:])

        per = (run.states, run.blocks, run.X_next, lr, a)
        groups = jax.tree.map(split, per)

        def one(grp):
            states, blocks, X_next, l, aa = grp
            sub = SGDRun(states, blocks, X_next, run.b, run.s)
            return self._advance_group(static, sub, l, aa, t1, reps.diverge_bound, grid.step[-1])

        states, blocks, X_next, b, s = lax.map(one, groups)
        states, blocks, X_next = jax.tree.map(lambda x: x.reshape((R,) + x.shape[2:]), (states, blocks, X_next))
        return SGDRun(states, blocks, X_next, b[0], s[0])

    def group_size(self, static: Static, R: int) -> int:
        """Replicas advanced together: the largest divisor of ``R`` whose input blocks (the
        block in progress and the one drawn ahead, ``2 U B d`` numbers per replica) fit in
        :data:`GROUP_BYTES`.  At ``d = 1024`` every replica fits (one group); at
        ``d = 16384`` the ``(R, U, B, d)`` block of 32 replicas is 64 MB, so the replicas are
        advanced a few at a time.  This bounds the working set (speed: benchmarks/NOTES.md,
        "`sgd` at d = 16384"); the numbers are those of one group bit for bit."""
        per = 2 * block_size(static.batch_size) * static.batch_size * static.model.d * np.dtype(static.dtype).itemsize
        fit = max(1, GROUP_BYTES // per)
        return max(k for k in range(1, R + 1) if R % k == 0 and k <= fit)

    def _advance_group(self, static: Static, run: SGDRun, lr, a, t1, bound, steps):
        """:meth:`advance` of one group of replicas (all replicas at the same step)."""
        U = block_size(static.batch_size)
        v_run = jax.vmap(
            lambda st, bk, b, s0, s1, l, aa: run_steps(static, st, bk, b, s0, s1, l, aa, steps, bound),
            in_axes=(0, 0, None, None, None, 0, 0),
        )

        def full_block(c: SGDRun) -> SGDRun:
            """Steps ``s .. U-1`` of block ``b``, then form ``W`` and block ``b + 1``; draw ``b + 2``."""
            # Unconditional draw, no lax.cond (benchmarks/NOTES.md, candidate 10).
            X_after = self._draw(static, c.states, c.b + 2)
            states, blocks = v_run(c.states, c.blocks, c.b, c.s, U, lr, a)
            states = states._replace(W=self._current(static, states, blocks))
            return SGDRun(states, self._form(static, states, c.X_next, a), X_after, c.b + 1, jnp.zeros_like(c.s))

        run = lax.while_loop(lambda c: t1 - c.b * U >= U, full_block, run)
        # The rest of the way to t1 inside block b (the same steps as a full block runs).
        s1 = t1 - run.b * U
        states, blocks = v_run(run.states, run.blocks, run.b, run.s, s1, lr, a)
        return states, blocks, run.X_next, run.b, s1

    def position(self, static: Static, run: SGDRun, grid: Grid):
        return run.b * block_size(static.batch_size) + run.s

    def observe(self, static: Static, run: SGDRun, reps: Replicas, grid: Grid, index) -> dict:
        """Observables at the current step, from ``W = c W0 - G^T X`` inside a block."""
        a = reps.a.astype(_dtype(static))
        now = run.states._replace(W=self._current(static, run.states, run.blocks))
        return jax.vmap(lambda st, aa: observe(static, st, aa))(now, a)

    def flags(self, run: SGDRun):
        return run.states.diverged, run.states.diverged_step

    def with_flags(self, run: SGDRun, diverged, diverged_step) -> SGDRun:
        return run._replace(states=run.states._replace(diverged=diverged, diverged_step=diverged_step))
