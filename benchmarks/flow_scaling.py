"""Wall time of the ``flow`` engine against P = m, for its solvers ``rkc`` (the default) and ``ros2``.

    python benchmarks/flow_scaling.py [--P 32 64 ...] [--solver rkc ros2] [--seeds 1]
        [--steps 5e8] [--rtol 1e-5] [--dtype float64] [--points 200] [--cap 600] [--out FILE.jsonl]

Every case is ``scaling-sgd run`` of the flow scaling setting (P = m, beta = 1, d = 1e4, h4,
``lr = 1e-4``, so ``steps = 5e8`` is ``tau = 5e4``) in a fresh child process, timed around
:func:`scaling_sgd.run` (compile included, interpreter start and imports not), and killed
after ``--cap`` seconds (reported as ``> cap``).  The run directory is kept under
``results/flow_scaling/`` for the analysis (``benchmarks/archive/flow_analysis.py``).  Each case
appends one JSON line with the wall time, the process CPU time (all threads), the 1-minute
load average before and after (the machine is shared: wall times are only comparable at
similar load), the solver's attempted steps and gradient evaluations, and the final losses.  Cases run one after another, never two
at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config(P: int, solver: str, seeds: int, steps: float, rtol: float, dtype: str, points: int = 200) -> dict:
    """The flow scaling setting (raw config tables)."""
    return {
        "teacher": {"P": P, "beta": 1.0, "activation": "h4"},
        "student": {"m": P},
        "data": {"d": 10_000},
        "train": {
            "engine": "flow",
            "steps": int(steps),
            "lr": 1e-4,
            "seed": list(range(seeds)),
            "dtype": dtype,
            "progress": True,
        },
        "log": {"points": points, "overlap": False},
        "flow": {"solver": solver, "rtol": rtol, "atol": 1e-9},
    }


def child(args) -> None:
    """Run one case (in the child process) and print its JSON line."""
    import numpy as np

    import scaling_sgd as ss

    raw = config(args.P[0], args.solver[0], args.seeds, args.steps, args.rtol, args.dtype, args.points)
    cfg = ss.resolve_config(raw)
    name = case_name(args.P[0], args.solver[0], args.seeds, args.steps, args.rtol, args.dtype, args.points)
    out = ROOT / "results" / "flow_scaling" / name
    t0, c0 = time.perf_counter(), time.process_time()
    m = ss.run(cfg, out=out, progress=False).metrics
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec = {
        "wall_s": wall,
        "cpu_s": cpu,
        "solver_steps": m["solver_steps"].tolist(),
        "solver_fevals": m["solver_fevals"].tolist(),
        "final_loss": m["loss"][:, -1].tolist(),
        "learned": np.sum(m["skill"][:, -1] >= 0.5, axis=-1).tolist(),
        "diverged": m["diverged"].tolist(),
        "run_dir": str(out.relative_to(ROOT)),
    }
    print("RESULT " + json.dumps(rec), flush=True)


def case_name(P, solver, seeds, steps, rtol, dtype, points=200) -> str:
    name = f"P{P}_{solver}_R{seeds}_steps{steps:.0e}_rtol{rtol:.0e}_{dtype}"
    return name if points == 200 else f"{name}_points{points}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--solver", nargs="+", default=["rkc", "ros2"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=float, default=5e8)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--points", type=int, default=200, help="log points (outputs the solver lands on)")
    ap.add_argument("--cap", type=float, default=600.0, help="seconds before a case is stopped")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "flow_scaling.jsonl"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    for P in args.P:
        for solver in args.solver:
            cmd = [sys.executable, __file__, "--child", "--P", str(P), "--solver", solver, "--seeds", str(args.seeds)]
            cmd += ["--steps", str(args.steps), "--rtol", str(args.rtol), "--dtype", args.dtype, "--points", str(args.points)]
            rec = {
                "case": case_name(P, solver, args.seeds, args.steps, args.rtol, args.dtype, args.points),
                "P": P,
                "m": P,
                "solver": solver,
                "replicas": args.seeds,
                "steps": args.steps,
                "rtol": args.rtol,
                "dtype": args.dtype,
                "points": args.points,
                "load_before": os.getloadavg()[0],
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            t0 = time.perf_counter()
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cap, cwd=ROOT)
                line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                if res.returncode != 0 or not line:
                    rec["error"] = res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"]
                else:
                    rec.update(json.loads(line[-1][len("RESULT ") :]))
                progress = [x for x in res.stderr.splitlines() if "step " in x]
                rec["last_progress"] = progress[-1].strip() if progress else None
            except subprocess.TimeoutExpired as e:
                rec["wall_s"] = None
                rec["capped_at_s"] = args.cap
                err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
                progress = [x for x in err.splitlines() if "step " in x]
                rec["last_progress"] = progress[-1].strip() if progress else None
            rec["process_s"] = time.perf_counter() - t0
            rec["load_after"] = os.getloadavg()[0]
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            wall = f"{rec['wall_s']:.1f} s" if rec.get("wall_s") else f"> {args.cap:.0f} s (stopped)"
            print(
                f"P=m={P:5d} {solver:5s} R={args.seeds}: {wall}  load {rec['load_before']:.1f}->{rec['load_after']:.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
