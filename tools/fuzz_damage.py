"""The bad inputs of ``fuzz_inputs.py`` about results: output locations and
resources (group D), damaged run folders (E) and damaged sweeps (F)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import fuzz_cases as fc  # beside this file (fuzz_inputs puts the folder on the path)
import numpy as np
from fuzz_cases import BASE, SWEEP, Case, _cfg, _run_set  # noqa: F401 - the shared pieces


# -- group D: output locations and resources -------------------------------------------------
def _is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, ro: bool = False):
    """A tiny tmpfs at ``path`` (root only); yields False when it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    ok = (
        _is_root()
        and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0
    )
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", str(path)], capture_output=True)


@contextlib.contextmanager
def _enospc_on_fsync():
    """Every ``os.fsync`` fails with ENOSPC: a disk that fills while results are written."""
    real = os.fsync

    def fail(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = fail
    try:
        yield
    finally:
        os.fsync = real


@contextlib.contextmanager
def _readonly_open(root: Path):
    """Opening files for writing under ``root`` fails with EACCES (non-root fallback of a
    read-only folder)."""
    import builtins

    real_open, real_os_open, real_mkstemp = builtins.open, os.open, tempfile.mkstemp
    root = str(root)

    def deny(path):
        return str(path).startswith(root)

    def b_open(file, mode="r", *a, **k):
        if deny(file) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *a, **k)

    def o_open(path, flags, *a, **k):
        if deny(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_os_open(path, flags, *a, **k)

    def mkstemp(*a, dir=None, **k):
        if dir is not None and deny(dir):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*a, dir=dir, **k)

    builtins.open, os.open, tempfile.mkstemp = b_open, o_open, mkstemp
    try:
        yield
    finally:
        builtins.open, os.open, tempfile.mkstemp = real_open, real_os_open, real_mkstemp


def _run_into(out_of, extra=()):
    def make(tmp):
        return ["run", str(_cfg(tmp)), "--out", str(out_of(tmp)), *extra]

    return make


def _prefilled(tmp: Path, other_config: bool, analysed: bool = True) -> Path:
    """``tmp/out`` holding a finished run (of the base config, or of another one)."""
    from scaling_sgd.cli import main

    out = tmp / "out"
    sets = ["--set", "data.d=9"] if other_config else []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", str(_cfg(tmp)), "--out", str(out), *sets]) == 0
        if analysed:
            main(["analyze", str(out)])
    return out


def _check_out_is_this_config(tmp, out_text, err_text) -> bool:
    """``tmp/out`` is now the base config's run, with no analysis file of the other one."""
    cj = json.loads((tmp / "out" / "config.json").read_text())
    stale = [n for n in ("summary.json", "emergence.json") if (tmp / "out" / n).exists()]
    return cj["config"]["data"]["d"] == 8 and not stale


def _check_other_kept(tmp, out_text, err_text) -> bool:
    cj = json.loads((tmp / "out" / "config.json").read_text())
    return cj["config"]["data"]["d"] == 9 and (tmp / "out" / "summary.json").exists()


def group_d() -> list[Case]:
    cases = []

    def out_file(tmp):
        (tmp / "out").write_text("a file")
        return tmp / "out"

    def under_file(tmp):
        (tmp / "f").write_text("a file")
        return tmp / "f" / "out"

    cases.append(Case("output", "--out is a file", _run_into(out_file)))
    cases.append(Case("output", "--out under a file", _run_into(under_file)))

    def with_user_files(tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "notes.txt").write_text("precious")
        return tmp / "out"

    cases.append(
        Case(
            "output",
            "--out holds the user's own files",
            _run_into(with_user_files),
            check=lambda tmp, o, e: (tmp / "out" / "notes.txt").read_text() == "precious",
        )
    )
    cases.append(
        Case(
            "output",
            "--out holds another config's analysed run",
            lambda tmp: ["run", str(_cfg(tmp)), "--out", str(_prefilled(tmp, other_config=True))],
            check=_check_other_kept,
        )
    )
    # read-only output: a read-only tmpfs when root may mount one, else denied opens
    ro_state = {}

    def ro_make(tmp):
        return ["run", str(_cfg(tmp)), "--out", str(tmp / "ro" / "out")]

    @contextlib.contextmanager
    def ro_patch(tmp):
        with _tmpfs(tmp / "ro", "1m", ro=True) as ok:
            ro_state["real"] = ok
            if ok:
                yield
            else:
                with _readonly_open(tmp / "ro"):
                    yield

    cases.append(Case("output", "read-only --out", ro_make, patch=ro_patch))

    # full disk: a 16 KiB tmpfs (root) or a disk that fills during the write (mock)
    @contextlib.contextmanager
    def full_patch(tmp):
        with _tmpfs(tmp / "small", "16k") as ok:
            if ok:
                yield
            else:
                with _enospc_on_fsync():
                    yield

    cases.append(
        Case(
            "output",
            "full disk (results bigger than the free space)",
            lambda tmp: [
                "run",
                str(_cfg(tmp)),
                "--out",
                str(tmp / "small" / "out"),
                "--set",
                "log.points=2000",
                "--set",
                "train.seed=[0,1,2,3,4,5,6,7]",
            ],
            patch=full_patch,
            check=lambda tmp, o, e: not (tmp / "small" / "out" / "config.json").exists() or _loads(tmp / "small" / "out"),
        )
    )

    @contextlib.contextmanager
    def enospc_patch(tmp):
        with _enospc_on_fsync():
            yield

    cases.append(
        Case(
            "output",
            "disk fills while writing (ENOSPC)",
            _run_into(lambda tmp: tmp / "out"),
            patch=enospc_patch,
            check=lambda tmp, o, e: not (tmp / "out").exists() or not list((tmp / "out").iterdir()),
        )
    )
    cases.append(
        Case(
            "output",
            "disk fills while rewriting a run of the same config (ENOSPC)",
            lambda tmp: ["run", str(_cfg(tmp)), "--out", str(_prefilled(tmp, other_config=False, analysed=False))],
            patch=enospc_patch,
            check=lambda tmp, o, e: _loads(tmp / "out"),
        )
    )
    # memory: d = 1e7 with 64 replicas needs hundreds of GB for the input blocks alone
    cases.append(
        Case(
            "resources",
            "impossible memory (d = 1e7, 64 replicas)",
            _run_set("data.d=10000000", "train.seed=" + str(list(range(64))), "student.m=8", "teacher.P=8"),
        )
    )
    cases.append(
        Case(
            "resources",
            "impossible memory (flow, P = m = 4096)",
            _run_set("train.engine='flow'", "data.d=100000", "teacher.P=4096", "student.m=4096"),
        )
    )
    return cases


def _loads(run_dir: Path) -> bool:
    """A run directory reads back: config.json parses and metrics.npz loads with matching shapes."""
    try:
        cj = json.loads((run_dir / "config.json").read_text())
        with np.load(run_dir / "metrics.npz") as z:
            loss, skill = z["loss"], z["skill"]
        R = len(cj["config"]["train"]["seed"]) if isinstance(cj["config"]["train"]["seed"], list) else 1
        return loss.shape[0] == skill.shape[0] >= R and skill.shape[-1] == cj["config"]["teacher"]["P"]
    except Exception:
        return False


# -- group E: damaged run folders (analyze) ----------------------------------------------------
_RUNS: dict = {}


def _good_runs(root: Path) -> dict:
    """Two finished runs of different configs, and an all-diverged one (made once)."""
    from scaling_sgd.cli import main

    if not _RUNS and (root / "D" / "config.json").exists():
        _RUNS.update(A=root / "A", B=root / "B", C=root / "C", D=root / "D")
    if not _RUNS:
        cfg = _cfg(root)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["run", str(cfg), "--out", str(root / "A")]) == 0
            assert main(["run", str(cfg), "--out", str(root / "B"), "--set", "train.lr=2e-3"]) == 0
            assert main(["run", str(cfg), "--out", str(root / "C"), "--set", "teacher.P=3"]) == 0
            # h4, d = 32, lr = 1e-2: every replica diverges
            div = ["--set", "data.d=32", "--set", "train.lr=1e-2", "--set", "teacher.P=4", "--set", "student.m=4"]
            div += ["--set", "train.steps=2000", "--set", "train.seed=[0,1,2,3]", "--set", "log.points=30"]
            assert main(["run", str(cfg), "--out", str(root / "D"), *div]) == 0
        _RUNS.update(A=root / "A", B=root / "B", C=root / "C", D=root / "D")
    return _RUNS


def _damaged(fn):
    """``analyze`` of a copy of run A damaged by ``fn(copy_dir, runs)``."""

    def make(tmp):
        runs = _good_runs(fc.FIXTURES)
        d = tmp / "run"
        shutil.copytree(runs["A"], d)
        fn(d, runs)
        return ["analyze", str(d)]

    return make


def _rewrite_npz(d: Path, edit):
    with np.load(d / "metrics.npz") as z:
        m = {k: z[k] for k in z.files}
    edit(m)
    np.savez_compressed(d / "metrics.npz", **m)


def _edit_json(d: Path, edit):
    cj = json.loads((d / "config.json").read_text())
    edit(cj)
    (d / "config.json").write_text(json.dumps(cj))


def group_e() -> list[Case]:
    dmg = [
        ("config.json deleted", lambda d, r: (d / "config.json").unlink()),
        ("metrics.npz deleted", lambda d, r: (d / "metrics.npz").unlink()),
        ("metrics.npz truncated to half", lambda d, r: _truncate(d / "metrics.npz", 0.5)),
        ("metrics.npz empty", lambda d, r: _truncate(d / "metrics.npz", 0.0)),
        ("metrics.npz random bytes", lambda d, r: (d / "metrics.npz").write_bytes(np.random.default_rng(0).bytes(4000))),
        ("metrics.npz one byte flipped", lambda d, r: _flip(d / "metrics.npz")),
        ("config.json truncated", lambda d, r: _truncate(d / "config.json", 0.5)),
        ("config.json is []", lambda d, r: (d / "config.json").write_text("[]")),
        ("config.json is {}", lambda d, r: (d / "config.json").write_text("{}")),
        ("config.json non-UTF-8", lambda d, r: (d / "config.json").write_bytes(b"\xff\xfe{")),
        ("config.json without teacher", lambda d, r: _edit_json(d, lambda c: c["config"].pop("teacher"))),
        ("config.json with P = 'x'", lambda d, r: _edit_json(d, lambda c: c["config"]["teacher"].__setitem__("P", "x"))),
        ("metrics.npz swapped with a run of the same shape", lambda d, r: shutil.copy(r["B"] / "metrics.npz", d / "metrics.npz")),
        ("metrics.npz swapped with a run of another P", lambda d, r: shutil.copy(r["C"] / "metrics.npz", d / "metrics.npz")),
        ("config.json swapped with a run of another P", lambda d, r: shutil.copy(r["C"] / "config.json", d / "config.json")),
        ("metrics.npz without skill", lambda d, r: _rewrite_npz(d, lambda m: m.pop("skill"))),
        (
            "metrics.npz with loss of the wrong shape",
            lambda d, r: _rewrite_npz(d, lambda m: m.__setitem__("loss", m["loss"][:, :2])),
        ),
        (
            "metrics.npz with step not increasing",
            lambda d, r: _rewrite_npz(d, lambda m: m.__setitem__("step", m["step"][::-1].copy())),
        ),
        ("metrics.npz is a directory", lambda d, r: ((d / "metrics.npz").unlink(), (d / "metrics.npz").mkdir())),
        ("config.json is a directory", lambda d, r: ((d / "config.json").unlink(), (d / "config.json").mkdir())),
        (
            "only temporary files",
            lambda d, r: [(p.unlink(), (d / f".{p.name}.x.tmp").write_text("{")) for p in list(d.iterdir())],
        ),
        ("empty folder", lambda d, r: [p.unlink() for p in list(d.iterdir())]),
    ]
    cases = [Case("damaged run", name, _damaged(fn)) for name, fn in dmg]

    def all_diverged_analyze(tmp):
        return ["analyze", str(_copy(_good_runs(fc.FIXTURES)["D"], tmp / "run"))]

    def all_diverged_run(tmp):
        div = ["--set", "data.d=32", "--set", "train.lr=1e-2", "--set", "teacher.P=4", "--set", "student.m=4"]
        div += ["--set", "train.steps=2000", "--set", "train.seed=[0,1,2,3]", "--set", "log.points=30"]
        return ["run", str(_cfg(tmp)), "--out", str(tmp / "out"), *div]

    cases.append(Case("diverged", "analyze of an all-diverged run", all_diverged_analyze, "report"))
    cases.append(Case("diverged", "run table of an all-diverged run", all_diverged_run, "report"))
    return cases


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(p: Path, frac: float):
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * frac)])


def _flip(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


# -- group F: damaged sweeps (resume and analyze) ----------------------------------------------
_SWEEP: dict = {}


def _good_sweep(root: Path) -> Path:
    from scaling_sgd.cli import main

    if not _SWEEP and (root / "SW" / "sweep.json").exists():
        _SWEEP["dir"] = root / "SW"
    if not _SWEEP:
        out = root / "SW"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["sweep", str(_cfg(root, SWEEP, "sweep.toml")), "--out", str(out)]) == 0
        _SWEEP["dir"] = out
    return _SWEEP["dir"]


def _points(sw: Path) -> list[Path]:
    return sorted(p for p in (sw / "points").iterdir() if p.is_dir() and not p.name.startswith("."))


def _sweep_consistent(tmp, out_text, err_text) -> bool:
    """Every point of the sweep reads back and the index says done."""
    sw = tmp / "sw"
    try:
        index = json.loads((sw / "sweep.json").read_text())
    except Exception:
        return False
    return all(p.get("state") == "done" and _loads(sw / p["dir"]) for p in index["points"])


def _damaged_sweep(fn, command: str):
    def make(tmp):
        sw = tmp / "sw"
        shutil.copytree(_good_sweep(fc.FIXTURES), sw)
        fn(sw, _points(sw))
        if command == "resume":
            return ["sweep", str(_cfg(tmp, SWEEP)), "--out", str(sw)]
        return ["analyze", str(sw)]

    return make


def group_f() -> list[Case]:
    dmg = [
        ("point config.json corrupt", lambda sw, pts: (pts[0] / "config.json").write_text('{"config": ')),
        ("point metrics.npz truncated", lambda sw, pts: _truncate(pts[0] / "metrics.npz", 0.5)),
        ("point metrics.npz deleted", lambda sw, pts: (pts[0] / "metrics.npz").unlink()),
        ("point metrics.npz one byte flipped", lambda sw, pts: _flip(pts[0] / "metrics.npz")),
        ("point metrics swapped between points", lambda sw, pts: _swap(pts[0] / "metrics.npz", pts[1] / "metrics.npz")),
        ("point folder replaced by a file", lambda sw, pts: (shutil.rmtree(pts[0]), pts[0].write_text("x"))),
        ("sweep.json corrupt", lambda sw, pts: (sw / "sweep.json").write_text('{"points": [')),
        ("sweep.json deleted", lambda sw, pts: (sw / "sweep.json").unlink()),
    ]
    cases = []
    for name, fn in dmg:
        quiet = name.startswith("sweep.json")  # the index is derived data: rebuilding it needs no message
        cases.append(
            Case(
                "damaged sweep",
                f"resume: {name}",
                _damaged_sweep(fn, "resume"),
                "repair",
                check=_sweep_consistent,
                quiet_ok=quiet,
            )
        )
    for name, fn in dmg[:5] + dmg[6:]:
        # analyze lists the damaged point (or rebuilds the index) and analyses the rest
        cases.append(Case("damaged sweep", f"analyze: {name}", _damaged_sweep(fn, "analyze"), "repair"))
    return cases


def _swap(a: Path, b: Path):
    t = a.with_name("swap.tmp")
    a.rename(t)
    b.rename(a)
    t.rename(b)
