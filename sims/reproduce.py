"""Run the experiments that reproduce Ren, Nichani, Wu & Lee (2025).

    python -m sims.reproduce all                 # every experiment, CPU settings
    python -m sims.reproduce 02_emergence_vs_p   # one (a unique prefix such as 02 works)
    python -m sims.reproduce all --gpu           # the larger settings of each [gpu] table
    python -m sims.reproduce all --quick         # tiny settings: a smoke test of the pipeline
    python -m sims.reproduce all --force         # recompute runs already on disk

Each experiment runs its sweep into results/sims/<name>[-gpu|-quick]/ (the package's sweep
directory: sweep.json and points/<config hash>/; points already complete are reused),
writes its figure to sims/figures/<name>.png and a small summary to
sims/results/<name>.json (``-gpu``/``-quick`` in both names in those modes), and prints the
fitted values beside theory.  Then ``python -m sims.make_validation`` writes VALIDATION.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from . import experiments, load, output


def resolve_names(names: list[str]) -> list[str]:
    files = list(load.experiment_files())
    out = []
    for n in names:
        if n == "all":
            out.extend(files)
            continue
        hits = [f for f in files if f == n or f.startswith(n)]
        if len(hits) != 1:
            raise load.ExperimentError(f"experiment: {n!r} matches {len(hits)} experiments; accepted: {', '.join(files)}, all")
        out.extend(hits)
    return list(dict.fromkeys(out))


def run_one(name: str, mode: str, force: bool = False) -> dict:
    exp = load.load_experiment(name, mode)
    print(f"== {exp.tag}: {exp.get('title', name)}", flush=True)
    t0 = time.perf_counter()
    with load.records_used() as used:
        out = experiments.get(name)(exp, force)
    wall = time.perf_counter() - t0
    path = output.write_result(exp, out, wall, records=used)
    output.print_checks(out.checks)
    for n in out.notes:
        print(f"  note: {n}")
    print(f"  figure: {out.figure.relative_to(load.REPO)}   summary: {path.relative_to(load.REPO)}   ({wall:.0f} s)", flush=True)
    return {"name": name, "checks": out.checks, "wall": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sims.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="+", help="experiment names (or unique prefixes), or 'all'")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpu", action="store_true", help="the larger settings of each [gpu] table")
    g.add_argument("--quick", action="store_true", help="tiny settings (pipeline smoke test)")
    p.add_argument("--force", action="store_true", help="recompute runs already on disk")
    p.add_argument("--no-report", action="store_true", help="do not regenerate sims/VALIDATION.md afterwards")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # figures go to files; no window, whatever the environment
    mode = "gpu" if args.gpu else "quick" if args.quick else "cpu"
    try:
        names = resolve_names(args.names)
        for n in names:  # validate every experiment before running any
            load.load_experiment(n, mode)
    except load.ExperimentError as e:
        print(f"sims.reproduce: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for n in names:
        try:
            run_one(n, mode, args.force)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except Exception:  # one broken experiment must not stop the others
            traceback.print_exc()
            failed.append(n)
    if not args.no_report and mode == "cpu":
        from .make_validation import main as make_validation

        make_validation([])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
