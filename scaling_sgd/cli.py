"""The ``scaling-sgd`` command line: ``run``, ``demo``, ``sweep``, ``analyze``, ``lr-scan``, ``bench``.

It sits above both the core (:mod:`scaling_sgd._src`) and :mod:`scaling_sgd.analysis`,
which it joins: a run's emergence table and ``analyze`` come from the analysis.

Bad input is reported as one line naming the key and the accepted values, with exit
status 2, before any compute starts and without touching results already written.
The core and JAX are imported by the command that computes, not by the parser: ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import errno
import importlib.resources
import os
import signal
import sys
import warnings
from pathlib import Path

from ._src.errors import ConfigError, ConfigWarning, InputError

__all__ = ["main"]

# The demo's config ships inside the package, so the demo runs after any install.
DEMO_CONFIG = importlib.resources.files("scaling_sgd") / "demo.toml"


# Refusals of the file system that are the user's environment, not a bug of ours.
_FS_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR)


def _fail(msg: str) -> int:
    print(f"scaling-sgd: error: {msg}", file=sys.stderr)
    return 2


def load_resolved(path, sets) -> dict:
    """Load a TOML file, apply ``--set`` overrides, resolve (raises ConfigError)."""
    from ._src import config as cfgmod

    raw = cfgmod.load(path)
    return cfgmod.resolve(cfgmod.apply_set(raw, sets))


def _default_out(config_path) -> Path:
    return Path("results") / Path(config_path).stem


def print_emergence(metrics: dict, config: dict, stream=None):
    """Print the emergence step of each direction (median over replicas, and range).

    Diverged replicas are never counted as learned: they are left out of the times and
    shown in a column of their own (``learned`` counts live replicas that reached the
    threshold, out of all replicas).
    """
    import numpy as np

    from ._src.emergence import criterion
    from .analysis.emergence import log_median, run_emergence_times
    from .analysis.output import fmt

    stream = stream or sys.stdout
    observable, threshold = criterion(config)
    t, cens = run_emergence_times(metrics, config)
    R, P = t.shape
    div = np.asarray(metrics.get("diverged", np.zeros(R, bool)), bool).reshape(R)
    live = t[~div]
    nd = int(div.sum())
    print(
        f"emergence steps ({observable} >= {threshold}), over {R} replicas" + (f" ({nd} diverged, left out)" if nd else "") + ":",
        file=stream,
    )
    print(f"  {'p':>3} {'a_p':>8} {'median':>12} {'min':>12} {'max':>12} {'learned':>8} {'diverged':>8}", file=stream)
    for p in range(P):
        col = live[:, p]
        fin = col[np.isfinite(col)]
        # the median in log step, as everywhere (censored = never learned: '-' when they are half or more)
        med = float(log_median(col)) if col.size else np.inf
        lo = fin.min() if fin.size else np.inf
        hi = col.max() if col.size else np.inf
        a = float(np.median(metrics["a"][:, p])) if "a" in metrics else float("nan")
        print(
            f"  {p + 1:>3} {a:8.4f} {fmt(med, '12,.0f')} {fmt(lo, '12,.0f')} {fmt(hi, '12,.0f')} {fin.size:>4}/{R:<3} {nd:>8}",
            file=stream,
        )
    if nd == R:
        print("  every replica diverged: no direction counts as learned", file=stream)
    return t, cens


def _interrupted(out, meta) -> int:
    """A run stopped by Ctrl-C or SIGTERM: its log points so far were written as a valid
    run marked partial.  Exit status 128 + the signal's number (130, 143), as a shell
    reports a command ended by that signal."""
    print(
        f"\nscaling-sgd: interrupted by {meta['interrupted_by']} at step {meta['last_step']:,}: wrote the part done to {out} "
        '(config.json has "partial": true); run the same command again to resume from there',
        file=sys.stderr,
    )
    return 128 + int(getattr(signal.Signals, meta["interrupted_by"], signal.SIGINT))


def _all_diverged(cfg: dict, meta: dict, config_arg: str | None) -> None:
    """One line for a run whose every replica diverged, with a stable lr to try: the
    largest of a short scan below the run's lr, over 4 times the steps it took them all to
    diverge, at least 1000 (or the run's steps, if fewer)."""
    from ._src.lr_scan import scan_lr

    step, steps = meta["all_diverged_at"], cfg["train"]["steps"]
    top = max(cfg["train"]["lr"]) if isinstance(cfg["train"]["lr"], list) else cfg["train"]["lr"]
    scan = scan_lr(cfg, points=6, steps=min(steps, max(4 * step, 1000)), lr=top / 2)
    hint = f"try lr = {scan.lr:.3g}" if scan.lr is not None else f"no lr down to {scan.tried[-1][0]:.3g} was stable"
    print(
        f"scaling-sgd: every replica diverged by step {step:,} of {steps:,}: stopped there (the later log points hold "
        f"their frozen values); {hint} (stable over {scan.steps:,} steps; `scaling-sgd lr-scan {config_arg or 'CONFIG'}` "
        "scans the whole run)",
        file=sys.stderr,
    )


def _rate(meta: dict) -> str:
    return "" if meta.get("samples_per_s") is None else f", {meta['samples_per_s']:,.0f} samples/s"


def cmd_run(args) -> int:
    try:
        cfg = load_resolved(args.config, args.set)
    except ConfigError as e:
        return _fail(str(e))
    from ._src.runner import run  # JAX: only once the config is good
    from ._src.spec import build_spec

    if cfg.get("sweep"):
        print(
            "scaling-sgd: note: this config has a [sweep] table; 'run' runs only its base config (use 'sweep')", file=sys.stderr
        )
    out = Path(args.out) if args.out else _default_out(args.config)
    metrics, meta = run(build_spec(cfg), out, keep_partial=True, force=args.force)
    if meta.get("partial"):
        return _interrupted(out, meta)
    print(f"wrote {out}  ({meta['replicas']} replicas, {meta['wall_time_s']:.1f} s{_rate(meta)})")
    if "all_diverged_at" in meta:
        _all_diverged(cfg, meta, args.config)
        return 0
    if meta["diverged_replicas"]:
        print(f"warning: {meta['diverged_replicas']} replica(s) diverged (flagged and frozen; see metrics 'diverged')")
    print_emergence(metrics, cfg)
    return 0


def cmd_demo(args) -> int:
    try:
        cfg = load_resolved(args.config or DEMO_CONFIG, args.set)
    except ConfigError as e:
        return _fail(str(e))
    from ._src.runner import run  # JAX: only once the config is good
    from ._src.spec import build_spec

    out = Path(args.out)
    spec = build_spec(cfg)
    t, s = cfg["teacher"], cfg["student"]
    print(
        f"demo: online SGD, d={cfg['data']['d']}, P={t['P']}, m={s['m']}, beta={t['beta']}, {t['activation']}, "
        f"lr={cfg['train']['lr']}, {cfg['train']['steps']:,} steps x {spec.R} replicas"
    )
    metrics, meta = run(spec, out, keep_partial=True, force=args.force)
    if meta.get("partial"):
        return _interrupted(out, meta)
    print(f"wrote {out}  ({meta['wall_time_s']:.1f} s{_rate(meta)})")
    if "all_diverged_at" in meta:
        _all_diverged(cfg, meta, args.config)
        return 0
    from .analysis.report import analyze_run

    # prints the emergence table and the fitted exponents with intervals beside theory
    analyze_run(out, stream=sys.stdout)
    return 0


def cmd_sweep(args) -> int:
    from ._src.sweep import main as sweep_main

    return sweep_main(args)


def cmd_analyze(args) -> int:
    """A run directory or a sweep directory: analysis files and figures beside the results."""
    from ._src import config as cfgmod
    from ._src.results import is_run_file
    from .analysis.aggregate import analyze_sweep
    from .analysis.report import analyze_run

    d = Path(args.dir)
    if args.observable is not None and args.observable not in cfgmod.OBSERVABLES:
        return _fail(f"--observable: got {args.observable!r}; accepted: {', '.join(cfgmod.OBSERVABLES)}")
    if args.threshold is not None and not (0.0 < args.threshold <= 1.0):
        return _fail(f"--threshold: got {args.threshold}; accepted: a number in (0, 1]")
    if (d / "sweep.json").is_file() or (d / "points").is_dir():  # a lost sweep.json is rebuilt from points/
        analyze_sweep(d, args.observable, args.threshold, stream=sys.stdout)
        return 0
    if d.is_dir() and any(is_run_file(e.name) for e in os.scandir(d)):  # a run, maybe damaged: read_run says how
        analyze_run(d, args.observable, args.threshold, stream=sys.stdout)
        return 0
    return _fail(
        f"DIR: {str(d)!r} is not a results directory; accepted: a run directory "
        "(config.json + metrics.npz) or a sweep directory (sweep.json)"
    )


def cmd_lr_scan(args) -> int:
    """The largest lr at which no replica of the config's run diverges."""
    from ._src.lr_scan import scan_lr

    try:
        cfg = load_resolved(args.config, args.set)
    except ConfigError as e:
        return _fail(str(e))
    if args.points < 2:
        return _fail(f"--points: got {args.points}; accepted: an integer >= 2")
    scan = scan_lr(cfg, points=args.points, steps=args.steps)
    print(f"lr scan over {scan.steps:,} steps ({args.config}):")
    print(f"  {'lr':>12} {'diverged':>10}")
    for lr, k, n in sorted(scan.tried, reverse=True):
        print(f"  {lr:12.4g} {k:>5}/{n:<4}")
    if scan.lr is None:
        print(f"every lr tried diverged (down to {min(t[0] for t in scan.tried):.3g})")
        return 1
    print(f"largest stable lr: {scan.lr:.4g}")
    return 0


def cmd_bench(args) -> int:
    from ._src.bench import main as bench_main

    return bench_main(args)


EPILOG = """examples:
  scaling-sgd demo                                  the emergence staircase (about a minute on a 2-core CPU)
  scaling-sgd run my.toml --set train.lr=0.01       one config, a key overridden
  scaling-sgd sweep my.toml --out results/my        a grid of configs ([sweep] table), resumable
  scaling-sgd analyze results/my                    emergence times, fits and figures
  scaling-sgd lr-scan my.toml                       the largest lr at which no replica diverges
  scaling-sgd bench --quick                         speed and compile time of each engine

environment variables:
  SCALING_SGD_COMPILATION_CACHE=0   do not cache compiled programs on disk
                                    (default: $XDG_CACHE_HOME/scaling-sgd/jax, ~/.cache if unset)
  SCALING_SGD_NO_PREFLIGHT=1        skip the memory and disk checks before a run
  JAX_PLATFORMS=cpu                 run on the CPU even where an accelerator is present
"""


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="scaling-sgd",
        description="Emergence and scaling laws in online SGD on multi-index models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"scaling-sgd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add_set(sp):
        sp.add_argument(
            "--set", action="append", default=[], metavar="TABLE.KEY=VALUE", help="override a config key (repeatable)"
        )

    r = sub.add_parser("run", help="run one config")
    r.add_argument("config")
    add_set(r)
    r.add_argument("--out", help="results directory (default results/<config name>)")
    r.add_argument("--force", action="store_true", help="replace another config's results in --out")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("demo", help="the emergence-staircase demo (about a minute on a quiet 2-core CPU)")
    d.add_argument("--config", help="config to run instead of the demo's own")
    add_set(d)
    d.add_argument("--out", default="results/demo")
    d.add_argument("--force", action="store_true", help="replace another config's results in --out")
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
    a.add_argument("--observable", default=None, help="skill or alignment (default: the config's analysis.observable)")
    a.add_argument("--threshold", type=float, default=None)
    a.set_defaults(fn=cmd_analyze)

    ls = sub.add_parser("lr-scan", help="the largest lr at which no replica of a config's run diverges")
    ls.add_argument("config")
    add_set(ls)
    ls.add_argument("--points", type=int, default=8, help="learning rates per grid (one compiled program; default 8)")
    ls.add_argument("--steps", type=int, default=None, help="steps of each run (default the config's train.steps)")
    ls.set_defaults(fn=cmd_lr_scan)

    b = sub.add_parser("bench", help="performance benchmark")
    b.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    b.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    b.set_defaults(fn=cmd_bench)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Config warnings as one line ``scaling-sgd: warning: ...``; others as Python shows them."""
    if issubclass(category, ConfigWarning):
        print(f"scaling-sgd: warning: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.fn(args) or 0)
    except InputError as e:  # bad config, unusable --out, too big, damaged results
        return _fail(str(e))
    except BrokenPipeError:  # output piped into a reader that stopped (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the file system refused (a full disk, read-only, a name too long): one line
        if e.errno not in _FS_ERRNOS:
            raise
        where = f" {str(e.filename)[:120]!r}" if e.filename else ""
        return _fail(f"cannot use{where}: {e.strerror or e}; files already there were left whole")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
