"""Per-point cost of a sweep's index bookkeeping on a large synthetic sweep.

Builds a sweep directory of ``--points`` grid points (default 100,000) whose folders are
all finished except the last ``--measure`` ones, then "finishes" those one at a time (a
point folder appears, as ``runner.run`` would leave it) and times what the sweep does
for the index after each point: claim the point (``O_EXCL`` file and heartbeat thread),
check whether another job finished it (its checksum verified), release the claim, and
``Index.maybe_write`` (a clock check: the whole index is rebuilt at most every
``INDEX_MIN_INTERVAL_S``).  A package without ``Index.maybe_write`` is timed with
``Index.write`` after every point instead (a rebuild and rewrite of the whole
``sweep.json``), so two versions compare (``PYTHONPATH=<checkout>``).

It also times what a job does once at its start: the scan of the points' states (with
every finished point's ``metrics.npz`` checksum verified where ``sweep.point_state``
exists) and the first index write.  It writes 2 small files per point into ``--dir``:
about 0.8 GB at 100,000 points.

    PYTHONPATH=. python benchmarks/sweep_index.py [--points N] [--measure K] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--measure", type=int, default=20)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed after)")
    args = ap.parse_args(argv)

    from scaling_sgd._src import results, sweep

    work = Path(args.dir or tempfile.mkdtemp(prefix="sweep-index-"))
    out = work / "sw"
    try:
        t0 = time.perf_counter()
        raw = {
            "teacher": {"P": 2},
            "student": {"m": 2},
            "data": {"d": 8},
            "train": {"progress": False, "seed": [0, 1]},
            "log": {"points": 5},
            "sweep": {"steps": list(range(1000, 1000 + args.points))},
        }
        pl = sweep.plan(raw)
        t_plan = time.perf_counter() - t0
        print(f"plan of {len(pl.points)} points: {t_plan:.1f} s", flush=True)

        # one real run folder as the template of every finished point
        R, T = 2, 6
        metrics = {
            "step": np.arange(T, dtype=np.int64) * 200,
            "loss": np.ones((R, T), np.float32),
            "skill": np.zeros((R, T, 2), np.float32),
            "alignment": np.zeros((R, T, 2), np.float32),
            "norm2": np.full((R, T, 2), 0.01, np.float32),
            "diverged": np.zeros(R, bool),
            "diverged_step": -np.ones(R, np.int64),
        }
        tpl = work / "template"
        meta = {"hash": "HASH", "replicas": R, "diverged_replicas": 0, "format": 1}
        results.write_run(tpl, pl.points[0].config, metrics, meta)
        cj_text = (tpl / "config.json").read_text()
        npz = (tpl / "metrics.npz").read_bytes()

        def finish(p):
            d = out / p.dir
            d.mkdir(parents=True, exist_ok=True)
            (d / "metrics.npz").write_bytes(npz)
            (d / "config.json").write_text(cj_text.replace('"HASH"', json.dumps(p.id)))

        t0 = time.perf_counter()
        first = pl.points[: len(pl.points) - args.measure]
        for p in first:
            finish(p)
        print(f"wrote {len(first)} finished point folders: {time.perf_counter() - t0:.1f} s", flush=True)

        index = sweep.Index(out, pl, stream=sys.stderr)
        t0 = time.perf_counter()
        if hasattr(sweep, "point_state"):
            states = [sweep.point_state(out, p, verify=True)[0] for p in pl.points]
        else:
            states = ["done" if results.is_run_dir(out / p.dir) else "pending" for p in pl.points]
        t_scan = time.perf_counter() - t0
        print(f"scan of every point's state (start of a job): {t_scan:.2f} s, {states.count('done')} done", flush=True)
        t0 = time.perf_counter()
        index.write()
        t_first = time.perf_counter() - t0
        size = (out / "sweep.json").stat().st_size
        print(f"first index build and write (start of a job): {t_first:.2f} s, sweep.json {size / 1e6:.1f} MB", flush=True)

        if hasattr(index, "maybe_write"):
            name = "Claim.acquire + point_state(verify) + Claim.release + Index.maybe_write"

            def per_point():
                claim = sweep.Claim.acquire(out / "claims" / p.id, index.locked)
                sweep.point_state(out, p, verify=True)
                claim.release()
                index.maybe_write()
        else:
            name, per_point = "Index.write", index.write
        times = []
        for p in pl.points[len(first) :]:  # noqa: B007 - per_point reads p
            finish(p)
            t0 = time.perf_counter()
            per_point()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.write()
        t_full = time.perf_counter() - t0
        med = statistics.median(times)
        report = {
            "points": len(pl.points),
            "per_point_call": name,
            "per_point_median_s": med,
            "per_point_max_s": max(times),
            "per_point_mean_s": statistics.fmean(times),
            "start_scan_s": t_scan,
            "full_rebuild_s": t_full,
            "first_build_s": t_first,
            "sweep_json_mb": round(size / 1e6, 1),
        }
        print(json.dumps(report, indent=1))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
