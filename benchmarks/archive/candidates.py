"""Each optimisation candidate of the ``sgd`` engine against its alternative, interleaved
in one process (medians of rounds): the A/B table of benchmarks/NOTES.md.

    PYTHONPATH=. python benchmarks/archive/candidates.py [--rounds 5]

Config: d=1024, m=P=32, B=1, 32 replicas, float32, h4 (docs/model.md §5).  The per-step
variants are a compact unblocked engine (one draw of ``(B, d)`` per step from
``fold_in(key, t)``, update of ``W`` every step).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import scaling_sgd as ss
from scaling_sgd._src import bench
from scaling_sgd._src import model as mdl
from scaling_sgd._src.bench import gaussian_rate
from scaling_sgd._src.engines import sgd
from scaling_sgd._src.spec import build_spec

D, M, P, B, R = 1024, 32, 32, 1, 32


def _parts(spec):
    return spec.static, spec.replicas, spec.steps


def _cfg(steps, points=2, **over):
    raw = {
        "teacher": {"P": P, "basis": over.pop("basis", "canonical")},
        "student": {"m": M},
        "data": {"d": D},
        "train": {"steps": steps, "lr": 1e-6, "batch_size": B, "seed": list(range(R)), "progress": False},
        "log": {"points": points},
    }
    return ss.resolve_config(raw)


def per_step_runner(static, steps, grad="hand", teacher="slice"):
    """The unblocked per-step engine: ``fori_loop`` over steps of ``vmap`` over replicas."""
    model = static.model

    def one(W, key, theta, a, lr, t):
        x = jax.random.normal(jax.random.fold_in(key, t), (B, D), jnp.float32)
        u = x[:, :P] if teacher == "slice" else x @ theta.T
        y = model.teacher(u) @ a
        if grad == "hand":
            r2 = jnp.sum(W * W, axis=-1)
            alpha, gamma, _ = mdl.per_sample_grad_coeffs(model, None, r2, x @ W.T, y)
            g = (jnp.sum(alpha, axis=0) / B)[:, None] * W + (gamma.T @ x) / B
        else:
            g = jax.grad(lambda W: 0.5 * jnp.mean((mdl.student_output(model, W, x) - y) ** 2))(W)
        return W - lr * g

    @jax.jit
    def run(W, keys, theta, a, lr):
        body = jax.vmap(one, in_axes=(0, 0, None, 0, 0, None))
        return lax.fori_loop(0, steps, lambda t, W: body(W, keys, theta, a, lr, t), W)

    W = jax.random.normal(jax.random.PRNGKey(0), (R, M, D), jnp.float32) * (0.1 / np.sqrt(D))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(R, dtype=jnp.uint32))
    theta = jnp.eye(P, D, dtype=jnp.float32)
    a = jnp.full((R, P), 1 / np.sqrt(P), jnp.float32)
    lr = jnp.full((R,), 1e-6, jnp.float32)
    return lambda: run(W, keys, theta, a, lr).block_until_ready()


def engine_runner(cfg, **module_overrides):
    """The blocked engine, compiled afresh with module constants overridden."""
    static, reps, log_steps = _parts(build_spec(cfg))
    saved = {k: getattr(sgd, k) for k in module_overrides}
    for k, v in module_overrides.items():
        setattr(sgd, k, v)
    f = jax.jit(sgd.run_compiled.__wrapped__, static_argnums=0)
    args = (
        static,
        jnp.asarray(reps.seed, jnp.uint32),
        jnp.asarray(reps.lr, jnp.float32),
        jnp.asarray(reps.a, jnp.float32),
        0.1,
        1e8,
        jnp.asarray(log_steps, jnp.int32),
    )
    jax.block_until_ready(f(*args))  # compile with the overrides in place
    for k, v in saved.items():
        setattr(sgd, k, v)
    return lambda: jax.block_until_ready(f(*args))


def _draw_block_default_layout(static, key_data, b):
    """``sgd.draw_block`` in JAX's default (partitionable) threefry layout (candidate 14)."""
    U = sgd.block_size(static.batch_size)
    with jax.threefry_partitionable(True):
        return jax.random.normal(jax.random.fold_in(key_data, b), (U, static.batch_size, static.model.d), jnp.float32)


def sliced_draw_loop(n: int, loops: int, partitionable: bool):
    """The sliced bound of candidate 13: each chunk consumed as
    ``acc + optimization_barrier(x)[:256]``, which XLA reduces to 256 normals per chunk."""

    def draw(k):
        def body(i, acc):
            with jax.threefry_partitionable(partitionable):
                x = jax.random.normal(jax.random.fold_in(k, i), (n,), jnp.float32)
            return acc + lax.optimization_barrier(x)[:256]

        return lax.fori_loop(0, loops, body, jnp.zeros((256,), jnp.float32))

    return jax.jit(draw)


def measure(variants: dict, samples: dict, rounds: int) -> dict:
    for fn in variants.values():
        fn()
    rates = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            rates[k].append(samples[k] / (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in rates.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2048)
    args = ap.parse_args()
    steps, rounds = args.steps, args.rounds
    static, _, _ = _parts(build_spec(_cfg(steps)))
    n = steps * B * R
    out = {}
    out["gaussian_bound_samples_per_s"] = gaussian_rate(repeats=rounds)["normals_per_s"] / D

    v = {
        "per-step, hand gradient, teacher slice": per_step_runner(static, steps, "hand", "slice"),
        "per-step, jax.grad": per_step_runner(static, steps, "autodiff", "slice"),
        "per-step, teacher matmul": per_step_runner(static, steps, "hand", "matmul"),
        "blocked U=32 (engine)": engine_runner(_cfg(steps)),
        "blocked U=32, random basis (matmul teacher)": engine_runner(_cfg(steps, basis="random")),
        "blocked U=8": engine_runner(_cfg(steps), SAMPLES_PER_BLOCK=8),
        "blocked U=16": engine_runner(_cfg(steps), SAMPLES_PER_BLOCK=16),
        "blocked U=64": engine_runner(_cfg(steps), SAMPLES_PER_BLOCK=64),
        "blocked U=32, 200 log points": engine_runner(_cfg(steps, points=200)),
        "blocked U=32, inputs in the default threefry layout": engine_runner(_cfg(steps), draw_block=_draw_block_default_layout),
    }
    out["samples_per_s"] = measure(v, {k: n for k in v}, rounds)
    out["ratio_to_gaussian_bound"] = {k: r / out["gaussian_bound_samples_per_s"] for k, r in out["samples_per_s"].items()}

    key = jax.random.PRNGKey(0)
    prng = {}
    for impl in ("threefry2x32", "rbg", "unsafe_rbg"):
        k = jax.random.key(0, impl=impl)
        f = jax.jit(lambda k: jax.random.normal(k, (1 << 22,), jnp.float32))
        f(k).block_until_ready()
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            f(k).block_until_ready()
            ts.append(time.perf_counter() - t0)
        prng[impl] = (1 << 22) / float(np.median(ts))
    del key
    out["prng_normals_per_s"] = prng

    # candidate 13: the sliced consumer vs every number consumed, both threefry layouts
    n, loops = 1 << 20, 8
    draws = {}
    for part in (True, False):
        layout = "partitionable" if part else "non-partitionable"
        draws[f"sliced bound, {layout}"] = sliced_draw_loop(n, loops, part)
        draws[f"accumulated, {layout}"] = bench._draw_loop(n, loops, "accumulated", part)
    draw_fns = {k: (lambda f=f: f(key0).block_until_ready()) for k, f in draws.items()}
    key0 = jax.random.PRNGKey(0)
    out["normals_per_s_by_consumer"] = measure(draw_fns, {k: n * loops for k in draws}, rounds)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
