"""The ``scaling-sgd`` command line: ``run``, ``demo``, ``sweep``, ``analyze``, ``bench``.

Bad input is reported as one line naming the key and the accepted values, with exit
status 2, before any compute starts and without touching results already written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import config as cfgmod
from .config import ConfigError

__all__ = ["main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "sims" / "demo.toml"


def _fail(msg: str) -> int:
    print(f"scaling-sgd: error: {msg}", file=sys.stderr)
    return 2


def load_resolved(path, sets) -> dict:
    """Load a TOML file, apply ``--set`` overrides, resolve (raises ConfigError)."""
    raw = cfgmod.load(path)
    return cfgmod.resolve(cfgmod.apply_set(raw, sets))


def _default_out(config_path) -> Path:
    return Path("results") / Path(config_path).stem


def print_emergence(metrics: dict, observable: str, threshold: float, stream=sys.stdout):
    """Print the emergence step of each direction (median over replicas, and range)."""
    from analysis.emergence import emergence_times

    t, cens = emergence_times(metrics["step"], metrics[observable], threshold)
    P = t.shape[-1]
    print(f"emergence steps ({observable} >= {threshold}), over {t.shape[0]} replicas:", file=stream)
    print(f"  {'p':>3} {'a_p':>8} {'median':>12} {'min':>12} {'max':>12} {'learned':>8}", file=stream)
    for p in range(P):
        col = t[:, p]
        fin = col[np.isfinite(col)]
        med = np.median(col) if fin.size > col.size / 2 else np.inf
        lo = fin.min() if fin.size else np.inf
        hi = col.max()
        a = float(np.median(metrics["a"][:, p])) if "a" in metrics else float("nan")
        print(f"  {p + 1:>3} {a:8.4f} {med:12,.0f} {lo:12,.0f} {hi:12,.0f} {fin.size:>4}/{col.size}", file=stream)
    return t, cens


def cmd_run(args) -> int:
    from .runner import run

    try:
        cfg = load_resolved(args.config, args.set)
    except ConfigError as e:
        return _fail(str(e))
    if cfg.get("sweep"):
        print(
            "scaling-sgd: note: this config has a [sweep] table; 'run' runs only its base config (use 'sweep')", file=sys.stderr
        )
    out = Path(args.out) if args.out else _default_out(args.config)
    metrics, meta = run(cfg, out)
    print(f"wrote {out}  ({meta['replicas']} replicas, {meta['wall_time_s']:.1f} s, {meta['samples_per_s']:,.0f} samples/s)")
    if meta["diverged_replicas"]:
        print(f"warning: {meta['diverged_replicas']} replica(s) diverged (flagged and frozen; see metrics 'diverged')")
    an = cfg["analysis"]
    print_emergence(metrics, an["observable"], an["threshold"])
    return 0


def cmd_demo(args) -> int:
    from .runner import run

    try:
        raw = cfgmod.load(args.config or DEMO_CONFIG)
        cfg = cfgmod.resolve(cfgmod.apply_set(raw, args.set))
    except ConfigError as e:
        return _fail(str(e))
    out = Path(args.out)
    t, s = cfg["teacher"], cfg["student"]
    print(
        f"demo: online SGD, d={cfg['data']['d']}, P={t['P']}, m={s['m']}, beta={t['beta']}, {t['activation']}, "
        f"lr={cfg['train']['lr']}, {cfg['train']['steps']:,} steps x {len(cfgmod.replica_grid(cfg)['seed'])} replicas"
    )
    metrics, meta = run(cfg, out)
    print(f"wrote {out}  ({meta['wall_time_s']:.1f} s, {meta['samples_per_s']:,.0f} samples/s)")
    an = cfg["analysis"]
    try:
        from analysis.report import analyze_run  # the full analysis, when available
    except ImportError:
        analyze_run = None
    if analyze_run is not None:
        # prints the emergence table and the fitted exponents with intervals beside theory
        analyze_run(out, stream=sys.stdout)
    else:
        times, _ = print_emergence(metrics, an["observable"], an["threshold"])
        from analysis.plots import save, staircase

        paths = save(staircase(metrics, an["observable"], 0, times[0]), out / "staircase")
        print("figure:", paths[0])
    return 0


def cmd_sweep(args) -> int:
    try:
        from .sweep import main as sweep_main
    except ImportError:
        return _fail("sweeps are not available in this build")
    return sweep_main(args)


def cmd_analyze(args) -> int:
    try:
        from analysis.report import main as analyze_main
    except ImportError:
        return _fail("analysis is not available in this build")
    return analyze_main(args)


def cmd_bench(args) -> int:
    try:
        from .bench import main as bench_main
    except ImportError:
        return _fail("the benchmark is not available in this build")
    return bench_main(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scaling-sgd", description="Emergence and scaling laws in online SGD on multi-index models.")
    sub = p.add_subparsers(dest="command", required=True)

    def add_set(sp):
        sp.add_argument(
            "--set", action="append", default=[], metavar="TABLE.KEY=VALUE", help="override a config key (repeatable)"
        )

    r = sub.add_parser("run", help="run one config")
    r.add_argument("config")
    add_set(r)
    r.add_argument("--out", help="results directory (default results/<config name>)")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("demo", help="the emergence-staircase demo (a few minutes on a laptop CPU)")
    d.add_argument("--config", help=f"config to run instead of {DEMO_CONFIG.name}")
    add_set(d)
    d.add_argument("--out", default="results/demo")
    d.set_defaults(fn=cmd_demo)

    s = sub.add_parser("sweep", help="run a grid of configs (resumable)")
    s.add_argument("config")
    add_set(s)
    s.add_argument("--out", help="sweep directory (default results/<config name>)")
    s.add_argument("--shard", default=None, metavar="I/N", help="run only shard I of N (1-based)")
    s.add_argument("--force", action="store_true", help="recompute points already done")
    s.set_defaults(fn=cmd_sweep)

    a = sub.add_parser("analyze", help="emergence times, fits and figures for a run or sweep directory")
    a.add_argument("dir")
    a.add_argument("--observable", choices=cfgmod.OBSERVABLES, default=None)
    a.add_argument("--threshold", type=float, default=None)
    a.set_defaults(fn=cmd_analyze)

    b = sub.add_parser("bench", help="performance benchmark")
    b.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    b.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
