"""Engine ``reduced``: online SGD on the Gram-matrix Markov chain (docs/model.md §2).

Exact in distribution for every ``d >= P + m + B``, at a cost independent of ``d``.

State of one replica: coordinates ``C`` ``(m, P + m + K B)`` of the students on an
orthonormal frame ``[theta_1..theta_P | q_1..q_{m+KB}]``, i.e. ``W = C [theta; Q]``, where
``q`` span the part of the students orthogonal to the teacher.  The frame itself is never
stored: every observable and every step only needs inner products, and those are
``C C^T`` and ``C[:, :P]``.

One step for a batch ``x_1..x_B``.  Because ``x_b ~ N(0, I_d)`` is independent of the past
and the frame is a function of the past,

* the coordinates ``u_b = <x_b, frame>`` are i.i.d. ``N(0, 1)``, ``(B, P + n)`` with ``n``
  the number of residual columns in use;
* the remainders ``x_b - proj(x_b)`` live in the ``(d - P - n)``-dimensional complement;
  their Gram matrix is ``Wishart(d - P - n, I_B)``, so on an orthonormal basis ``E`` of
  their span they have coordinates ``L`` ``(B, B)``, the Bartlett factor:
  ``L_jj = sqrt(chi^2_{d-P-n-j})`` (``j = 0..B-1``), ``L_jk ~ N(0,1)`` for ``j > k``.

``f(x_b)``, ``e_b``, ``alpha_bi``, ``gamma_bi`` follow from ``u_b C^T`` exactly as in
:func:`model.per_sample_grad_coeffs`, and ``w_i <- (1 - lr mean_b alpha_bi) w_i -
(lr/B) sum_b gamma_bi x_b`` becomes ``C <- (1 - lr abar) C - (lr/B) gamma^T u`` plus ``B``
new columns ``-(lr/B) gamma^T L`` on ``E``.

Re-compression, amortised.  The new columns are appended to a buffer of ``K`` steps
(``n = m + jB`` at buffer slot ``j``); every ``K`` steps (when ``t mod K == 0``, a property
of the absolute step, so chunking never changes the numbers) the residual block
``(m, m + KB)`` is re-compressed to ``(m, m)`` by ``R = qr(block^T, mode="r")^T``: an
orthogonal change of the residual basis, so no inner product changes.  With
``K ~ m / B`` the QR costs ``O(m^3)`` every ``m / B`` steps, i.e. ``O(m^2 B)`` per step,
and the matmuls ``O(B m (P + 2m))``: nothing depends on ``d``.  There is no stored basis,
hence nothing to re-orthogonalise: the rounding error of each re-compression is that of
a backward-stable QR of ``C`` itself.

Only plain SGD (with any learning-rate schedule) is exact here: the update must be a
rotation-equivariant function of the gradient (``optim.EXACT_IN_REDUCED``); the config
rejects the others.  ``teacher.basis`` is irrelevant in law (isotropy) and ignored.

Divergence: same semantics as ``sgd`` (a bad step is not applied, the replica freezes).

``d`` enters only as a number (the initial scale and the chi-square degrees of freedom),
and in the shapes only through ``K``: the engine's program takes ``d`` as a traced
number (:meth:`Reduced.program`), so a sweep over ``d`` compiles once.  The functions
here take it as ``d`` (default ``static.model.d``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .. import model as mdl
from ..errors import ConfigError
from ..lazy import lazy
from ..optim import require_plain_sgd
from ..rng import split_keys
from ..schedules import factor as schedule_factor
from .base import MAX_STEPS_INT32, Engine, Grid, Replicas, Static, Target, itemsize
from .base import dtype_of as _dtype

jax = lazy("jax")
jnp = lazy("jax.numpy")
lax = lazy("jax.lax")

# Arrays of the size of the coordinates and one block's noise that a compiled block holds at
# once: the loop carry and its update, and the block's normal draw, its masked coordinates,
# its Bartlett factors and their placed copy.  Measured: peak RSS less a tiny run's is 3.3 to
# 4.0 times the bytes of ``(R, m + 2 K B, P + m + K B)`` at P = m = 128 and 256, float32,
# with the log-point loss in float64 (benchmarks/memory_check.py).
WORKING_COPIES = 4.0

__all__ = [
    "Reduced",
    "ReducedRun",
    "ReducedState",
    "buffer_steps",
    "shape_dim",
    "chisquare",
    "coordinates",
    "init",
    "new_block",
    "step",
    "recompress",
    "observe",
]


class ReducedState(NamedTuple):
    """State of one replica.

    C: ``(m, P + m + K B)`` coordinates (columns past the residual columns in use are 0).
    u: ``(K, B, P + m + K B)`` the current block's sample coordinates (slot ``j`` masked to
    its ``P + m + j B`` frame columns).  L: ``(K, B, P + m + K B)`` the block's Bartlett
    factors, slot ``j``'s ``(B, B)`` factor placed on the ``B`` new columns
    ``P + m + j B ..`` and 0 elsewhere (so ``u + L`` are the coordinates of ``x`` on the
    frame extended by the step's new columns).
    key_data: PRNG key of the data stream.  diverged: bool.  diverged_step: int32.
    """

    C: jax.Array
    u: jax.Array
    L: jax.Array
    key_data: jax.Array
    diverged: jax.Array
    diverged_step: jax.Array


def buffer_steps(static: Static) -> int:
    """``K``: steps between re-compressions (static).

    ``K B ~ max(m, 8)`` keeps the amortised QR at ``O(m^2 B)`` per step; ``K`` is capped so
    the complement keeps dimension ``>= B`` at every slot (``d - P - m - (K-1) B >= B``).
    """
    m = static.model
    B = static.batch_size
    want = max(1, -(-max(m.m, 8) // B))
    cap = max(1, (m.d - m.P - m.m) // B)
    return int(min(want, cap))


def shape_dim(static: Static) -> int:
    """The smallest ``d`` with the shapes of ``static`` (the same :func:`buffer_steps`):
    ``min(d, P + m + K_max B)``, ``K_max`` the uncapped buffer."""
    m, B = static.model, static.batch_size
    return int(min(m.d, m.P + m.m + max(1, -(-max(m.m, 8) // B)) * B))


def _input_dim(static: Static, d):
    """``d`` as the code uses it: ``d`` if given (a traced int32), else ``static.model.d``."""
    return static.model.d if d is None else d


def _dof(d, n, dt):
    """``d - n`` (``n`` a numpy integer array) as floats of ``dt``, exact as integers
    (``d`` a Python int or a traced int32)."""
    if isinstance(d, (int, np.integer)):
        return jnp.asarray(d - n, dt)
    return (d - jnp.asarray(n, jnp.int32)).astype(dt)


def _bartlett_from(g, diag):
    """Bartlett factor ``tril(g, -1) + diag(diag)`` (``g`` square ``N(0,1)``, ``diag^2``
    chi-squares with ``df, df-1, ...``): ``L L^T ~ Wishart(df, I)``."""
    return jnp.tril(g, -1) + jnp.diag(diag)


def init(static: Static, seed, init_scale, d=None) -> ReducedState:
    """Initial coordinates with the law of ``w_i ~ N(0, (s^2/d) I_d)`` i.i.d.

    Teacher coordinates ``C[:, :P]`` i.i.d. ``N(0, s^2/d)``; residual block ``(s/sqrt(d))``
    times the Bartlett factor of ``m`` vectors in ``R^{d-P}``.
    """
    m = static.model
    dt = _dtype(static)
    K = buffer_steps(static)
    _, k_init, k_data = split_keys(seed)
    k_g, k_chi = jax.random.split(k_init)
    d = _input_dim(static, d)
    # s / sqrt(d) as XLA computes it for a constant d, s * (1 / sqrt(d)) (it rewrites a
    # division by a constant), so that a traced d gives the same numbers to the last bit;
    # the barrier keeps 1 / sqrt from becoming an rsqrt
    scale = jnp.asarray(init_scale, dt) * (1.0 / lax.optimization_barrier(jnp.sqrt(jnp.asarray(d, dt))))
    g = jax.random.normal(k_g, (m.m, m.P + m.m), dt)  # teacher coordinates | Bartlett off-diagonal
    M = g[:, : m.P] * scale
    diag = jnp.sqrt(chisquare(k_chi, _dof(d, m.P + np.arange(m.m), dt), dt))
    R = _bartlett_from(g[:, m.P :], diag) * scale
    B = static.batch_size
    C = jnp.concatenate([M, R, jnp.zeros((m.m, K * B), dt)], axis=1)
    u = jnp.zeros((K, B, C.shape[1]), dt)
    L = jnp.zeros((K, B, C.shape[1]), dt)
    return ReducedState(C, u, L, k_data, jnp.asarray(False), jnp.asarray(-1, jnp.int32))


_N_CANDIDATES = 2  # Marsaglia-Tsang proposals per round (acceptance >= 0.95 each)


def _chisquare_round(key, df, dtype):
    """One round of vectorised Marsaglia-Tsang proposals for ``chi^2_df = 2 Gamma(df/2)``.

    Returns ``(value, accepted)`` shaped like ``df``: ``value`` is the first accepted of
    ``_N_CANDIDATES`` i.i.d. proposals, so it is exactly ``chi^2_df`` given ``accepted``.
    ``df >= 1``; ``alpha = df/2 < 1`` is boosted: ``Gamma(alpha) = Gamma(alpha+1) U^(1/alpha)``.
    The uniforms are ``Phi(g)`` of standard normals, so one threefry call serves the round
    (one random call site to compile).
    """
    N = _N_CANDIDATES
    g = jax.random.normal(key, (2 * N + 1,) + df.shape, dtype)
    z, log_u, log_ub = g[:N], jax.scipy.special.log_ndtr(g[N : 2 * N]), jax.scipy.special.log_ndtr(g[2 * N])
    alpha = 0.5 * df
    boost = alpha < 1.0
    a1 = jnp.where(boost, alpha + 1.0, alpha)
    dd = a1 - 1.0 / 3.0
    # 1 / sqrt and / alpha as XLA computes them for a constant df (the barrier keeps
    # 1 / sqrt from becoming an rsqrt; a division by a constant becomes a product with its
    # reciprocal), so that a traced df draws the same numbers to the last bit
    c = 1.0 / lax.optimization_barrier(jnp.sqrt(9.0 * dd))
    dd_, c_ = dd[None], c[None]  # broadcast over the candidate axis
    v = (1.0 + c_ * z) ** 3
    v_pos = jnp.maximum(v, jnp.finfo(dtype).tiny)
    acc = (v > 0) & (log_u < 0.5 * z * z + dd_ - dd_ * v_pos + dd_ * jnp.log(v_pos))
    first = jnp.argmax(acc, axis=0)
    gam = dd * jnp.take_along_axis(v_pos, first[None], axis=0)[0]
    gam = jnp.where(boost, gam * jnp.exp(log_ub * (1.0 / lax.optimization_barrier(alpha))), gam)
    return 2.0 * gam, jnp.any(acc, axis=0)


def chisquare(key, df, dtype):
    """Exact ``chi^2_df`` draws (shape of ``df``, ``df >= 1``, may be traced).

    Marsaglia-Tsang rejection, vectorised: rounds of proposals until every entry has an
    accepted one (one round almost always: rejection ``<= 0.05^2`` per entry).  Used instead
    of ``jax.random.chisquare`` for its compile and run time.
    """

    def body(c):
        v, o, i = c
        nv, no = _chisquare_round(jax.random.fold_in(key, i), df, dtype)
        return jnp.where(o, v, nv), o | no, i + 1

    start = (jnp.zeros(df.shape, dtype), jnp.zeros(df.shape, bool), jnp.asarray(0, jnp.uint32))
    return lax.while_loop(lambda c: ~jnp.all(c[1]), body, start)[0]


def block_noise(static: Static, key_data, block, d=None):
    """All random numbers of the ``K`` steps of block ``block`` (steps ``block K ..``).

    Drawn at once, keyed by the absolute block index (so chunking never changes them).

    Returns:
        u ``(K, B, P + m + K B)``: slot ``j`` has i.i.d. ``N(0,1)`` on its first
        ``P + m + j B`` columns (the frame in use at that step) and 0 after.
        L ``(K, B, P + m + K B)``: Bartlett factors of ``Wishart(d - P - m - j B, I_B)``,
        slot ``j``'s placed on its new columns ``P + m + j B .. P + m + (j+1) B - 1``.
    """
    m = static.model
    dt = _dtype(static)
    B = static.batch_size
    K = buffer_steps(static)
    width = m.P + m.m + K * B
    k_u, k_chi = jax.random.split(jax.random.fold_in(key_data, block))
    n_used = m.P + m.m + B * np.arange(K)  # (K,) frame size at slot j
    mask = np.arange(width)[None, :] < n_used[:, None]  # (K, width)
    # one normal draw for the coordinates and the Bartlett off-diagonals
    g = jax.random.normal(k_u, (K, B, width + B), dt)
    u = g[:, :, :width] * jnp.asarray(mask[:, None, :], dt)
    df = _dof(_input_dim(static, d), n_used[:, None] + np.arange(B)[None, :], dt)  # (K, B)
    diag = jnp.sqrt(chisquare(k_chi, df, dt))
    L = jnp.tril(g[:, :, width:], -1) + diag[:, :, None] * jnp.eye(B, dtype=dt)[None]
    # place slot j's factor on its new columns: a product with a constant 0/1 matrix,
    # not a dynamic_update_slice inside the step (benchmarks/NOTES.md, candidate 21)
    place = (np.arange(width)[None, None, :] == (n_used[:, None] + np.arange(B)[None, :])[:, :, None]).astype(np.float64)
    return u, jnp.einsum("kbc,kcw->kbw", L, jnp.asarray(place, dt))


def recompress(static: Static, C):
    """Residual block ``(m, m + KB)`` -> ``(m, m)`` (then zero-padded), Gram unchanged.

    ``block = R Q^T`` with ``Q`` orthonormal columns: ``R = qr(block^T, mode="r")^T``.
    """
    P = static.model.P
    res = C[:, P:]
    r = jnp.linalg.qr(res.T, mode="r")  # (m, m) upper-triangular
    m = r.shape[0]
    return jnp.concatenate([C[:, :P], r.T, jnp.zeros((m, res.shape[1] - m), C.dtype)], axis=1)


def step(static: Static, state: ReducedState, t, lr, a, steps, bound) -> ReducedState:
    """One online-SGD step ``t`` (0-based, unbatched) of one replica on the Gram chain.

    Uses slot ``j = t mod K`` of the block's random numbers (``state.u``, ``state.L``,
    set by :func:`new_block` when ``j == 0``).
    """
    m = static.model
    dt = _dtype(static)
    B = static.batch_size
    K = buffer_steps(static)
    t = jnp.asarray(t, jnp.int32)
    j = t % K
    C = state.C
    u = lax.dynamic_index_in_dim(state.u, j, keepdims=False)  # (B, width)
    L = lax.dynamic_index_in_dim(state.L, j, keepdims=False)  # (B, width), 0 on u's columns
    xW = u @ C.T  # (B, m) = <x_b, w_i>
    y = m.teacher(u[:, : m.P]) @ a
    r2 = jnp.sum(C * C, axis=-1)
    alpha, gamma, e = mdl.per_sample_grad_coeffs(m, None, r2, xW, y)
    e2 = e * e
    ok = jnp.all(jnp.isfinite(e2) & (e2 <= bound)) & ~state.diverged
    lr_t = lr * schedule_factor(static.schedule, t, steps, static.schedule_n0).astype(dt)
    ca = lr_t * jnp.sum(alpha, axis=0) / B  # (m,)
    cg = (lr_t / B) * gamma  # (B, m)
    # x = u on the frame + L on the B new columns (the remainder outside the frame)
    C_new = (1.0 - ca)[:, None] * C - cg.T @ (u + L)
    C = jnp.where(ok, C_new, C)
    newly = ~ok & ~state.diverged
    return state._replace(
        C=C,
        diverged=state.diverged | newly,
        diverged_step=jnp.where(newly, t, state.diverged_step),
    )


def new_block(static: Static, states: ReducedState, t, noise=None, d=None) -> ReducedState:
    """Start block ``t // K`` for all replicas (batched states, outside ``vmap``):
    re-compress the residual block and draw the block's random numbers with ``noise``
    (default :func:`block_noise`; called as ``noise(static, key_data, block, d)``)."""
    K = buffer_steps(static)
    blk = jnp.asarray(t, jnp.int32) // K
    noise = noise or block_noise
    u, L = jax.vmap(lambda k: noise(static, k, blk, d))(states.key_data)
    C = jax.vmap(lambda c: recompress(static, c))(states.C)
    # frozen replicas stay bit-identical: no re-compression either
    C = jnp.where(states.diverged[:, None, None], states.C, C)
    return states._replace(C=C, u=u, L=L)


def coordinates(W, theta=None):
    """Coordinates ``C`` ``(m, P + m)`` of full weights ``W`` ``(m, d)`` on
    ``[theta; Q]`` (``Q`` an orthonormal basis of the residual span, ``C[:, P:]``
    lower-triangular).  ``theta`` ``(P, d)`` orthonormal, or an int ``P`` for the canonical
    frame.  ``C C^T = W W^T`` and ``C[:, :P] = W theta^T``."""
    if isinstance(theta, int):
        M, res = W[:, :theta], W[:, theta:]
    else:
        M = W @ theta.T
        res = W - M @ theta
    return jnp.concatenate([M, jnp.linalg.qr(res.T, mode="r").T], axis=1)


def with_coordinates(static: Static, state: ReducedState, C) -> ReducedState:
    """``state`` with its students replaced by coordinates ``C`` ``(m, P + m)``."""
    pad = state.C.shape[1] - C.shape[1]
    return state._replace(C=jnp.concatenate([C, jnp.zeros((C.shape[0], pad), C.dtype)], axis=1))


def observe(static: Static, state: ReducedState, a):
    """Observables of one replica: :func:`model.observables` of its coordinates ``C`` (the
    loss free of cancellation error in float32 too)."""
    C = state.C
    return mdl.observables(static.model, C, a, None, static.with_overlap)


class ReducedRun(NamedTuple):
    """State of all replicas between chunks: the replicas' :class:`ReducedState`
    (batched) and the step ``t`` they are at (a scalar shared by all replicas)."""

    states: ReducedState
    t: jax.Array


@dataclasses.dataclass(frozen=True)
class Reduced(Engine):
    """Online SGD on the Gram-matrix Markov chain (see the module docstring)."""

    name = "reduced"

    def memory(self, static: Static, R: int, T: int) -> dict[str, int]:
        """The coordinates and a block's sample coordinates and Bartlett factors,
        ``(R, m + 2 K B, P + m + K B)`` with ``K = buffer_steps``, times ``WORKING_COPIES``."""
        m, B = static.model, static.batch_size
        K = buffer_steps(static)
        n = m.P + m.m + K * B
        return {"reduced state": int(WORKING_COPIES * R * (m.m + 2 * K * B) * n * itemsize(static))}

    def advice(self, top: str) -> str:
        return "reduce replicas, train.batch_size, teacher.P or student.m"

    def check(self, cfg: dict) -> None:
        t, s, tr = cfg["teacher"], cfg["student"], cfg["train"]
        need = t["P"] + s["m"] + tr["batch_size"]
        d = cfg["data"]["d"]
        if d < need:
            raise ConfigError("data.d", f"= {d} is too small for engine 'reduced'; accepted: d >= P + m + batch_size = {need}")
        require_plain_sgd(cfg, "reduced")

    def block_noise(self, static: Static, key_data, block, d=None):
        """The random numbers of one block (:func:`block_noise`; a test may override it
        to build a deliberately wrong chain)."""
        return block_noise(static, key_data, block, d)

    def program(self, static: Static, reps: Replicas) -> tuple[Static, Replicas]:
        """``d`` as a traced number (:attr:`.base.Replicas.d`); the static ``d`` becomes
        :func:`shape_dim`, which only fixes ``K``.  A ``d`` past int32 stays static."""
        d = static.model.d
        if d > MAX_STEPS_INT32:
            return static, reps
        model = dataclasses.replace(static.model, d=shape_dim(static))
        return dataclasses.replace(static, model=model), dataclasses.replace(reps, d=np.int32(d))

    def init(self, static: Static, reps: Replicas, grid: Grid) -> ReducedRun:
        states = jax.vmap(lambda s: init(static, s, reps.init_scale, reps.d))(reps.seed)
        return ReducedRun(states, jnp.asarray(0, jnp.int32))

    def advance(self, static: Static, run: ReducedRun, reps: Replicas, target: Target, grid: Grid) -> ReducedRun:
        """Steps ``t .. t1 - 1``, ``t1 = min(target.step, t + target.budget)``; a block
        starts (re-compression and fresh random numbers) when ``t mod K == 0``.  The step
        loop is outside the replica ``vmap`` so that this is a real branch, not a select."""
        dt = _dtype(static)
        lr = reps.lr.astype(dt)
        a = reps.a.astype(dt)
        steps = grid.step[-1]
        K = buffer_steps(static)
        t1 = jnp.where(target.step - run.t > target.budget, run.t + target.budget, target.step)
        v_step = jax.vmap(lambda st, t, l, aa: step(static, st, t, l, aa, steps, reps.diverge_bound), in_axes=(0, None, 0, 0))

        def one(t, s):
            s = lax.cond(t % K == 0, lambda s: new_block(static, s, t, self.block_noise, reps.d), lambda s: s, s)
            return v_step(s, t, lr, a)

        return ReducedRun(lax.fori_loop(run.t, t1, one, run.states), t1)

    def position(self, static: Static, run: ReducedRun, grid: Grid):
        return run.t

    def observe(self, static: Static, run: ReducedRun, reps: Replicas, grid: Grid, index) -> dict:
        a = reps.a.astype(_dtype(static))
        return jax.vmap(lambda st, aa: observe(static, st, aa))(run.states, a)

    def flags(self, run: ReducedRun):
        return run.states.diverged, run.states.diverged_step

    def with_flags(self, run: ReducedRun, diverged, diverged_step) -> ReducedRun:
        return run._replace(states=run.states._replace(diverged=diverged, diverged_step=diverged_step))
