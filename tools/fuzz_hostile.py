"""The bad inputs of ``fuzz_inputs.py`` of a hostile or careless user: values at the edge
of the dtype, optimizers that fail only when compiled, deep or huge inputs (group G), and
links, unwritable or full output folders, and sweep folders that were tampered with
(group H).  A case with ``guard`` counts a failed check as a loss of data or compute."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import fuzz_cases as fc  # beside this file (fuzz_inputs puts the folder on the path)
from fuzz_cases import BASE, SWEEP, Case, _argv, _cfg, _run_set
from fuzz_damage import _enospc_on_fsync, _good_runs, _good_sweep, _points, _readonly_open, _sweep_consistent

BIG_INT = "1" + "0" * 400  # past every float


# -- group G: values, optimizers, deep and huge inputs --------------------------------------
def group_g() -> list[Case]:
    sets = [
        ("activation {4 = 1e-25} in float32", ["teacher.activation={4 = 1e-25}"]),
        ("activation {4 = 1e-200} in float64", ["train.dtype='float64'", "teacher.activation={4 = 1e-200}"]),
        ("activation {4 = 1e200}", ["teacher.activation={4 = 1e200}"]),
        ("student activation {4 = 1e-30}", ["student.activation={4 = 1e-30}"]),
        ("activation keys '4' and '04'", ["teacher.activation={4 = 1.0, '04' = 0.5}"]),
        ("schedule_n0 = 1e-50 (inverse_time)", ["train.schedule='inverse_time'", "train.schedule_n0=1e-50"]),
        ("schedule_n0 = 1e308 (inverse_sqrt)", ["train.schedule='inverse_sqrt'", "train.schedule_n0=1e308"]),
        ("seed = [0, 0]", ["train.seed=[0, 0]"]),
        ("lr = [1e-3, 1e-3]", ["train.lr=[1e-3, 1e-3]"]),
        ("beta = [-0.0, 0.0]", ["teacher.beta=[-0.0, 0.0]"]),
        ("lr = 10^400 (an integer)", [f"train.lr={BIG_INT}"]),
        ("beta = 10^400", [f"teacher.beta={BIG_INT}"]),
        ("teacher.a with 10^400", [f"teacher.a=[1.0, {BIG_INT}]"]),
        ("activation {4 = 10^400}", [f"teacher.activation={{4 = {BIG_INT}}}"]),
        ("init_scale = 10^400", [f"student.init_scale={BIG_INT}"]),
        ("schedule_n0 = 10^400", [f"train.schedule_n0={BIG_INT}"]),
        ("diverge_bound = 10^400", [f"train.diverge_bound={BIG_INT}"]),
        ("threshold = 10^400", [f"analysis.threshold={BIG_INT}"]),
        ("--set nested 3000 deep", ["train.lr=" + "[" * 3000 + "]" * 3000]),
    ]
    cases = [Case("hostile value", name, _run_set(*s)) for name, s in sets]
    cases.append(
        Case(
            "hostile value",
            "error line of a 200 KB value",
            _run_set("train.optimizer='" + "x" * 200_000 + "'"),
            check=lambda tmp, o, e: len(e) < 2000,
        )
    )
    for opt in ("lbfgs", "sm3", "rprop", "optimistic_adam"):
        cases.append(Case("hostile value", f"optimizer {opt!r}", _run_set(f"train.optimizer='{opt}'")))

    def deep_file(tmp):
        p = tmp / "c.toml"
        p.write_text(BASE + "[analysis]\nx = " + "[" * 3000 + "]" * 3000 + "\n")
        return ["run", str(p), "--out", str(tmp / "out")]

    def fifo(tmp):
        p = tmp / "c.toml"
        os.mkfifo(p)
        return ["run", str(p), "--out", str(tmp / "out")]

    cases.append(Case("hostile file", "TOML file nested 3000 deep", deep_file))
    cases.append(
        Case(
            "hostile file",
            "config is a FIFO",
            fifo,
            check=lambda tmp, o, e: "no such file" not in e.lower(),
        )
    )
    long = "x" * 300
    cases.append(Case("hostile file", "run --out of 300 characters", _argv("run", "{cfg}", "--out", "{tmp}/" + long)))
    cases.append(Case("hostile file", "sweep --out of 300 characters", _argv("sweep", "{sw}", "--out", "{tmp}/" + long)))
    cases.append(Case("hostile file", "analyze a path of 300 characters", _argv("analyze", "{tmp}/" + long)))
    cases.append(Case("hostile file", "--shard 1_0/2_0", _argv("sweep", "{sw}", "--out", "{tmp}/sw", "--shard", "1_0/2_0")))
    return cases


# -- group H: links, unwritable and full outputs, tampered sweeps ---------------------------
@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update(kv)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _no_compute(flag: dict):
    """Record whether a run was compiled and simulated (a refusal must come before)."""
    from scaling_sgd._src import runner

    real = runner.simulate

    def spy(*a, **k):
        flag["computed"] = True
        return real(*a, **k)

    runner.simulate = spy
    try:
        yield
    finally:
        runner.simulate = real


def _analysed_copy(tmp: Path) -> Path:
    """A copy of run A with its analysis and figures written."""
    from scaling_sgd.cli import main

    d = tmp / "run"
    shutil.copytree(_good_runs(fc.FIXTURES)["A"], d)
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - closed by the process
        assert main(["analyze", str(d)]) == 0
    return d


def _figure_kept(tmp: Path) -> bool:
    d = tmp / "run"
    return (d / "staircase.png").read_bytes() == (tmp / "staircase.before").read_bytes()


def _analyze_denied(patch_factory):
    state = {}

    def make(tmp):
        d = _analysed_copy(tmp)
        shutil.copy(d / "staircase.png", tmp / "staircase.before")
        state["d"] = d
        return ["analyze", str(d)]

    @contextlib.contextmanager
    def patch(tmp):
        with patch_factory(tmp / "run"):
            yield

    return make, patch


def _sweep_copy(tmp: Path) -> Path:
    sw = tmp / "sw"
    shutil.copytree(_good_sweep(fc.FIXTURES), sw)
    return sw


def _tampered(fn, command: str):
    def make(tmp):
        sw = _sweep_copy(tmp)
        fn(sw, _points(sw), tmp)
        if command == "resume":
            return ["sweep", str(_cfg(tmp, SWEEP)), "--out", str(sw)]
        return ["analyze", str(sw)]

    return make


def _edit_index(edit):
    def fn(sw, pts, tmp):
        idx = json.loads((sw / "sweep.json").read_text())
        edit(idx, tmp)
        (sw / "sweep.json").write_text(json.dumps(idx))

    return fn


def _other_untouched(tmp, o, e) -> bool:
    return not (tmp / "other" / "summary.json").exists() and not list((tmp / "other").glob("*.png"))


def group_h() -> list[Case]:
    cases = []
    flags: dict = {}

    # symlinks
    def link_fig(tmp):
        d = _analysed_copy(tmp)
        (tmp / "important").write_text("precious")
        (d / "staircase.png").unlink()
        (d / "staircase.png").symlink_to(tmp / "important")
        return ["analyze", str(d)]

    cases.append(
        Case(
            "links",
            "analyze with staircase.png a link to the user's file",
            link_fig,
            "ok",
            check=lambda tmp, o, e: (tmp / "important").read_bytes() == b"precious",
            guard=True,
        )
    )

    def out_link(tmp):
        (tmp / "target").mkdir()
        (tmp / "link").symlink_to(tmp / "target")
        return ["run", str(_cfg(tmp)), "--out", str(tmp / "link")]

    cases.append(Case("links", "--out is a symlink", out_link, check=lambda tmp, o, e: (tmp / "link").is_symlink(), guard=True))

    # unwritable outputs found before the compute
    def tmp_blocked(tmp):
        (tmp / "p").mkdir()
        (tmp / "p" / ".scaling-sgd-tmp").write_text("in the way")
        return ["run", str(_cfg(tmp)), "--out", str(tmp / "p" / "out")]

    cases.append(
        Case(
            "before compute",
            "parent holds a file .scaling-sgd-tmp",
            tmp_blocked,
            patch=lambda tmp: _no_compute(flags.setdefault(str(tmp), {})),
            check=lambda tmp, o, e: not flags.get(str(tmp), {}).get("computed"),
            guard=True,
        )
    )

    @contextlib.contextmanager
    def in_empty(tmp):
        (tmp / "empty").mkdir()
        cwd = os.getcwd()
        os.chdir(tmp / "empty")
        try:
            with _no_compute(flags.setdefault(str(tmp), {})):
                yield
        finally:
            os.chdir(cwd)

    cases.append(
        Case(
            "before compute",
            "--out . in an empty folder",
            lambda tmp: ["run", str(_cfg(tmp)), "--out", "."],
            patch=in_empty,
            check=lambda tmp, o, e: not flags.get(str(tmp), {}).get("computed") or (tmp / "empty" / "config.json").is_file(),
            guard=True,
        )
    )

    # the memory budget: SCALING_SGD_MEMORY_LIMIT, refused with the estimate, before any file
    cases.append(
        Case(
            "before compute",
            "SCALING_SGD_MEMORY_LIMIT = 0.01 (GB)",
            _run_set(),
            patch=lambda tmp: _env(SCALING_SGD_MEMORY_LIMIT="0.01"),
            check=lambda tmp, o, e: "needs ~" in e and not (tmp / "out").exists(),
        )
    )
    cases.append(
        Case(
            "before compute",
            "sweep refused by the memory budget",
            _argv("sweep", "{sw}", "--out", "{tmp}/sw"),
            patch=lambda tmp: _env(SCALING_SGD_MEMORY_LIMIT="0.01"),
            check=lambda tmp, o, e: not (tmp / "sw").exists() and not (tmp / ".scaling-sgd-tmp").exists(),
        )
    )

    # analyze on a full disk or a read-only folder: the old figures stay, one line
    for name, pf in (("analyze on a full disk (ENOSPC)", lambda d: _enospc_on_fsync()), ("analyze read-only", _readonly_open)):
        make, patch = _analyze_denied(pf)
        cases.append(Case("atomic analysis", name, make, patch=patch, check=lambda tmp, o, e: _figure_kept(tmp), guard=True))

    # sweeps: one sweep per folder, the index not trusted, claims that are not claims
    def two_sweeps(tmp):
        from scaling_sgd.cli import main

        with contextlib.redirect_stdout(open(os.devnull, "w")), contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
            assert main(["sweep", str(_cfg(tmp, SWEEP, "a.toml")), "--out", str(tmp / "sw")]) == 0
        shutil.copy(tmp / "sw" / "sweep.json", tmp / "index.before")
        return ["sweep", str(_cfg(tmp, SWEEP.replace("d = [8, 9]", "d = [10, 11]"), "b.toml")), "--out", str(tmp / "sw")]

    cases.append(
        Case(
            "sweep folder",
            "a second sweep of another config into one --out",
            two_sweeps,
            check=lambda tmp, o, e: (tmp / "sw" / "sweep.json").read_bytes() == (tmp / "index.before").read_bytes(),
            guard=True,
        )
    )

    def other_dir(tmp):
        (tmp / "other").mkdir()
        shutil.copytree(_good_runs(fc.FIXTURES)["A"], tmp / "other" / "run")
        return tmp / "other" / "run"

    # (name, damage, what analyze should do, what a resume should do)
    tamper = [
        (
            "dir '../other'",
            _edit_index(lambda i, t: i["points"][0].__setitem__("dir", os.path.relpath(other_dir(t), t / "sw"))),
            "repair",
            "rebuild",
        ),
        ("dir absolute", _edit_index(lambda i, t: i["points"][0].__setitem__("dir", str(other_dir(t)))), "repair", "rebuild"),
        (
            "two entries share a folder",
            _edit_index(lambda i, t: i["points"][1].__setitem__("dir", i["points"][0]["dir"])),
            "repair",
            "rebuild",
        ),
        ('"format": 99', _edit_index(lambda i, t: i.__setitem__("format", 99)), "error", "error"),
        ("settings a string", _edit_index(lambda i, t: i["points"][0].__setitem__("settings", "d=8")), "repair", "rebuild"),
        (
            "sweep.json is a folder",
            lambda sw, pts, t: ((sw / "sweep.json").unlink(), (sw / "sweep.json").mkdir()),
            "repair",
            "error",
        ),
        (
            "sweep.lock is a folder",
            lambda sw, pts, t: ((sw / "sweep.lock").unlink(missing_ok=True), (sw / "sweep.lock").mkdir()),
            "ok",
            "error",
        ),
        (
            "claims is a file",
            lambda sw, pts, t: (shutil.rmtree(sw / "claims", ignore_errors=True), (sw / "claims").write_text("x")),
            "ok",
            "error",
        ),
        (
            "points is a file",
            lambda sw, pts, t: (shutil.rmtree(sw / "points"), (sw / "points").write_text("x")),
            "error",
            "error",
        ),
    ]

    def consistent_and_untouched(tmp, o, e):
        return _sweep_consistent(tmp, o, e) and (not (tmp / "other").exists() or _other_untouched(tmp, o, e))

    for name, fn, on_analyze, on_resume in tamper:
        outside = "other" in name or "absolute" in name
        check = _other_untouched if outside else None
        cases.append(Case("sweep folder", f"analyze: {name}", _tampered(fn, "analyze"), on_analyze, check=check, guard=outside))
        if on_resume == "rebuild":  # the index is derived data: a resume rebuilds it from the point folders
            cases.append(
                Case(
                    "sweep folder",
                    f"resume: {name}",
                    _tampered(fn, "resume"),
                    "repair",
                    check=consistent_and_untouched,
                    quiet_ok=True,
                    guard=outside,
                )
            )
        else:
            cases.append(Case("sweep folder", f"resume: {name}", _tampered(fn, "resume"), on_resume))

    def run_format(tmp):
        d = tmp / "run"
        shutil.copytree(_good_runs(fc.FIXTURES)["A"], d)
        cj = json.loads((d / "config.json").read_text())
        cj["format"] = 99
        (d / "config.json").write_text(json.dumps(cj))
        return ["analyze", str(d)]

    cases.append(Case("sweep folder", 'run config.json "format": 99', run_format))

    # claims: a 0-byte or garbage claim of this host must not make a resume wait for "another job"
    def claim(content: bytes):
        def fn(sw, pts, tmp):
            shutil.rmtree(pts[0])
            (sw / "claims").mkdir(exist_ok=True)
            (sw / "claims" / pts[0].name).write_bytes(content)

        return fn

    for name, content in (("0-byte claim file", b""), ("garbage claim file", b"\x00\xff{garbage")):
        cases.append(
            Case(
                "sweep folder",
                f"resume: {name} of a missing point",
                _tampered(claim(content), "resume"),
                "repair",
                check=_sweep_consistent,
                quiet_ok=True,
            )
        )

    # a failed repair is a failure, never "repaired"
    @contextlib.contextmanager
    def enospc(tmp):
        with _enospc_on_fsync():
            yield

    cases.append(
        Case(
            "sweep folder",
            "resume: damaged point on a full disk",
            _tampered(lambda sw, pts, t: (pts[0] / "metrics.npz").write_bytes(b"x"), "resume"),
            "fail",
            patch=enospc,
        )
    )
    return cases
