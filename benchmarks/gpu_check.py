"""The prepared GPU check: one JSON of what a single GPU does with this code.

    bash benchmarks/gpu_check.sh [--out FILE]            # on a machine with one GPU, <= 8 min
    bash benchmarks/gpu_check.sh --cpu-dry-run [--out FILE]   # the same code at tiny sizes, CPU

Sections of the JSON:

* ``bounds``: the device's own rates, measured in this process: ``jax.random.normal``
  float32 numbers per second (:func:`scaling_sgd._src.bench.gaussian_rate`) and the float32
  matrix-multiply flop rate (:func:`scaling_sgd._src.bench.matmul_rate`);
* ``sgd``: samples/s of the ``sgd`` engine at ``d = 2048``, ``m = P = 64`` and ``1024``,
  ``B = 1`` and ``32``, each as a fraction of the Gaussian bound (rate / ``d``: fresh input
  is irreducible) and of the matmul bound (rate / ``4 d m`` flops per sample);
* ``flow``: the wall time of ``flow`` at ``P = m = 1024``, 8 seeds, ``beta = 1``, ``d = 1e4``,
  float64, to step 5e8 (``tau = 5e4``), compile included; stopped at a wall-time budget and
  reported as partial (the step reached) if it does not finish in it;
* ``consistency``: a small config of every engine (float32 and float64) run on the device
  and on the host CPU, with the largest relative difference of the loss and skill and
  whether it is within the dtype's tolerance.

Nothing is downloaded: the script uses the JAX, optax and diffrax already installed.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import scaling_sgd as ss  # noqa: E402
from scaling_sgd._src.bench import _config, gaussian_rate, matmul_rate, time_engine  # noqa: E402
from scaling_sgd._src.environment import environment  # noqa: E402
from scaling_sgd._src.runner import run as run_spec  # noqa: E402

# Largest relative difference of loss and skill between the device and the CPU: float64 on
# a few hundred steps agrees to rounding; float32 may use TF32 products on a GPU.
TOLERANCE = {"float32": 2e-2, "float64": 1e-8}

FULL = {
    "sgd": {"d": 2048, "widths": (64, 1024), "batches": (1, 32), "replicas": 32, "seconds": 2.0},
    "flow": {"Pm": 1024, "seeds": 8, "d": 10_000, "steps": 500_000_000, "budget_s": 180.0},
    "consistency": (("sgd", "float32"), ("sgd", "float64"), ("reduced", "float32"), ("reduced", "float64"), ("flow", "float64")),
    "repeats": 3,
}
# The same code paths at the smallest sizes (what CI runs): one compile per engine and dtype.
DRY = {
    "sgd": {"d": 64, "widths": (4,), "batches": (1,), "replicas": 2, "seconds": 0.05},
    "flow": {"Pm": 4, "seeds": 2, "d": 16, "steps": 10_000, "budget_s": 60.0},
    "consistency": (("sgd", "float32"), ("flow", "float64")),
    "repeats": 1,
}


def _log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _steps_for(d, P, m, B, R, seconds) -> int:
    """Steps that take about ``seconds`` (from a short timed run), a multiple of 32."""
    probe = 256
    res = time_engine(_config(d, P, m, B, R, probe), 1)
    rate = probe / max(res["run_s"], 1e-6)
    return int(max(probe, 32 * round(rate * seconds / 32)))


def bounds(repeats: int) -> dict:
    g = gaussian_rate(repeats=repeats)
    return {"normals_per_s": g["normals_per_s"], "matmul_flop_per_s": matmul_rate(1024, repeats)}


def sgd_cases(size: dict, bound: dict, repeats: int) -> list[dict]:
    out = []
    d, R = size["d"], size["replicas"]
    for m in size["widths"]:
        for B in size["batches"]:
            steps = _steps_for(d, m, m, B, R, size["seconds"])
            res = time_engine(_config(d, m, m, B, R, steps), repeats)
            rate = res["samples_per_s"]
            row = {k: v for k, v in res.items() if not k.startswith("_")}
            row["of_gaussian_bound"] = rate / (bound["normals_per_s"] / d)
            row["of_matmul_bound"] = rate / (bound["matmul_flop_per_s"] / (4.0 * d * m))
            _log(f"sgd d={d} m=P={m} B={B}: {rate:.3g} samples/s, {row['of_gaussian_bound']:.2f} of the Gaussian bound")
            out.append(row)
    return out


def flow_case(size: dict) -> dict:
    Pm, seeds = size["Pm"], size["seeds"]
    cfg = ss.resolve_config(
        {
            "teacher": {"P": Pm, "beta": 1.0},
            "student": {"m": Pm},
            "data": {"d": size["d"]},
            "train": {"engine": "flow", "steps": size["steps"], "lr": 1e-4, "seed": list(range(seeds)), "dtype": "float64"},
            "log": {"points": 100},
        }
    )
    spec = ss.build_spec(cfg)
    old = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, size["budget_s"])
    t0 = time.perf_counter()
    try:
        metrics, meta = run_spec(spec, None, progress=False, keep_partial=True, stop_signals=(signal.SIGALRM,))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    wall = time.perf_counter() - t0
    learned = int(np.sum(np.asarray(metrics["skill"])[:, -1] >= 0.5))
    row = {
        "P": Pm,
        "m": Pm,
        "seeds": seeds,
        "d": size["d"],
        "steps": size["steps"],
        "wall_s": wall,
        "finished": not meta.get("partial", False),
        "last_step": int(metrics["step"][-1]),
        "directions_learned": learned,
        "diverged": int(np.sum(metrics["diverged"])),
    }
    if "solver_fevals" in metrics:
        row["gradient_evaluations"] = [int(x) for x in np.asarray(metrics["solver_fevals"])]
    _log(f"flow P=m={Pm} x {seeds} seeds: {wall:.1f} s, finished={row['finished']}, step {row['last_step']:,}")
    return row


def consistency(cases) -> list[dict]:
    """The same small configs (``(engine, dtype)`` pairs) on the default device and on the
    host CPU."""
    cpu = jax.devices("cpu")[0]
    rows = []
    for engine, dtype in cases:
        raw = {
            "teacher": {"P": 3, "beta": 1.0},
            "student": {"m": 4, "init_scale": 0.3},
            "data": {"d": 32},
            "train": {"engine": engine, "steps": 300, "lr": [1e-3, 3e-3], "seed": [0, 1], "dtype": dtype, "progress": False},
            "log": {"points": 12},
        }
        if engine == "flow":
            raw["train"].update(steps=200_000, lr=[1e-3])
        dev = ss.run(raw)
        with jax.default_device(cpu):
            host = ss.run(raw)
        diff = 0.0
        for k in ("loss", "skill"):
            a, b = np.asarray(dev.metrics[k], np.float64), np.asarray(host.metrics[k], np.float64)
            scale = np.abs(b) + 1e-6 * np.nanmax(np.abs(b))  # relative, with a floor for entries near 0
            diff = max(diff, float(np.nanmax(np.abs(a - b) / scale)))
        ok = diff <= TOLERANCE[dtype]
        rows.append({"engine": engine, "dtype": dtype, "max_rel_diff": diff, "tolerance": TOLERANCE[dtype], "agrees": ok})
        _log(f"consistency {engine} {dtype}: max relative difference {diff:.2e} ({'ok' if ok else 'OUTSIDE tolerance'})")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    p.add_argument("--out", default="results/gpu_check.json", help="the JSON to write")
    args = p.parse_args(argv)
    size = DRY if args.cpu_dry_run else FULL
    backend = jax.default_backend()
    if not args.cpu_dry_run and backend == "cpu":
        print(
            "gpu_check: error: no GPU found by JAX (jax.devices() lists only the CPU); accepted: a GPU machine, or --cpu-dry-run",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    _log(f"backend {backend}, devices {jax.devices()}")
    report = {"mode": "cpu-dry-run" if args.cpu_dry_run else "gpu", "environment": environment()}
    report["bounds"] = bounds(size["repeats"])
    report["sgd"] = sgd_cases(size["sgd"], report["bounds"], size["repeats"])
    report["flow"] = flow_case(size["flow"])
    report["consistency"] = consistency(size["consistency"])
    report["total_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    _log(f"wrote {out} in {report['total_s']:.0f} s")
    bad = [r for r in report["consistency"] if not r["agrees"]]
    return 1 if bad or not all(math.isfinite(r["samples_per_s"]) for r in report["sgd"]) else 0


if __name__ == "__main__":
    sys.exit(main())
