"""Mutation testing of the core modules: plant one small bug at a time, run the tests
that should catch it, count how many bugs they catch.  Not part of CI (it takes tens of
minutes); run it after changing the library or its tests, and record the result in
``tests/MUTATION.md``.

    nice -n 15 python tools/mutation.py --out results/mutation/run.json

How it works.  The working tree is copied once to a scratch folder (so editing the tree
while a run is in progress changes nothing).  For every module in :data:`TARGETS` the
mutants are enumerated from its syntax tree by the operators of :func:`mutants_of`
(operator swaps, dropped terms, off-by-one constants and ranges, swapped arguments,
``max``/``min``-type swaps, comparison flips, deleted re-assignments), a fixed-seed sample
of ``--per-module`` of them is drawn, and each is written over the module in the scratch
copy and the module's test files are run (``pytest -x``, fastest file first) with the
scratch copy first on ``PYTHONPATH``.  A mutant is *killed* when the tests fail (or time
out, or cannot import the mutated module), *survived* when they pass.  The unmutated tests
must pass first, or the target is skipped.

``--mutants FILE`` re-runs the mutant set of an earlier run (the same set, to compare
two versions of the suite); ``--survivors FILE`` re-runs only that run's survivors.

When modules move, edit :data:`TARGETS` only: a module's path, the functions to mutate
(``None``: all of the module), and its test files.  Test files that do not exist are
skipped (so a map may name tests that a branch has not got yet).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# mutation_ops sits beside this file; the folder goes on the path so that
# ``python -m tools.mutation`` finds it as ``python tools/mutation.py`` does.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_ops import Mutant, mutants_of, sample  # noqa: E402
from mutation_planted import PLANTED  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Target:
    path: str  # module source, relative to the repository root
    functions: tuple[str, ...] | None  # qualified names to mutate; None = the whole module
    tests: tuple[str, ...]  # test files or node ids (file::test), in the order they should run


# module -> what to mutate and which tests should catch it.  tests/test_pinned.py is left
# out on purpose: it compares runs with stored arrays and kills any change of the numbers,
# right or wrong, so it would hide whether a test checks the mathematics.
TARGETS: dict[str, Target] = {
    # the model and its kernels
    "hermite": Target("scaling_sgd/_src/hermite.py", None, ("tests/test_hermite.py", "tests/test_model.py")),
    "model": Target(
        "scaling_sgd/_src/model.py",
        None,
        (
            "tests/test_model.py",
            "tests/test_sgd.py::test_one_step_equals_numpy",
            "tests/test_sgd.py::test_gradient_formula_equals_autodiff",
            "tests/test_sgd.py::test_canonical_and_random_basis_agree_in_distribution",
            "tests/test_rkc.py",
        ),
    ),
    "twofloat": Target("scaling_sgd/_src/twofloat.py", None, ("tests/test_rkc.py", "tests/test_model.py")),
    "schedules": Target(
        "scaling_sgd/_src/schedules.py", None, ("tests/test_flow.py", "tests/test_reduced.py", "tests/test_sgd.py")
    ),
    # the engines
    "engines.base": Target(
        "scaling_sgd/_src/engines/base.py",
        None,
        ("tests/test_sgd.py", "tests/test_flow.py", "tests/test_engine_plugin.py", "tests/test_config.py"),
    ),
    "engines.driver": Target(
        "scaling_sgd/_src/engines/driver.py",
        None,
        (
            "tests/test_sgd.py",
            "tests/test_flow.py",
            "tests/test_notebook_safety.py",
            "tests/test_robustness_io.py",
            "tests/test_output_times.py",
        ),
    ),
    "engines.sgd": Target("scaling_sgd/_src/engines/sgd.py", None, ("tests/test_sgd.py",)),
    "engines.reduced": Target("scaling_sgd/_src/engines/reduced.py", None, ("tests/test_reduced.py",)),
    "engines.flow": Target(
        "scaling_sgd/_src/engines/flow.py", None, ("tests/test_flow.py", "tests/test_rkc.py", "tests/test_output_times.py")
    ),
    "engines.flow_solvers": Target(
        "scaling_sgd/_src/engines/flow_solvers.py",
        None,
        ("tests/test_rkc.py", "tests/test_flow.py", "tests/test_output_times.py"),
    ),
    "engines.rkc": Target(
        "scaling_sgd/_src/engines/rkc.py", None, ("tests/test_rkc.py", "tests/test_flow.py", "tests/test_output_times.py")
    ),
    # a run's description, files and checks
    "config": Target(
        "scaling_sgd/_src/config.py", None, ("tests/test_config.py", "tests/test_cli.py", "tests/test_robustness.py")
    ),
    "spec": Target(
        "scaling_sgd/_src/spec.py",
        None,
        (
            "tests/test_config.py",
            "tests/test_engine_plugin.py",
            "tests/test_api.py",
            # a student activation other than the teacher's
            "tests/test_flow.py::test_closed_form_gradient_equals_autodiff_and_block_jacobian",
        ),
    ),
    "schema": Target(
        "scaling_sgd/_src/schema.py", None, ("tests/test_engine_plugin.py", "tests/test_api.py", "tests/test_config.py")
    ),
    "validate": Target("scaling_sgd/_src/validate.py", None, ("tests/test_config.py", "tests/test_robustness.py")),
    "files": Target("scaling_sgd/_src/files.py", None, ("tests/test_robustness_io.py", "tests/test_sweep.py")),
    "results": Target(
        "scaling_sgd/_src/results.py", None, ("tests/test_robustness_io.py", "tests/test_sweep.py", "tests/test_aggregate.py")
    ),
    "preflight": Target(
        "scaling_sgd/_src/preflight.py",
        None,
        ("tests/test_robustness_io.py", "tests/test_robustness.py", "tests/test_engine_plugin.py"),
    ),
    "runner": Target(
        "scaling_sgd/_src/runner.py", None, ("tests/test_api.py", "tests/test_sweep.py", "tests/test_robustness_io.py")
    ),
    "sweep": Target("scaling_sgd/_src/sweep.py", None, ("tests/test_sweep.py", "tests/test_robustness_io.py")),
    "sweep_state": Target("scaling_sgd/_src/sweep_state.py", None, ("tests/test_robustness_io.py", "tests/test_sweep.py")),
    "cli": Target("scaling_sgd/cli.py", None, ("tests/test_cli.py", "tests/test_robustness.py", "tests/test_api.py")),
    # the analysis (installed as scaling_sgd.analysis)
    "emergence": Target("scaling_sgd/_src/emergence.py", None, ("tests/test_analysis.py", "tests/test_theory.py")),
    "analysis.emergence": Target("analysis/emergence.py", None, ("tests/test_analysis.py", "tests/test_theory.py")),
    "analysis.fit": Target("analysis/fit.py", None, ("tests/test_analysis.py", "tests/test_theory.py", "tests/test_sims.py")),
    "analysis.theory": Target("analysis/theory.py", None, ("tests/test_theory.py", "tests/test_analysis.py")),
}


def planted(names) -> list[Mutant]:
    out = []
    for target, text, repl, what in PLANTED:
        if target not in names:
            continue
        src = (REPO / TARGETS[target].path).read_text().encode()
        i = src.find(text.encode())
        ok = i >= 0 and src.find(text.encode(), i + 1) < 0
        line = src[: max(i, 0)].count(b"\n") + 1
        m = Mutant(target, "", line, f"planted: {what}", text, repl, i, i + len(text.encode()))
        if not ok:
            m.start, m.end, m.status = -1, -1, "stale"
        out.append(m)
    return out


# -- running --------------------------------------------------------------------------
def scratch_copy(dest: Path, ref: str | None = None) -> Path:
    """The working tree (or, with ``ref``, that commit's tree) copied to ``dest``."""
    if ref:
        dest.mkdir(parents=True)
        tar = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
        return dest
    ignore = shutil.ignore_patterns(
        ".git", "results", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build", "dist"
    )
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def link_analysis(root: Path) -> None:
    """``scaling_sgd.analysis`` of the scratch copy is its ``analysis/`` folder (as the
    installed package maps it), so that mutants of ``analysis/`` are the code the tests import."""
    link = root / "scaling_sgd" / "analysis"
    if not link.exists():
        link.symlink_to(Path("..") / "analysis", target_is_directory=True)


# A pytest plugin written into the scratch copy: the baseline run records each test's
# duration, the mutant runs then go fastest test first within each file (with ``-x`` a
# killed mutant stops at its first failing test, so this is most of the speed).
ORDER_PLUGIN = """
import json, os, time

_REC, _ORD = os.environ.get("MUTATION_RECORD"), os.environ.get("MUTATION_ORDER")
_T = {}


def pytest_collection_modifyitems(session, config, items):
    if _ORD and os.path.exists(_ORD):
        d = json.load(open(_ORD))
        files = list(dict.fromkeys(it.nodeid.split("::")[0] for it in items))
        items.sort(key=lambda it: (files.index(it.nodeid.split("::")[0]), d.get(it.nodeid, 1e9)))


def pytest_runtest_logreport(report):
    if _REC:
        _T[report.nodeid] = _T.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    if _REC:
        json.dump(_T, open(_REC, "w"))
"""


def run_tests(root: Path, tests: list[str], timeout: float, record: Path | None = None, order: Path | None = None):
    """Run ``tests`` in the scratch copy: ``(status, seconds, first failure)``."""
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")
    env.pop("WT", None)  # a worktree shim must not redirect scaling_sgd.analysis away from the copy
    env["MUTATION_RECORD"] = str(record) if record else ""
    env["MUTATION_ORDER"] = str(order) if order else ""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "_mutation_order",
        "-o",
        "addopts=",
        *tests,
    ]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    dt = time.perf_counter() - t0
    tail = (p.stdout + p.stderr).strip().splitlines()
    failed = [ln for ln in tail if ln.startswith(("FAILED", "ERROR"))]
    detail = failed[0] if failed else (tail[-1] if tail else "")
    if p.returncode == 0:
        return "survived", dt, detail
    if p.returncode in (1, 2):  # test failures, or collection/import errors caused by the mutant
        return "killed", dt, detail
    return "error", dt, detail


def read_durations(path: Path) -> dict:
    """Per-test seconds from a JSON map or from ``pytest --durations=0`` output."""
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    out: dict[str, float] = {}
    for m in re.finditer(r"^([0-9.]+)s (?:setup|call|teardown)\s+(\S+)$", text, re.M):
        out[m.group(2)] = out.get(m.group(2), 0.0) + float(m.group(1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-module", type=int, default=12, help="mutants sampled per module (0: all)")
    ap.add_argument("--seed", type=int, default=20250516)
    ap.add_argument("--modules", default="", help="comma-separated subset of TARGETS")
    ap.add_argument("--mutants", type=Path, help="re-run the mutant set of an earlier run's JSON")
    ap.add_argument("--survivors", type=Path, help="re-run only the survivors of an earlier run's JSON")
    ap.add_argument("--ref", help="test this commit's tree (e.g. the suite before new tests) instead of the working tree")
    ap.add_argument("--planted-only", action="store_true", help="run only the hand-planted bugs of PLANTED")
    ap.add_argument("--no-planted", action="store_true", help="leave out the hand-planted bugs of PLANTED")
    ap.add_argument(
        "--durations", type=Path, help="skip the unmutated run: per-test times of a passing run (pytest --durations=0 output)"
    )
    ap.add_argument("--summary", type=Path, help="print the Markdown summary of an earlier run's JSON and exit")
    ap.add_argument("--list", action="store_true", help="print the sampled mutants and exit")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "mutation" / "latest.json")
    args = ap.parse_args(argv)

    if args.summary:
        print(summary(json.loads(args.summary.read_text())))
        return 0
    names = [m for m in args.modules.split(",") if m] or list(TARGETS)
    for n in names:
        if n not in TARGETS:
            ap.error(f"unknown module {n!r}; accepted: {', '.join(TARGETS)}")
    totals = {}
    if args.mutants or args.survivors:
        prev = json.loads((args.mutants or args.survivors).read_text())
        chosen = [Mutant(**{k: v for k, v in m.items() if k in Mutant.__dataclass_fields__}) for m in prev["mutants"]]
        chosen = [m for m in chosen if m.target in names]
        if args.survivors:
            chosen = [m for m in chosen if m.status == "survived"]
        totals = prev.get("enumerated", {})
    else:
        chosen = []
        for n in names:
            t = TARGETS[n]
            allm = mutants_of(n, t, (REPO / t.path).read_text())
            totals[n] = len(allm)
            chosen += sample(allm, args.per_module, args.seed + sum(map(ord, n)))
    if args.planted_only:
        chosen = []
    if args.mutants is None and args.survivors is None and not args.no_planted:
        chosen += planted(names)
    for m in chosen:
        m.status, m.seconds, m.detail = ("stale" if m.start < 0 else "pending"), 0.0, ""
    if args.list:
        for m in chosen:
            print(f"{m.target:20s} {TARGETS[m.target].path}:{m.line:<4d} {m.op:28s} {m.original!r} -> {m.replacement!r}")
        print(f"{len(chosen)} mutants of {sum(totals.get(n, 0) for n in names)} enumerated")
        return 0

    t_start = time.perf_counter()

    def save():
        """Write the report (after every mutant, so an interrupted run keeps its results)."""
        report = {
            "seed": args.seed,
            "ref": args.ref or "working tree",
            "per_module": args.per_module,
            "wall_seconds": time.perf_counter() - t_start,
            "enumerated": totals,
            "targets": {n: dataclasses.asdict(TARGETS[n]) for n in names},
            "mutants": [dataclasses.asdict(m) for m in chosen],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(report, indent=1))
        tmp_out.replace(args.out)
        return report

    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        root = scratch_copy(Path(tmp) / "repo", args.ref)
        (root / "_mutation_order.py").write_text(ORDER_PLUGIN)
        link_analysis(root)
        env = dict(os.environ, PYTHONPATH=str(root))
        env.pop("WT", None)
        where = subprocess.run(
            [sys.executable, "-c", "import scaling_sgd, scaling_sgd.analysis as a; print(scaling_sgd.__file__, a.__file__)"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        if str(root) not in where or where.count(str(root)) != 2:
            sys.exit(f"the scratch copy does not shadow the installed package: {where!r}")
        # One unmutated run of every test file involved: all must pass; it records each
        # test's duration (for the fastest-first order and the per-module timeouts).
        needed = list(dict.fromkeys(m.target for m in chosen if m.start >= 0))
        specs = {n: [f for f in TARGETS[n].tests if (root / f.split("::")[0]).is_file()] for n in needed}
        files = list(dict.fromkeys(f.split("::")[0] for n in needed for f in specs[n]))
        order = Path(tmp) / "durations.json"
        if args.durations:  # durations of a passing run of this tree (pytest --durations=0 output or JSON)
            durations = read_durations(args.durations)
            order.write_text(json.dumps(durations))
        else:
            status, dt, detail = run_tests(root, files, 3600, record=order) if files else ("survived", 0.0, "")
            print(f"[baseline] {' '.join(files)}: {status} in {dt:.0f}s", flush=True)
            if status != "survived":
                sys.exit(f"the unmutated tests do not pass ({detail}); fix them first")
            durations = json.loads(order.read_text()) if files else {}
        baseline = {}
        for n in needed:
            base_dt = 10.0 + sum(
                v for k, v in durations.items() if any(k == f or k.startswith(f + ("[" if "::" in f else "::")) for f in specs[n])
            )
            baseline[n] = (specs[n], base_dt, order)
            print(f"[baseline] {n}: {' '.join(specs[n])} ~{base_dt:.0f}s", flush=True)
        for i, m in enumerate(chosen):
            t = TARGETS[m.target]
            path = root / t.path
            orig = path.read_bytes()
            if m.start < 0 or orig[m.start : m.end].decode() != m.original:
                m.status, m.detail = "error", "stale: the module changed since the mutant set was drawn"
                continue
            tests, base_dt, order = baseline[m.target]
            try:
                path.write_bytes(orig[: m.start] + m.replacement.encode() + orig[m.end :])
                m.status, m.seconds, m.detail = run_tests(root, tests, 4.0 * base_dt + 90.0, order=order)
            finally:
                path.write_bytes(orig)
            print(
                f"[{i + 1}/{len(chosen)}] {m.status:8s} {m.seconds:5.0f}s {m.target}:{m.line} {m.op}: "
                f"{m.original!r} -> {m.replacement!r}  {m.detail[:100]}",
                flush=True,
            )
            save()
    report = save()
    print(summary(report))
    return 0


def summary(report) -> str:
    """Markdown: killed/total per module and the survivors."""
    rows = {}
    sampled = [m for m in report["mutants"] if not m["op"].startswith("planted") and m["status"] != "pending"]
    plant = [m for m in report["mutants"] if m["op"].startswith("planted")]
    for m in sampled:
        k = rows.setdefault(m["target"], [0, 0])
        k[1] += 1
        k[0] += m["status"] in ("killed", "timeout")
    lines = ["| module | killed / sampled | enumerated |", "|---|---|---|"]
    for n, (k, tot) in rows.items():
        lines.append(f"| {n} | {k} / {tot} | {report['enumerated'].get(n, '?')} |")
    K, T = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
    lines.append(f"| **all** | **{K} / {T} ({100.0 * K / max(T, 1):.0f}%)** | |")
    lines.append(f"\nwall time {report['wall_seconds'] / 60:.1f} min\n\nSurvivors:\n")
    for m in sampled:
        if m["status"] not in ("killed", "timeout"):
            lines.append(
                f"- `{m['target']}` line {m['line']} ({m['function'] or 'module'}), {m['op']}: `{m['original']}` -> `{m['replacement']}` [{m['status']}]"
            )
    if plant:
        lines.append(f"\nPlanted bugs: {sum(m['status'] in ('killed', 'timeout') for m in plant)} / {len(plant)} killed\n")
        for m in plant:
            lines.append(f"- `{m['target']}` {m['op'][9:]}: {m['status']} ({m['detail'][:120]})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
