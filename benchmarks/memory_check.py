"""The preflight's memory estimate against the measured peak resident memory, per engine.

    python benchmarks/memory_check.py [--json FILE] [--only NAME]

Each case runs in a fresh Python process (so that the peak is its own): it resolves a
config, takes the preflight's estimate (:func:`scaling_sgd._src.preflight.memory_estimate`,
the engine's own parts plus the logs and the runtime), runs it, and reports the peak
resident set size of the process (``VmHWM``, where Linux gives it; ``ru_maxrss`` would
carry the size of a large parent over the exec).  Three sizes per engine, chosen so that
the engine's state, not the runtime, dominates the largest.  The ratio peak / estimate is
what the preflight's "fits or not" rests on; benchmarks/NOTES.md quotes the table and
tests/test_memory_estimate.py holds a small case of each engine within [0.6, 2].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> config overrides ("table.key": value) of BASE
BASE = {
    "teacher.P": 8,
    "student.m": 8,
    "data.d": 64,
    "train.steps": 64,
    "train.seed": 0,
    "train.progress": False,
    "log.points": 4,
}
CASES = {
    "sgd d=2^14 R=8": {"train.engine": "sgd", "data.d": 2**14, "train.seed": list(range(8))},
    "sgd d=2^16 R=8": {"train.engine": "sgd", "data.d": 2**16, "train.seed": list(range(8))},
    "sgd d=2^17 R=16": {"train.engine": "sgd", "data.d": 2**17, "train.seed": list(range(16))},
    "reduced P=m=64 R=64": {
        "train.engine": "reduced",
        "teacher.P": 64,
        "student.m": 64,
        "data.d": 1024,
        "train.seed": list(range(64)),
    },
    "reduced P=m=128 R=128": {
        "train.engine": "reduced",
        "teacher.P": 128,
        "student.m": 128,
        "data.d": 1024,
        "train.seed": list(range(128)),
    },
    "reduced P=m=256 R=64": {
        "train.engine": "reduced",
        "teacher.P": 256,
        "student.m": 256,
        "data.d": 2048,
        "train.seed": list(range(64)),
    },
    "flow rkc P=m=256 R=8": {
        "train.engine": "flow",
        "teacher.P": 256,
        "student.m": 256,
        "data.d": 1024,
        "train.seed": list(range(8)),
    },
    "flow rkc P=m=512 R=8": {
        "train.engine": "flow",
        "teacher.P": 512,
        "student.m": 512,
        "data.d": 2048,
        "train.seed": list(range(8)),
    },
    "flow rkc P=m=1024 R=4": {
        "train.engine": "flow",
        "teacher.P": 1024,
        "student.m": 1024,
        "data.d": 4096,
        "train.seed": list(range(4)),
    },
    "flow ros2 P=m=64 R=8": {
        "train.engine": "flow",
        "flow.solver": "ros2",
        "teacher.P": 64,
        "student.m": 64,
        "data.d": 256,
        "train.seed": list(range(8)),
    },
    "flow ros2 P=m=128 R=4": {
        "train.engine": "flow",
        "flow.solver": "ros2",
        "teacher.P": 128,
        "student.m": 128,
        "data.d": 512,
        "train.seed": list(range(4)),
    },
    "flow ros2 P=m=256 R=2": {
        "train.engine": "flow",
        "flow.solver": "ros2",
        "teacher.P": 256,
        "student.m": 256,
        "data.d": 1024,
        "train.seed": list(range(2)),
    },
}

WORKER = r"""
import json, sys
import scaling_sgd as ss
from scaling_sgd._src import preflight
from scaling_sgd._src.environment import peak_rss_bytes
from scaling_sgd._src.config import set_key
from scaling_sgd._src.runner import run
over = json.loads(sys.argv[1])
raw = {}
for k, v in over.items():
    set_key(raw, k, v)
spec = ss.build_spec(ss.resolve_config(raw))
parts = preflight.memory_estimate(spec)
run(spec, None, progress=False)
peak = peak_rss_bytes()  # this program's own high-water mark, not its parent's
print(json.dumps({"estimate": sum(parts.values()), "parts": parts, "peak": peak}))
"""


def measure(over: dict) -> dict:
    """Estimate and peak RSS (bytes) of one config in a fresh process."""
    # Without the on-disk compilation cache: a program loaded from it skips the compiler,
    # whose memory (~0.17 GB here) a first run holds and the estimate's runtime part counts.
    env = {**os.environ, "SCALING_SGD_COMPILATION_CACHE": "0"}
    cmd = [sys.executable, "-c", WORKER, json.dumps({**BASE, **over})]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio"] = out["peak"] / out["estimate"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the preflight's memory estimate against the peak RSS, per engine")
    p.add_argument("--json", default=None, help="also write the table as JSON")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = p.parse_args(argv)
    rows = {}
    print(f"{'case':<26} {'estimate':>10} {'peak RSS':>10} {'peak/est':>9}")
    for name, over in CASES.items():
        if args.only not in name:
            continue
        r = measure(over)
        rows[name] = r
        print(f"{name:<26} {r['estimate'] / 1e9:9.3f}G {r['peak'] / 1e9:9.3f}G {r['ratio']:9.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
