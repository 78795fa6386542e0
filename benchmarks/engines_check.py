"""Measurements for the ``reduced`` and ``flow`` engines (issue 5), printed as one table.

    python benchmarks/engines_check.py speed [R] [steps_sgd] [steps_reduced]
    python benchmarks/engines_check.py flow
    python benchmarks/engines_check.py drift [steps]

``speed``: samples/s of ``sgd`` and ``reduced`` at d = 16384, m = P = 16, B = 1, float32,
in one process (compile excluded: each is run once to compile, then timed).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import scaling_sgd as ss
from scaling_sgd._src.engines import get_engine
from scaling_sgd._src.runner import build


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
    static, reps, grid = build(_cfg(**{"train.engine": engine, "train.seed": list(range(R)), **{**over, "train.steps": 7}}))
    simulate(static, reps, grid)  # compile (same shapes: the step count is traced)
    static, reps, grid = build(cfg)
    t0 = time.perf_counter()
    out = simulate(static, reps, grid)
    wall = time.perf_counter() - t0
    assert np.all(np.isfinite(out["loss"]))
    return steps * static.batch_size * R / wall


def speed(R=32, steps_sgd=2000, steps_red=200_000):
    s = rate("sgd", steps_sgd, R, **{"train.steps": steps_sgd})
    r = rate("reduced", steps_red, R, **{"train.steps": steps_red})
    print(f"d=16384 m=P=16 B=1 R={R} float32: sgd {s:,.0f} samples/s, reduced {r:,.0f} samples/s, ratio {r / s:.1f}x")


def flow_staircase(solver="auto", dtype="float64", steps=3_000_000, rtol=1e-6, atol=1e-9, seeds=1):
    """``flow``, P = m = 32, beta = 1, d = 10^6 (lr = 1: steps = tau): wall time (compile
    included, as a user sees it) and the staircase it produced."""
    from analysis.emergence import emergence_times

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
    m, meta = ss.run(cfg)
    wall = time.perf_counter() - t0
    t, cens = emergence_times(m["step"], m["skill"], 0.5)
    print(
        f"flow P=m=32 d=1e6 solver={solver} {dtype} rtol={rtol}: wall {wall:.1f}s (compile included), "
        f"solver steps {m['solver_steps'].tolist()}, learned {int((~cens).sum())}/{cens.size}, "
        f"loss start {m['loss'][0, 0]:.4f} end {m['loss'][0, -1]:.3e}, diverged {m['diverged'].tolist()}"
    )
    print("  emergence tau/1e5:", np.round(t[0] / 1e5, 2).tolist())
    return m


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "speed"
    if what == "speed":
        speed(*[int(float(a)) for a in sys.argv[2:]])
    elif what == "flow":
        flow_staircase(*sys.argv[2:4], *[float(a) for a in sys.argv[4:]])
