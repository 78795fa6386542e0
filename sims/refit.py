"""Rebuild every row, figure and ``sims/VALIDATION.md`` from the experiments' records, with
no simulation.

    python -m sims.refit [NAMES ...]     # refit, rewrite sims/results/*.json, figures, VALIDATION.md
    python -m sims.refit --check         # refit, write nothing; exit 1 if a row or VALIDATION.md differs

Each experiment's analysis runs as in ``python -m sims.reproduce``, but reads its runs from
its record ``sims/data/<name>.npz`` (:mod:`sims.record`: per-seed emergence steps, loss
curves and the few other arrays the analysis reads, written whenever the experiment runs).
So anyone can change an estimator, a window or a bootstrap and redo every row in seconds.

An experiment without a record (it has not been rerun since records exist) is listed as not
refittable and its stored summary is kept as it is; VALIDATION.md says which experiments
are refittable.  The wall and compute times and the date of a summary are those of the run
that made the record: a refit changes only what is fitted from it (rows, notes, extras).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile

from scaling_sgd._src.files import atomic_write_json, json_default
from sims import experiments, load, make_validation, output, record
from sims.reproduce import resolve_names

_FITTED = ("checks", "notes", "extra")


def refit_one(name: str, mode: str = "cpu") -> tuple[dict | None, str]:
    """``(summary, why)``: the experiment's stored summary with its fitted parts redone from
    its record, or ``None`` and why it cannot be refitted."""
    exp = load.load_experiment(name, mode)
    stored_path = output.RESULT_DIR / f"{exp.tag}.json"
    if not stored_path.is_file():
        return None, f"no sims/results/{exp.tag}.json"
    try:
        with load.replaying(), load.records_used() as used:
            out = experiments.get(name)(exp, False)
    except record.RecordError as e:
        return None, f"{e}{_flag(mode)}"
    new = dict(output.load_json(stored_path))
    fresh = {"checks": out.checks, "notes": out.notes, "extra": out.extra, "records": sorted(used)}
    new.update(json.loads(json.dumps(fresh, default=json_default)))  # as write_result stores them
    return new, ""


def differences(old: dict, new: dict) -> list[str]:
    """The fitted parts of two summaries that differ, one line each.  Numbers are compared
    to a relative ``RTOL``: another CPU's BLAS may round a least-squares fit differently in
    its last bits, which is no change of the rows."""
    out = []
    for k in _FITTED:
        if k == "checks":
            a = {c["quantity"]: c for c in old.get(k, [])}
            b = {c["quantity"]: c for c in new.get(k, [])}
            for q in sorted(set(a) | set(b)):
                if not _same(a.get(q), b.get(q)):
                    fa, fb = (x.get(q, {}).get("fitted") for x in (a, b))
                    out.append(f"row {q!r}: fitted {fa} -> {fb}")
        elif not _same(old.get(k), new.get(k)):
            out.append(f"{k} differ")
    return out


#: relative tolerance of :func:`differences` on numbers
RTOL = 1e-9


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= RTOL * max(abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.refit", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="experiment names or unique prefixes (default: every experiment)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a refitted row or VALIDATION.md differs")
    ap.add_argument("--mode", choices=load.MODES, default="cpu", help="whose records and summaries (default: cpu)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    try:
        names = resolve_names(args.names or ["all"])
    except load.ExperimentError as e:
        print(f"sims.refit: error: {e}", file=sys.stderr)
        return 2
    results = make_validation.collect(args.mode)
    bad, refitted = [], []
    with tempfile.TemporaryDirectory() as tmp, output.figures_to(tmp) if args.check else contextlib.nullcontext():
        for name in names:
            new, why = refit_one(name, args.mode)
            if new is None:
                print(f"{name}: not refittable: {why}")
                continue
            diff = differences(results[name] or {}, new)
            refitted.append(name)
            print(f"{name}: refitted from its record; " + ("the same rows" if not diff else f"{len(diff)} difference(s)"))
            for d in diff:
                print(f"  {d}")
            bad += diff
            results[name] = new
            if not args.check:
                atomic_write_json(output.RESULT_DIR / f"{load.tagged(name, args.mode)}.json", new)
    text = make_validation.render(results, args.mode)
    target = make_validation.report_path(args.mode)
    if args.check:
        same = target.is_file() and target.read_text() == text
        print(f"VALIDATION.md: {'the same' if same else 'DIFFERS from the refit'}")
        return 0 if same and not bad else 1
    make_validation.write(target, text)
    print(f"refitted {len(refitted)} of {len(names)} experiment(s); wrote {target.relative_to(load.REPO)}")
    return 0


def _flag(mode: str) -> str:
    """`` --quick`` for a mode other than cpu (a command line's option), else nothing."""
    return "" if mode == "cpu" else f" --{mode}"


if __name__ == "__main__":
    sys.exit(main())
