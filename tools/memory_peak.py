"""Measure the preflight's memory estimate against the peak resident memory of a run.

For each replica count ``R`` a fresh process runs a small config (``d = 8`` unless ``--d``, ``P = m = 2``,
a few steps) with ``R`` seeds through the command line's ``run`` (compute, the host-side
metrics, ``metrics.npz`` written) and reports its peak resident memory (``VmHWM``); the parent prints the
estimate of :func:`scaling_sgd._src.preflight.memory_estimate` beside it.  The preflight
itself is switched off in the child so that a low estimate cannot refuse the run being
measured.  A large ``R`` takes GBs: run one at a time, under ``nice``.

``python tools/memory_peak.py 1000 100000 [--steps 20] [--points 20]``; one JSON line per
``R`` on stdout: ``{"R", "estimate", "peak_rss", "ratio"}`` (ratio = estimate / peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = """
[teacher]
P = 2
[student]
m = 2
[data]
d = {d}
[train]
steps = {steps}
lr = 1e-3
seed = 0
progress = false
[log]
points = {points}
"""


def _child(R: int, steps: int, points: int, d: int, out: str) -> None:
    from scaling_sgd.cli import main

    cfg = Path(out) / "c.toml"
    cfg.write_text(CONFIG.format(steps=steps, points=points, d=d))
    seeds = "[" + ",".join(map(str, range(R))) + "]"
    rc = main(["run", str(cfg), "--out", str(Path(out) / "run"), "--set", f"train.seed={seeds}"])
    from scaling_sgd._src.environment import peak_rss_bytes

    peak = peak_rss_bytes()
    print(json.dumps({"rc": rc, "peak_rss": peak}))


def _estimate(R: int, steps: int, points: int, d: int) -> int:
    import tomllib

    from scaling_sgd._src import config as cfgmod
    from scaling_sgd._src import preflight
    from scaling_sgd._src.spec import build_spec

    raw = tomllib.loads(CONFIG.format(steps=steps, points=points, d=d))
    raw["train"]["seed"] = list(range(R))
    return sum(preflight.memory_estimate(build_spec(cfgmod.resolve(raw))).values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("R", type=int, nargs="+")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.R[0], a.steps, a.points, a.d, a.child)
        return 0
    for R in a.R:
        with tempfile.TemporaryDirectory(prefix="memory-peak-") as tmp:
            env = {**os.environ, "SCALING_SGD_NO_PREFLIGHT": "1", "SCALING_SGD_COMPILATION_CACHE": "0"}
            args = [
                sys.executable,
                __file__,
                str(R),
                "--steps",
                str(a.steps),
                "--points",
                str(a.points),
                "--d",
                str(a.d),
                "--child",
                tmp,
            ]
            res = subprocess.run(args, capture_output=True, text=True, env=env)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not lines:
                print(json.dumps({"R": R, "error": res.stderr.strip().splitlines()[-1:] or res.returncode}))
                continue
            peak = json.loads(lines[-1])["peak_rss"]
        est = _estimate(R, a.steps, a.points, a.d)
        print(
            json.dumps({"R": R, "d": a.d, "points": a.points, "estimate": est, "peak_rss": peak, "ratio": round(est / peak, 3)}),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
