"""Fuzz the command line the way a careless user or a crashing cluster would.

Every case is one bad input: a config value, a ``--set`` string, a config file, an output
location, a damaged run or sweep directory.  Each is run through ``scaling-sgd``'s
``main()`` in this process and classified by what the user would see:

* ``clear``: exit status 2 and one line ``scaling-sgd: error: ...`` (argparse's usage +
  error pair counts too), no traceback;
* ``repaired``: exit 0, a line names the damage, and every result left on disk reads back
  consistently (the damaged point was recomputed);
* ``reported``: exit 0 and the report says what happened (an all-diverged run shown as
  diverged, never as learned);
* ``warned``: exit 0 with a one-line warning naming the key;
* ``handled``: exit 0 and the case's check holds (a link replaced, never written through);
* ``lost``: a case that guards data or compute failed its check (a file written through a
  link, results computed and then thrown away, another sweep's index overwritten);
* ``traceback``: an exception escaped ``main()``;
* ``silent``: exit 0 and nothing said (garbage accepted, or damage left in place);
* ``unclear``: anything else (several lines, another exit status, a hang).

The case list is fixed (no randomness), so the counts are reproducible and the same list
runs against any version of the package: ``PYTHONPATH=<checkout> python
tools/fuzz_inputs.py [--json FILE] [--only SUBSTRING] [-v]``.  Runs under an
address-space limit (``--mem-gb``, default 8) so that a memory-hungry case that is not
refused fails instead of swapping a shared machine.  Run it under ``nice``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# fuzz_cases and fuzz_damage sit beside this file; the folder goes on the path so that
# ``python -m tools.fuzz_inputs`` finds them as ``python tools/fuzz_inputs.py`` does.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases  # noqa: E402
from fuzz_cases import Case, group_a, group_b, group_c  # noqa: E402
from fuzz_damage import group_d, group_e, group_f  # noqa: E402
from fuzz_hostile import group_g, group_h  # noqa: E402


# -- running and classifying ---------------------------------------------------------------
class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@contextlib.contextmanager
def _capture():
    """Capture file descriptors 1 and 2 (so that text printed through a stream bound at
    import time, such as a ``stream=sys.stdout`` default argument, is seen too)."""
    files = [tempfile.TemporaryFile() for _ in range(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    box = {}
    try:
        yield box
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for f, key in zip(files, ("out", "err")):
            f.seek(0)
            box[key] = f.read().decode(errors="replace")
            f.close()


def run_case(case: Case, timeout: int = 180) -> dict:
    from scaling_sgd.cli import main

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-", dir=WORK))
    rc, exc, t0, consistent = None, None, time.perf_counter(), False
    patch = case.patch(tmp) if case.patch else contextlib.nullcontext()
    box = {"out": "", "err": ""}
    try:
        argv = case.make(tmp)
        with patch:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(timeout)
            try:
                with _capture() as box:
                    try:
                        rc = main(argv)
                    except SystemExit as e:  # argparse
                        rc = e.code if isinstance(e.code, int) else 2
                    except _Timeout:
                        exc = "timeout"
                    except BaseException as e:  # noqa: BLE001 - a traceback is what we are counting
                        exc = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                        if VERBOSE:
                            traceback.print_exc()
            finally:
                signal.alarm(0)
            if exc is None:
                consistent = case.check(tmp, box["out"], box["err"]) if case.check else True
    except BaseException as e:  # noqa: BLE001 - a broken case setup or check
        exc = f"fuzz case setup/check: {type(e).__name__}: {e}".splitlines()[0][:200]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out, err = box.get("out", ""), box.get("err", "")
    return {
        "group": case.group,
        "name": case.name,
        "expect": case.expect,
        "rc": rc,
        "exception": exc,
        "stdout": out[-3000:],
        "stderr": err[-3000:],
        "consistent": consistent,
        "seconds": round(time.perf_counter() - t0, 2),
        "verdict": classify(case, rc, exc, out, err, consistent),
    }


def _error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress, notes and warnings set aside)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return [ln for ln in lines if "error" in ln.lower() or "Traceback" in ln or ln.startswith("usage:")]


def classify(case: Case, rc, exc, out: str, err: str, consistent: bool) -> str:
    if exc == "timeout":
        return "unclear"
    if exc is not None or "Traceback (most recent call last)" in err:
        return "traceback"
    if case.guard and not consistent:
        return "lost"
    errs = _error_lines(err)
    if case.expect == "fail":  # a sweep point that could not be computed: exit 1, said, never "repaired"
        text = (out + err).lower()
        if rc == 0 or "repaired" in text:
            return "silent"
        return "reported" if rc == 1 and "fail" in text else "unclear"
    if rc == 2:
        one = len(errs) == 1 or (len(errs) == 2 and errs[0].startswith("usage:"))
        return "clear" if one and consistent else "unclear"
    if rc == 0:
        text = (out + err).lower()
        if case.expect == "warn":
            return "warned" if "warning" in text and "batch_size" in text else "silent"
        if case.expect == "repair":
            said = case.quiet_ok or any(w in text for w in ("damaged", "unreadable", "recomput", "rebuil", "skipped"))
            return "repaired" if said and consistent else "silent"
        if case.expect == "report":
            return "reported" if _diverged_reported(out) else "silent"
        if case.expect == "ok":
            return "handled" if consistent else "silent"
        return "silent"
    return "unclear"


def _diverged_reported(out: str) -> bool:
    """The report says every replica diverged and counts none as learned."""
    import re

    low = out.lower()
    if "diverged" not in low:
        return False
    learned = [int(m.group(1)) for m in re.finditer(r"\s(\d+)/(\d+)", out)]
    return all(n == 0 for n in learned) and ("every replica diverged" in low or bool(learned))


def _all_cases() -> list[Case]:
    return group_a() + group_b() + group_c() + group_d() + group_e() + group_f() + group_g() + group_h()


def worker(work: Path) -> int:
    """Run the cases whose indices arrive on stdin; one JSON line per case on stdout.

    A case may kill the process outright (an XLA abort on an absurd shape); the parent
    then records it as a crash and starts a new worker for the rest.
    """
    global WORK
    WORK, fuzz_cases.FIXTURES = work, work / "fixtures"
    fuzz_cases.FIXTURES.mkdir(exist_ok=True)
    cases = _all_cases()
    real_stdout = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        r = run_case(cases[int(line)])
        print("RESULT " + json.dumps(r), file=real_stdout, flush=True)
    return 0


def _spawn(work: Path, log):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", str(work), "--mem-gb", str(ARGS.mem_gb)] + (["-v"] if VERBOSE else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )


def main(argv=None) -> int:
    global VERBOSE, ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every case and its verdict here")
    ap.add_argument("--only", help="run only cases whose group or name contains this (or one of these, comma-separated)")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="address-space limit of the worker process (GB)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    ARGS = args = ap.parse_args(argv)
    VERBOSE = args.verbose
    if args.worker:
        lim = int(args.mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        return worker(Path(args.worker))
    cases = _all_cases()
    only = [w for w in (args.only or "").split(",") if w]
    todo = [i for i, c in enumerate(cases) if not only or any(w in c.group or w in c.name for w in only)]
    work = Path(tempfile.mkdtemp(prefix="scaling-sgd-fuzz-"))
    import scaling_sgd

    print(f"scaling_sgd from {Path(scaling_sgd.__file__).parent}; {len(todo)} cases", flush=True)
    results = []
    t0 = time.perf_counter()
    log = open(work / "worker.log", "w")  # noqa: SIM115 - closed in finally
    proc = None
    try:
        for n, i in enumerate(todo, 1):
            c = cases[i]
            if proc is None or proc.poll() is not None:
                proc = _spawn(work, log)
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            r = None
            while True:
                line = proc.stdout.readline()
                if not line:  # the worker died: an abort is worse than a traceback
                    proc.wait()
                    r = {"group": c.group, "name": c.name, "expect": c.expect, "rc": proc.returncode, "verdict": "traceback"}
                    r["exception"] = f"process killed by signal {-proc.returncode}" if proc.returncode < 0 else "process died"
                    proc = None
                    break
                if line.startswith("RESULT "):
                    r = json.loads(line[7:])
                    break
            results.append(r)
            msg = f"[{n:3d}/{len(todo)}] {r['verdict']:<9} {c.group}: {c.name}"
            if r["verdict"] not in ("clear", "repaired", "reported", "warned", "handled") or VERBOSE:
                detail = r.get("exception") or (_error_lines(r.get("stderr", "")) or [""])[-1] or f"rc={r['rc']}"
                msg += f"  <- {detail[:160]}"
            print(msg, flush=True)
    finally:
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    counts, by_group = {}, {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        g = by_group.setdefault(r["group"], {})
        g[r["verdict"]] = g.get(r["verdict"], 0) + 1
    summary = {"cases": len(results), "counts": counts, "by_group": by_group, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "cases": results}, indent=1))
    return 0


VERBOSE = False
ARGS = None
WORK = Path(tempfile.gettempdir())

if __name__ == "__main__":
    sys.exit(main())
