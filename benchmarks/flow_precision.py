"""The ``flow`` engine's float32 dynamics and tolerances against a float64 reference, from the
same initial students.

    python benchmarks/flow_precision.py run --P 256 --cases float64:1e-7 float64:1e-5 float32:1e-5 float32:1e-4
    python benchmarks/flow_precision.py compare --P 256 --ref float64:1e-7 [--json FILE]

A run of the engine in float32 draws its start in float32, so two runs of the same seed in
float32 and float64 start from different students and cannot be compared direction by
direction.  Here one float64 start (the engine's own, ``flow.init``, seed 0 of the flow
scaling setting: P = m, beta = 1, h4, d = 1e4, lr = 1e-4, to step 5e8) is integrated by the
engine's solver (``rkc``, or the solver a case names, with the engine's emergence event) in
each case (``[solver:]dtype:rtol``).  The float32 case starts from the float64 start rounded to float32, and runs with
x64 off, as a float32 run does.  Each case writes ``results/flow_precision/P{P}_{dtype}_rtol{rtol}.npz``
(loss and skill at the 200 log points, the located crossings, gradient evaluations, wall
time; an existing file is kept, so an interrupted sitting resumes case by case).

``compare`` prints, for each case against ``--ref``: the median and 90th-percentile relative
deviation of the emergence steps (directions both learned), the directions learned by only
one, and the median and largest relative deviation of the loss over the loss fit window (the 2nd to the
``max(P // 10, 4)``-th emergence of the reference, :func:`loss_fit_window`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "flow_precision"


def parse(case: str) -> tuple[str, str, float]:
    """``"[solver:]dtype:rtol"`` -> ``(solver, dtype, rtol)`` (solver default ``rkc``)."""
    parts = case.split(":")
    solver = parts[0] if len(parts) == 3 else "rkc"
    return solver, parts[-2], float(parts[-1])


def config(P: int, dtype: str, rtol: float, steps: float = 5e8, points: int = 200, solver: str = "rkc") -> dict:
    return {
        "teacher": {"P": P, "beta": 1.0, "activation": "h4"},
        "student": {"m": P},
        "data": {"d": 10_000},
        "train": {"engine": "flow", "steps": int(steps), "lr": 1e-4, "seed": 0, "dtype": dtype, "progress": False},
        "log": {"points": points, "overlap": False},
        "flow": {"solver": solver, "rtol": rtol, "atol": 1e-9},
    }


def case_path(P: int, dtype: str, rtol: float, solver: str = "rkc") -> Path:
    return OUT / f"P{P}_{'' if solver == 'rkc' else solver + '_'}{dtype}_rtol{rtol:.0e}.npz"


def start(P: int) -> np.ndarray:
    """The engine's float64 initial coordinates ``(m, P + m)`` of seed 0."""
    import jax

    import scaling_sgd as ss
    from scaling_sgd._src.engines import flow

    spec = ss.build_spec(ss.resolve_config(config(P, "float64", 1e-5)))
    with jax.enable_x64(True):
        return np.asarray(flow.init(spec.static, spec.replicas.seed[0], spec.replicas.init_scale))


def run_case(P: int, dtype: str, rtol: float, C0: np.ndarray, solver: str = "rkc") -> dict:
    """Integrate one case to every log point; the arrays ``compare`` reads."""
    import jax
    import jax.numpy as jnp

    import scaling_sgd as ss
    from scaling_sgd._src import model as mdl

    spec = ss.build_spec(ss.resolve_config(config(P, dtype, rtol, solver=solver)))
    engine, static, reps = spec.engine, spec.static, spec.replicas
    model = static.model
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        a = jnp.asarray(reps.a[0], dt)
        ts = jnp.asarray(float(reps.lr[0]) * np.asarray(spec.steps, np.float64), dt)  # constant schedule
        f, jac = engine._f(static, a)
        event = engine._event(static, a)
        solver = engine.solver
        obs = jax.jit(lambda C: mdl.observables(model, C, a))
        to = jax.jit(lambda s, j: solver.advance(f, jac, s, ts, j, jnp.asarray(2**30, jnp.int32), jnp.asarray(False), event))
        t0 = time.perf_counter()
        state = jax.jit(lambda C: solver.init(f, jac, C, ts, event))(jnp.asarray(C0, dt))
        loss, skill, fevals = [], [], []
        for j in range(ts.shape[0]):
            state = to(state, jnp.asarray(j, jnp.int32))
            o = obs(solver.current(state, j))
            loss.append(np.asarray(o["loss"], np.float64))
            skill.append(np.asarray(o["skill"], np.float64))
            fevals.append(int(state.n_fevals))
        cross = np.asarray(solver.crossings(state), np.float64) / float(reps.lr[0])
        wall = time.perf_counter() - t0
        return {
            "step": np.asarray(spec.steps, np.int64),
            "loss": np.array(loss),
            "skill": np.array(skill),
            "crossing_step": cross,
            "fevals": int(state.n_fevals),
            "fevals_at": np.array(fevals),  # gradient evaluations done by each log point
            "solver_steps": int(state.n_steps),
            "failed": bool(state.failed),
            "wall_s": wall,
        }


def compare(P: int, ref: str, cases: list[str]) -> list[dict]:
    from scaling_sgd.analysis.emergence import loss_fit_window

    def load(c):
        solver, dtype, rtol = parse(c)
        return dict(np.load(case_path(P, dtype, rtol, solver)))

    r = load(ref)
    lo, hi = loss_fit_window(r["crossing_step"])
    win = (r["step"] >= lo) & (r["step"] <= hi)
    rows = []
    for c in cases:
        x = load(c)
        tr, tx = r["crossing_step"], x["crossing_step"]
        both = np.isfinite(tr) & np.isfinite(tx) & (tr > 0)
        dev = np.abs(tx[both] / tr[both] - 1)
        ldev = np.abs(x["loss"][win] / r["loss"][win] - 1)
        rows.append(
            {
                "case": c,
                "gradient_evaluations": int(x["fevals"]),
                "solver_steps": int(x["solver_steps"]),
                "wall_s": float(x["wall_s"]),
                "learned_both": int(both.sum()),
                "learned_only_here": int((np.isfinite(tx) & ~np.isfinite(tr)).sum()),
                "learned_only_in_ref": int((np.isfinite(tr) & ~np.isfinite(tx)).sum()),
                "emergence_dev_median": float(np.median(dev)),
                "emergence_dev_p90": float(np.quantile(dev, 0.9)),
                "emergence_dev_max": float(dev.max()),
                "loss_window": [float(lo), float(hi)],
                "loss_dev_median_in_window": float(np.median(ldev)),
                "loss_dev_max_in_window": float(ldev.max()),
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "compare"])
    ap.add_argument("--P", type=int, default=256)
    ap.add_argument("--cases", nargs="+", default=["float64:1e-7", "float64:1e-5", "float32:1e-5", "float32:1e-4"])
    ap.add_argument("--ref", default="float64:1e-7")
    ap.add_argument("--json", default=None, help="also write the comparison here")
    args = ap.parse_args(argv)
    if args.what == "run":
        OUT.mkdir(parents=True, exist_ok=True)
        C0 = start(args.P)
        for c in args.cases:
            solver, dtype, rtol = parse(c)
            path = case_path(args.P, dtype, rtol, solver)
            if path.exists():
                print(f"{c}: kept {path.name}", flush=True)
                continue
            res = run_case(args.P, dtype, rtol, C0, solver)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **res)
            tmp.replace(path)
            print(f"{c}: {res['wall_s']:.1f} s, {res['fevals']} gradient evaluations, {res['solver_steps']} steps", flush=True)
        return 0
    rows = compare(args.P, args.ref, args.cases)
    print(f"P = m = {args.P}, against {args.ref}")
    for x in rows:
        print(
            f"  {x['case']:>14}: {x['gradient_evaluations']:6d} gradients, {x['wall_s']:7.1f} s, emergence dev median "
            f"{x['emergence_dev_median']:.1e} p90 {x['emergence_dev_p90']:.1e} max {x['emergence_dev_max']:.1e}, "
            f"learned both {x['learned_both']} only here {x['learned_only_here']} only ref {x['learned_only_in_ref']}, "
            f"loss dev in window median {x['loss_dev_median_in_window']:.1e} max {x['loss_dev_max_in_window']:.1e}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"P": args.P, "ref": args.ref, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
