"""Measurements for the ``reduced`` and ``flow`` engines, printed as one table.

    PYTHONPATH=. python benchmarks/archive/engines_check.py speed [R] [steps_sgd] [steps_reduced]
    PYTHONPATH=. python benchmarks/archive/engines_check.py flow
    PYTHONPATH=. python benchmarks/archive/engines_check.py drift [steps] [R] [m]

``speed``: samples/s of ``sgd`` and ``reduced`` at d = 16384, m = P = 16, B = 1, float32,
in one process (compile excluded: each is run once to compile, then timed).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import scaling_sgd as ss
from scaling_sgd._src.engines import get_engine
from scaling_sgd._src.spec import build_spec


def _parts(spec):
    return spec.static, spec.replicas, spec.steps


def _cfg(**over):
    raw = {
        "teacher": {"P": 16, "beta": 1.0},
        "student": {"m": 16},
        "data": {"d": 16384},
        "train": {"steps": 1000, "lr": 1e-6, "seed": 0, "progress": False},
        "log": {"points": 4},
    }
    for k, v in over.items():
        t, key = k.split(".")
        raw.setdefault(t, {})[key] = v
    return ss.resolve_config(raw)


def rate(engine: str, steps: int, R: int, **over) -> float:
    """Samples/s (steps x B x R / wall) of a timed second run (the first compiles)."""
    cfg = _cfg(**{"train.engine": engine, "train.seed": list(range(R)), **over})
    simulate = get_engine(engine)
    static, reps, grid = _parts(
        build_spec(_cfg(**{"train.engine": engine, "train.seed": list(range(R)), **{**over, "train.steps": 7}}))
    )
    simulate(static, reps, grid)  # compile (same shapes: the step count is traced)
    static, reps, grid = _parts(build_spec(cfg))
    t0 = time.perf_counter()
    out = simulate(static, reps, grid)
    wall = time.perf_counter() - t0
    assert np.all(np.isfinite(out["loss"]))
    return steps * static.batch_size * R / wall


def speed(R=32, steps_sgd=2000, steps_red=200_000, repeats=3):
    """sgd and reduced alternately, ``repeats`` times each (the box is shared: the ratio of
    neighbouring measurements is more stable than either rate); prints each and the median."""
    ratios = []
    for _ in range(repeats):
        s = rate("sgd", steps_sgd, R, **{"train.steps": steps_sgd})
        r = rate("reduced", steps_red, R, **{"train.steps": steps_red})
        ratios.append(r / s)
        print(f"d=16384 m=P=16 B=1 R={R} float32: sgd {s:,.0f} samples/s, reduced {r:,.0f} samples/s, ratio {r / s:.1f}x")
    print(f"median ratio reduced/sgd: {np.median(ratios):.1f}x")


def flow_staircase(solver="auto", dtype="float64", steps=3_000_000, rtol=1e-6, atol=1e-9, seeds=1):
    """``flow``, P = m = 32, beta = 1, d = 10^6 (lr = 1: steps = tau): wall time (compile
    included, as a user sees it) and the staircase it produced."""
    from scaling_sgd.analysis.emergence import emergence_times

    cfg = _cfg(
        **{
            "train.engine": "flow",
            "teacher.P": 32,
            "student.m": 32,
            "data.d": 1_000_000,
            "train.lr": 1.0,
            "train.steps": int(steps),
            "train.dtype": dtype,
            "train.seed": list(range(int(seeds))),
            "flow.solver": solver,
            "flow.rtol": float(rtol),
            "flow.atol": float(atol),
            "log.points": 200,
        }
    )
    t0 = time.perf_counter()
    m = ss.run(cfg).metrics
    wall = time.perf_counter() - t0
    t, cens = emergence_times(m["step"], m["skill"], 0.5)
    print(
        f"flow P=m=32 d=1e6 solver={solver} {dtype} rtol={rtol}: wall {wall:.1f}s (compile included), "
        f"solver steps {m['solver_steps'].tolist()}, learned {int((~cens).sum())}/{cens.size}, "
        f"loss start {m['loss'][0, 0]:.4f} end {m['loss'][0, -1]:.3e}, diverged {m['diverged'].tolist()}"
    )
    print("  emergence tau/1e5:", np.round(t[0] / 1e5, 2).tolist())
    return m


def drift(steps=10_000_000, R=4, m=3):
    """Float32 rounding (re-compressions included) of ``reduced`` over a long run.

    The same chain is run in float32 and in float64 on the *same* random numbers (the
    float64 run draws its normals in float32 and casts them), at a small case that learns
    fast (d = 48, P = 3, odd activation, lr = 5e-4) and then stays at its fixed point
    (``m = 3``: exact fit, the noise vanishes; ``m = 2``: a loss floor, so the SGD noise and
    the re-compressions go on forever).  The paired difference of the Gram observables is pure float32 rounding; it
    stays bounded when nothing drifts.  Prints it at each decade of steps.
    """
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    normal = jax.random.normal

    def normal_f32(key, shape=(), dtype=jnp.float32):
        return normal(key, shape, jnp.float32).astype(dtype)

    jax.random.normal = normal_f32
    over = {
        "data.d": 48,
        "teacher.P": 3,
        "student.m": int(m),
        "teacher.activation": {1: 0.6, 3: 0.8},
        "student.init_scale": 0.5,
        "train.engine": "reduced",
        "train.lr": 5e-4,
        "train.steps": int(steps),
        "train.seed": list(range(int(R))),
        "log.points": 60,
        "log.overlap": True,
    }
    t0 = time.perf_counter()
    m32 = ss.run(_cfg(**over)).metrics
    m64 = ss.run(_cfg(**{**over, "train.dtype": "float64"})).metrics
    wall = time.perf_counter() - t0
    jax.random.normal = normal
    ok = ~(m32["diverged"] | m64["diverged"])
    dn = np.max(np.abs(m32["norm2"][ok] / m64["norm2"][ok] - 1.0), axis=(0, 2))
    dm = np.max(np.abs(m32["overlap"][ok] - m64["overlap"][ok]), axis=(0, 2, 3))
    dl = np.max(np.abs(m32["loss"][ok] - m64["loss"][ok]), axis=0)
    print(f"reduced float32 vs float64, same random numbers, m={int(m)}, {int(steps):,} steps x {int(R)} replicas ({wall:.0f}s);")
    print(
        f"  diverged: {m32['diverged'].tolist()} {m64['diverged'].tolist()}; loss at end {np.round(m64['loss'][:, -1], 4).tolist()}"
    )
    for k in range(1, len(m32["step"])):
        st = int(m32["step"][k])
        if k == len(m32["step"]) - 1 or int(m32["step"][k + 1]) >= 10 ** (int(np.log10(st)) + 1) > st:
            print(
                f"  step {st:>12,}  max|r2_32/r2_64 - 1| {dn[k]:.2e}  max|M_32 - M_64| {dm[k]:.2e}  max|L_32 - L_64| {dl[k]:.2e}"
            )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "speed"
    if what == "speed":
        speed(*[int(float(a)) for a in sys.argv[2:]])
    elif what == "drift":
        drift(*[int(float(a)) for a in sys.argv[2:]])
    elif what == "flow":
        flow_staircase(*sys.argv[2:4], *[float(a) for a in sys.argv[4:]])
