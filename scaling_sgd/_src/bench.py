"""``scaling-sgd bench``: throughput of the engines against bounds measured in-process.

For each reference config (docs/model.md §5) it reports samples/s (``steps x B x replicas``
per second, median of timed repeats after a warm-up call), the compile time (first call
minus the median repeat), and the peak memory; for ``sgd`` also the ratio to two bounds
measured in the same process:

* Gaussian bound: the rate at which JAX draws ``N(0, 1)`` float32 numbers on the device
  (``jax.random.normal`` in a device loop over chunks, every number consumed, the
  fastest of a few chunk sizes, both threefry counter layouts and two consumers, see
  :func:`gaussian_rate`), divided by ``d``: fresh input is irreducible for ``sgd``.
* matmul bound: the float32 matrix-multiply rate of the device (a square GEMM), divided by
  ``4 d m`` flops per sample (``<x, w_i>`` and the update of ``W``).

and the ratio to a plain per-step NumPy loop of the same math over the same replicas (the
program a user would write first).  Timings on a shared machine are noisy: the bounds are
re-measured next to each case and every figure is a median of repeats.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import config as cfgmod
from .engines import sgd as sgd_engine
from .engines.driver import simulate
from .environment import peak_rss_bytes
from .files import atomic_write_json
from .hermite import hermite_he
from .progress import NoProgress
from .runner import precision
from .spec import build_spec

__all__ = ["main", "run_bench", "gaussian_rate", "matmul_rate", "numpy_sgd"]


# -- bounds ---------------------------------------------------------------------------
def _median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


@functools.cache
def _draw_loop(n: int, loops: int, how: str, partitionable: bool = True):
    """Compiled draw of ``loops`` chunks of ``n`` normals (cached: the bound is re-measured
    next to every case without recompiling).

    ``how``: "accumulated" adds each chunk into a carried ``(n,)`` buffer (every number
    is transformed and written, as an engine that multiplies its inputs needs);
    "summed" reduces each chunk to a scalar (every number is transformed, none written);
    "single" is one plain call for ``n`` numbers.  Both loop forms consume every number:
    a consumer that keeps only a slice lets XLA sink the slice into the ``erf_inv``
    fusion and transform only the kept numbers, which overstates the rate
    (benchmarks/NOTES.md, candidate 13).
    """

    def normal(k, shape):
        with jax.threefry_partitionable(partitionable):
            return jax.random.normal(k, shape, jnp.float32)

    if how == "single":
        return jax.jit(lambda k: normal(k, (n,)))

    def draw(k):
        def body(i, acc):
            x = normal(jax.random.fold_in(k, i), (n,))
            return acc + x if how == "accumulated" else acc + jnp.sum(x)

        acc0 = jnp.zeros((n,) if how == "accumulated" else (), jnp.float32)
        return lax.fori_loop(0, loops, body, acc0)

    return jax.jit(draw)


def gaussian_rate(repeats: int = 5, chunks=(1 << 18, 1 << 20), total: int = 1 << 23) -> dict:
    """``N(0,1)`` float32 numbers per second drawn by ``jax.random.normal`` on the device.

    Draws ``total`` numbers in a compiled loop over chunks (a fresh key per chunk), for a
    few chunk sizes, with threefry2x32 in both counter layouts (``partitionable`` true,
    JAX's default, and false, which the ``sgd`` engine uses), each chunk either
    accumulated into a buffer or summed (:func:`_draw_loop`).  The bound is the fastest
    of all, so it is an upper bound for any consumer of ``jax.random.normal``.  Also
    reports one plain ``jax.random.normal(key, (total,))`` call (default layout), which
    pays for a fresh output buffer and is usually slower.
    """
    key = jax.random.PRNGKey(0)
    rates = {}
    for part in (True, False):
        for n in chunks:
            loops = max(1, total // n)
            for how in ("summed", "accumulated"):
                f = _draw_loop(n, loops, how, part)
                f(key).block_until_ready()
                name = f"{how} 2^{int(math.log2(n))} {'partitionable' if part else 'non-partitionable'}"
                rates[name] = n * loops / _median_time(lambda f=f: f(key).block_until_ready(), repeats)
    single = _draw_loop(total, 0, "single", bool(jax.config.jax_threefry_partitionable))
    single(key).block_until_ready()
    single_rate = total / _median_time(lambda: single(key).block_until_ready(), repeats)
    return {"normals_per_s": max(rates.values()), "per_method": rates, "single_call_normals_per_s": single_rate}


@functools.cache
def _products_loop(R: int, K: int, d: int, m: int, loops: int):
    """Compiled loop of the ``sgd`` engine's ``O(d)`` products for ``loops`` blocks of
    ``K = U B`` samples and ``R`` replicas: ``X W^T``, ``X X^T`` and ``W <- c W - G^T X``,
    each feeding the next block as in the engine (``G`` from the two Gram blocks, ``W``
    from ``G``).  ``X`` alternates between two buffers so that no product is
    loop-invariant.
    """

    def run(X1, X2, W, G):
        def body(i, c):
            X1, X2, W, G = c
            XW = jnp.einsum("rkd,rmd->rkm", X1, W)
            XX = jnp.einsum("rkd,rld->rkl", X1, X1)
            W = 0.999 * W - 1e-3 * jnp.einsum("rkm,rkd->rmd", G, X1)
            G = 0.5 * G + 1e-3 * (XW + jnp.mean(XX, axis=-1, keepdims=True))
            return X2, X1, W, G

        return lax.fori_loop(0, loops, body, (X1, X2, W, G))[2]

    return jax.jit(run)


def products_time(R: int, K: int, d: int, m: int, repeats: int = 5, loops: int = 16) -> float:
    """Seconds per sample of the ``sgd`` engine's block products alone
    (:func:`_products_loop`): ``4 d m + 2 d K`` flops per sample in batched
    ``(K x d) (d x m)`` shapes, threaded as the backend threads them."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(2), 4)
    X1 = jax.random.normal(k1, (R, K, d), jnp.float32)
    X2 = jax.random.normal(k2, (R, K, d), jnp.float32)
    W = jax.random.normal(k3, (R, m, d), jnp.float32) / math.sqrt(d)
    G = jax.random.normal(k4, (R, K, m), jnp.float32)
    f = _products_loop(R, K, d, m, loops)
    f(X1, X2, W, G).block_until_ready()
    return _median_time(lambda: f(X1, X2, W, G).block_until_ready(), repeats) / (loops * R * K)


@functools.cache
def _square(n: int):
    return jax.jit(lambda a: a @ a)


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """float32 flop/s of an ``n x n`` by ``n x n`` matrix product on the device."""
    A = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = _square(n)
    f(A).block_until_ready()
    return 2.0 * n**3 / _median_time(lambda: f(A).block_until_ready(), repeats)


# -- the NumPy baseline -----------------------------------------------------------------
def _np_value_and_derivative(coeffs, z):
    """``sigma(z), sigma'(z)`` for ``sigma = sum_j c_j He_j / sqrt(j!)`` (NumPy)."""
    s = np.zeros_like(z)
    ds = np.zeros_like(z)
    hes = hermite_he(z, len(coeffs) - 1)
    for j, c in enumerate(coeffs):
        if c != 0.0:
            norm = c / math.sqrt(math.factorial(j))
            s += np.float32(norm) * hes[j]
            if j >= 1:
                ds += np.float32(norm * j) * hes[j - 1]
    return s, ds


def numpy_sgd(static, reps, steps: int, seed: int = 0):
    """The plain per-step NumPy loop of the ``sgd`` engine's math (float32, canonical
    teacher, all replicas at once as batched matrix products).  Returns the final ``W``
    ``(R, m, d)``."""
    mdl = static.model
    R, B, d, m, P = reps.R, static.batch_size, mdl.d, mdl.m, mdl.P
    rng = np.random.default_rng(seed)
    f32 = np.float32
    W = rng.standard_normal((R, m, d), dtype=f32) * f32(reps.init_scale / math.sqrt(d))
    a = reps.a.astype(f32)[:, None, :]
    lr = reps.lr.astype(f32)[:, None, None]
    cs, ct = mdl.student.coeffs, mdl.teacher.coeffs
    for _ in range(steps):
        x = rng.standard_normal((R, B, d), dtype=f32)
        y = np.sum(_np_value_and_derivative(ct, x[..., :P])[0] * a, axis=-1)  # (R, B)
        r2 = np.sum(W * W, axis=-1)  # (R, m)
        r = np.sqrt(r2)
        z = (x @ W.transpose(0, 2, 1)) / r[:, None, :]  # (R, B, m)
        s, ds = _np_value_and_derivative(cs, z)
        e = np.sum(s * r2[:, None, :], axis=-1) - y  # (R, B)
        alpha = e[..., None] * (2 * s - z * ds)
        gamma = e[..., None] * (r[:, None, :] * ds)
        W = W * (1 - lr * alpha.mean(axis=1)[..., None]) - (lr / B) * (gamma.transpose(0, 2, 1) @ x)
    return W


# -- cases -----------------------------------------------------------------------------
def _config(d, P, m, B, R, steps, engine="sgd", **extra):
    raw = {
        "teacher": {"P": P, "beta": extra.pop("beta", 1.0)},
        "student": {"m": m},
        "data": {"d": d},
        "train": {
            "engine": engine,
            "steps": steps,
            "batch_size": B,
            "lr": extra.pop("lr", 1e-6),
            "seed": list(range(R)),
            "progress": False,
            "dtype": "float32",
        },
        "log": {"points": extra.pop("points", 2)},
    }
    for k, v in extra.items():
        cfgmod.set_key(raw, k.replace("__", "."), v)
    return cfgmod.resolve(raw)


def _memory() -> dict:
    out = {"max_rss_mb": peak_rss_bytes() / 2**20}
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def time_engine(cfg: dict, repeats: int) -> dict:
    """Compile time, samples/s and memory of one engine on one resolved config."""
    spec = build_spec(cfg)
    engine, static, reps, log_steps = spec.engine, spec.static, spec.replicas, spec.steps
    t0 = time.perf_counter()
    out = simulate(engine, static, reps, log_steps)
    first = time.perf_counter() - t0
    run_s = _median_time(lambda: simulate(engine, static, reps, log_steps), repeats)
    samples = float(log_steps[-1]) * static.batch_size * reps.R
    return {
        "engine": engine.name,
        "d": static.model.d,
        "P": static.model.P,
        "m": static.model.m,
        "B": static.batch_size,
        "replicas": reps.R,
        "steps": int(log_steps[-1]),
        "run_s": run_s,
        "compile_s": max(first - run_s, 0.0),
        "samples_per_s": samples / run_s,
        "diverged": int(np.sum(out["diverged"])),
        "final_loss_median": float(np.median(out["loss"][:, -1])),
        "memory": _memory(),
        "_out": out,
        "_static": static,
        "_reps": reps,
    }


def _sgd_case(name, d, P, m, B, R, steps, repeats, numpy_steps, note=""):
    cfg = _config(d, P, m, B, R, steps)
    res = time_engine(cfg, repeats)
    gauss = gaussian_rate(repeats=repeats)
    mm = matmul_rate(repeats=repeats)
    K = sgd_engine.block_size(B) * B
    t_products = products_time(R, K, d, m, repeats=repeats)
    flops = 4.0 * d * m + 2.0 * d * K  # per sample: X W^T, G^T X and X X^T
    res["name"] = name
    res["bounds"] = {
        "gaussian_samples_per_s": gauss["normals_per_s"] / d,
        "gaussian_single_call_samples_per_s": gauss["single_call_normals_per_s"] / d,
        "matmul_samples_per_s": mm / (4.0 * d * m),
        # a model of the engine: its draws and its block products back to back, each timed
        # alone (not a strict bound: the engine overlaps the next draw with the products)
        "draws_and_products_samples_per_s": 1.0 / (d / gauss["normals_per_s"] + t_products),
        # the same model with the products at the square-GEMM rate: what this algorithm
        # could reach here if its small batched products ran as fast as one big GEMM
        "draws_and_products_at_gemm_rate_samples_per_s": 1.0 / (d / gauss["normals_per_s"] + flops / mm),
        "products_samples_per_s": 1.0 / t_products,
        "products_flop_per_s": flops / t_products,
        "normals_per_s": gauss["normals_per_s"],
        "normals_per_s_by_method": gauss["per_method"],
        "matmul_flop_per_s": mm,
    }
    res["ratios"] = {
        "to_gaussian_bound": res["samples_per_s"] / res["bounds"]["gaussian_samples_per_s"],
        "to_matmul_bound": res["samples_per_s"] / res["bounds"]["matmul_samples_per_s"],
        "to_draws_and_products": res["samples_per_s"] / res["bounds"]["draws_and_products_samples_per_s"],
    }
    if numpy_steps:
        static, reps = res["_static"], res["_reps"]
        numpy_sgd(static, reps, 2)  # warm-up (allocations)
        t_np = _median_time(lambda: numpy_sgd(static, reps, numpy_steps), max(1, repeats // 2))
        res["numpy_samples_per_s"] = numpy_steps * B * R / t_np
        res["ratios"]["vs_numpy"] = res["samples_per_s"] / res["numpy_samples_per_s"]
    if note:
        res["note"] = note
    return res


class _CompileClock(NoProgress):
    """A progress meter that keeps the seconds from "compiling" to the run's start: the
    compile time of the driver's programs (:func:`.engines.driver.simulate`)."""

    def compiling(self):
        self.t = time.perf_counter()

    def start(self, *args, **kwargs):
        self.seconds = time.perf_counter() - self.t


def compile_seconds(engine: str, d: int = 256, Pm: int = 8, R: int = 4) -> float:
    """Seconds to compile one engine's programs at ``d``, ``P = m = Pm``, ``R`` replicas,
    float32: cold in a process that has not compiled them (the on-disk cache is not used
    unless JAX was configured with one)."""
    spec = build_spec(_config(d, Pm, Pm, 1, R, 100, engine=engine, points=20))
    clock = _CompileClock()
    simulate(spec.engine, spec.static, spec.replicas, spec.steps, clock)
    return clock.seconds


def _public(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def run_bench(quick: bool = False, stream=None, sizes: dict | None = None) -> dict:
    """Run every case; return the JSON-ready report.  ``sizes`` overrides step counts
    (for tests)."""
    S = {
        "repeats": 3 if quick else 5,
        "b1_steps": 1024 if quick else 8192,
        "b32_steps": 64 if quick else 512,
        "numpy_steps": 100 if quick else 400,
        "big_d": 4096 if quick else 16384,
        "big_sgd_steps": 128 if quick else 512,
        "big_R": 8 if quick else 32,
        "reduced_steps": 4096 if quick else 65536,
        "flow_d": 10_000 if quick else 1_000_000,
        "flow_Pm": 8 if quick else 32,
    }
    S.update(sizes or {})
    rep = S["repeats"]

    def say(msg):
        print(msg, file=stream or sys.stdout, flush=True)

    dev = jax.devices()[0]
    report = {
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "backend": jax.default_backend(),
        "device": str(getattr(dev, "device_kind", dev)),
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "precision": "float32",
        "prng": str(jax.config.jax_default_prng_impl),
        "quick": bool(quick),
        "cases": [],
        "skipped": [],
    }
    say(
        f"scaling-sgd bench{' --quick' if quick else ''}: backend {report['backend']} ({report['device']}), jax {jax.__version__}, float32"
    )
    say("  samples/s = steps x batch x replicas / s (median of repeats); compile = first call - median run")
    say("  x gauss / x matmul: of the Gaussian-draw and matmul bounds; x draw+mm: of a model of the engine,")
    say("  its draws and its block products back to back, each timed alone here")
    header = (
        f"  {'case':<34} {'samples/s':>11} {'compile s':>9} {'x gauss':>8} {'x matmul':>9} {'x draw+mm':>10} "
        f"{'x numpy':>8} {'RSS MB':>7}"
    )
    say(header)

    def row(res):
        r = res.get("ratios", {})

        def f(k):
            return f"{r[k]:8.2f}" if k in r else f"{'':>8}"

        say(
            f"  {res['name']:<34} {res['samples_per_s']:11.4g} {res['compile_s']:9.2f} {f('to_gaussian_bound')} "
            f"{f('to_matmul_bound'):>9} {f('to_draws_and_products'):>10} {f('vs_numpy')} {res['memory']['max_rss_mb']:7.0f}"
        )

    cases = [
        ("sgd d=1024 m=P=32 B=1 R=32", dict(d=1024, P=32, m=32, B=1, R=32, steps=S["b1_steps"]), S["numpy_steps"]),
        ("sgd d=1024 m=P=32 B=32 R=32", dict(d=1024, P=32, m=32, B=32, R=32, steps=S["b32_steps"]), S["numpy_steps"] // 4),
    ]
    for name, kw, np_steps in cases:
        res = _sgd_case(name, repeats=rep, numpy_steps=np_steps, **kw)
        report["cases"].append(res)
        row(res)

    # reduced vs sgd at large d, same process
    d = S["big_d"]
    Rb = S["big_R"]
    sgd_big = _sgd_case(f"sgd d={d} m=P=16 B=1 R={Rb}", d, 16, 16, 1, Rb, S["big_sgd_steps"], rep, 0)
    report["cases"].append(sgd_big)
    row(sgd_big)
    red = time_engine(_config(d, 16, 16, 1, Rb, S["reduced_steps"], engine="reduced"), rep)
    red["name"] = f"reduced d={d} m=P=16 B=1 R={Rb}"
    red["ratios"] = {"vs_sgd": red["samples_per_s"] / sgd_big["samples_per_s"]}
    report["cases"].append(red)
    row(red)
    say(f"    reduced / sgd samples/s at d={d}: {red['ratios']['vs_sgd']:.1f}x (target >= 50x at d=16384)")

    # flow: a staircase to the width floor, wall time
    Pm, fd = S["flow_Pm"], S["flow_d"]
    # escape time of the last direction ~ d / (8 a_P) in flow time (docs/model.md §3);
    # run 20x past it with lr = 1 so that steps = flow time.
    a_last = (1.0 / Pm) / math.sqrt(sum(p**-2.0 for p in range(1, Pm + 1)))
    steps = int(20 * fd / (8 * a_last))
    # float64: at float32 the adaptive solver's error control meets rounding and the
    # weakest direction (a_P^2 ~ 6e-4 of the loss) can be lost.
    cfg = _config(fd, Pm, Pm, 1, 1, steps, engine="flow", lr=1.0, points=100, train__dtype="float64")
    spec = build_spec(cfg)
    t0 = time.perf_counter()
    with precision("float64"):
        out = simulate(spec.engine, spec.static, spec.replicas, spec.steps)
    wall = time.perf_counter() - t0
    learned = int(np.sum(out["skill"][0, -1] >= 0.5))
    res = {
        "name": f"flow d={fd:.0e} m=P={Pm} beta=1",
        "engine": "flow",
        "d": fd,
        "P": Pm,
        "m": Pm,
        "precision": "float64",
        "wall_s_with_compile": wall,
        "flow_time": float(steps),
        "directions_learned": learned,
        "final_loss": float(out["loss"][0, -1]),
        "memory": _memory(),
    }
    report["cases"].append(res)
    say(
        f"  {res['name']:<34} wall {wall:.1f} s (with compile), {learned}/{Pm} directions learned, final loss {res['final_loss']:.3g}"
    )

    from .engines import ENGINES

    report["compile_s"] = {name: compile_seconds(name) for name in ENGINES}
    say(
        "  compile, cold (d=256 m=P=8 R=4): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report["compile_s"].items())
        + ("" if jax.config.jax_compilation_cache_dir is None else " (an on-disk cache was configured: maybe warm)")
    )

    report["cases"] = [_public(c) for c in report["cases"]]
    head = report["cases"][0]
    report["targets"] = {
        "sgd_to_gaussian_bound": {"value": head["ratios"]["to_gaussian_bound"], "target": 0.8},
        "sgd_vs_numpy": {"value": head["ratios"]["vs_numpy"], "target": 5.0},
    }
    say(
        f"  target sgd d=1024 B=1: {head['ratios']['to_gaussian_bound']:.2f} of the Gaussian bound (>= 0.8), "
        f"{head['ratios']['vs_numpy']:.1f}x NumPy (>= 5)"
    )
    gb = head["bounds"]["gaussian_samples_per_s"]
    say(
        f"  its draws and products back to back would reach {head['bounds']['draws_and_products_samples_per_s'] / gb:.2f} "
        f"of the Gaussian bound ({head['bounds']['draws_and_products_at_gemm_rate_samples_per_s'] / gb:.2f} "
        "with the products at the square-GEMM rate)"
    )
    return report


def main(args) -> int:
    """CLI entry: ``scaling-sgd bench [--quick] [--json FILE]``."""
    report = run_bench(quick=bool(getattr(args, "quick", False)), sizes=getattr(args, "sizes", None))
    if getattr(args, "json", None):
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    sys.exit(main(p.parse_args()))
