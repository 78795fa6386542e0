"""Robustness, outputs and processes: the output-safety rule, read-only folders and
full disks, SIGTERM on real processes, sweep repair, claims and O(1) index writes.  The bad
inputs and damaged run folders are in ``test_robustness.py``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from robustness_common import (
    BASE,
    REPO,
    SWEEP,
    _cli,
    _one_error_line,
    _tree,
    _truncate,
)

from scaling_sgd._src import files, preflight, results, sweep, sweep_state
from scaling_sgd._src.engines import driver
from scaling_sgd._src.errors import OutputError
from scaling_sgd.analysis.aggregate import analyze_sweep
from scaling_sgd.cli import main


# -- outputs ---------------------------------------------------------------------------------------
def test_output_safety_rule(base_toml, runs, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(runs["B"], out)
    assert main(["analyze", str(out)]) == 0
    capsys.readouterr()
    before = _tree(out)
    # another config's results: refused in one line naming --force, nothing touched
    assert main(["run", str(base_toml), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out" in line and "another config" in line and "--force" in line
    assert _tree(out) == before
    # --force replaces the whole folder: no summary.json or figure of the other config survives
    assert main(["run", str(base_toml), "--out", str(out), "--force"]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "metrics.npz"]
    cj, _ = results.read_run(out)
    assert cj["config"]["train"]["lr"] == 1e-3
    # a rerun of the same config replaces everything too (stale analysis never beside new metrics)
    assert main(["analyze", str(out)]) == 0
    assert main(["run", str(base_toml), "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "metrics.npz"]
    capsys.readouterr()
    # a folder with a user's own files is never replaced, --force or not
    (out / "notes.txt").write_text("precious")
    for extra in ([], ["--force"]):
        assert main(["run", str(base_toml), "--out", str(out), *extra]) == 2
        assert "notes.txt" in _one_error_line(capsys.readouterr().err)
    assert (out / "notes.txt").read_text() == "precious"
    # a file, and a path under a file
    (tmp_path / "f").write_text("x")
    for target in (tmp_path / "f", tmp_path / "f" / "sub"):
        assert main(["run", str(base_toml), "--out", str(target)]) == 2
        assert "--out" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.rglob(".scaling-sgd-tmp/*"))


def test_read_only_output(base_toml, tmp_path, capsys, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkdtemp", denied)
    n0 = driver.compiled_programs()
    assert main(["run", str(base_toml), "--out", str(tmp_path / "ro" / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--out: cannot write in" in line and "Read-only file system" in line
    assert driver.compiled_programs() == n0 and not (tmp_path / "ro").exists()


def test_full_disk_leaves_the_previous_run_intact(base_toml, runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(runs["A"], out)
    before = _tree(out)
    real = files.write_file
    calls = []

    def fill(path, data):
        calls.append(path)
        if len(calls) == 2:  # config.json, after metrics.npz went in: the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(files, "write_file", fill)
    assert main(["run", str(base_toml), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "nothing there was changed" in line
    assert _tree(out) == before and results.read_run(out)
    assert not list((tmp_path / ".scaling-sgd-tmp").iterdir())  # the half-written copy is gone


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, MemoryError])
def test_an_interrupted_write_leaves_the_old_run_or_nothing(runs, tmp_path, monkeypatch, exc):
    """Ctrl-C (or any exception) between the two files of a write: the target is the old
    complete run (a rerun) or absent (a new one), and no temporary folder is left."""
    cj, metrics = results.read_run(runs["A"])
    meta = {k: v for k, v in cj.items() if k not in ("config", "metrics_sha256", "metrics_bytes")}
    real = files.write_file

    def interrupted(path, data):
        if path.name == "config.json":
            raise exc()
        real(path, data)

    monkeypatch.setattr(files, "write_file", interrupted)
    old = tmp_path / "old"
    shutil.copytree(runs["A"], old)
    before = _tree(old)
    for target in (old, tmp_path / "new"):
        with pytest.raises(exc):
            results.write_run(target, cj["config"], metrics, meta)
    assert _tree(old) == before and not (tmp_path / "new").exists()
    assert not list((tmp_path / ".scaling-sgd-tmp").iterdir())


def test_replacing_a_run_without_an_atomic_exchange(runs, tmp_path, monkeypatch):
    """Where renameat2 is missing (macOS, some network file systems) a run is replaced by
    two renames; the result is the same complete folder."""
    monkeypatch.setattr(files, "exchange", lambda a, b: False)
    out = tmp_path / "out"
    shutil.copytree(runs["A"], out)
    (out / "summary.json").write_text("{}")
    cj, metrics = results.read_run(runs["B"])
    meta = {k: v for k, v in cj.items() if k not in ("config", "metrics_sha256", "metrics_bytes")}
    results.write_run(out, cj["config"], metrics, meta)
    assert sorted(os.listdir(out)) == ["config.json", "metrics.npz"] and results.read_run(out)[0]["hash"] == cj["hash"]
    assert not list((tmp_path / ".scaling-sgd-tmp").iterdir())


def test_disk_preflight_refuses_before_compute(base_toml, tmp_path, capsys, monkeypatch):
    Usage = type("Usage", (), {"free": 500})
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage)
    n0 = driver.compiled_programs()
    assert main(["run", str(base_toml), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("scaling-sgd: error: disk: the results need ~") and "500 B free" in line
    assert driver.compiled_programs() == n0 and not (tmp_path / "o").exists()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the mocked ENOSPC test covers the write path")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_real_full_disk_on_a_tiny_tmpfs(base_toml, tmp_path, capsys, monkeypatch):
    with _tmpfs(tmp_path / "small", "64k") as small:
        # a run folder is renamed into place, so it cannot be a mount point itself
        assert main(["run", str(base_toml), "--out", str(small)]) == 2
        assert "is a mount point" in _one_error_line(capsys.readouterr().err)
        # the preflight sees the 64 KiB (results with 2000 log points need more)
        assert main(["run", str(base_toml), "--out", str(small / "o"), "--set", "log.points=2000"]) == 2
        assert "disk: the results need" in _one_error_line(capsys.readouterr().err)
        # fill it so that the estimate passes but the write cannot
        monkeypatch.setenv(preflight.SKIP_ENV, "1")
        (small / "filler").write_bytes(b"\0" * 64_000)
        assert main(["run", str(base_toml), "--out", str(small / "o")]) == 2
        assert "No space left on device" in _one_error_line(capsys.readouterr().err)
        assert not (small / "o").exists() and not list((small / ".scaling-sgd-tmp").iterdir())


# -- SIGTERM on real processes ------------------------------------------------------------------------
SLOW_WRITE = """
import sys, time
from pathlib import Path
from scaling_sgd._src import files, results
from scaling_sgd.cli import main
real = files.write_file
def slow(path, data):
    real(path, data)
    Path(sys.argv[1]).touch()  # tell the test the write has begun
    time.sleep(30)
files.write_file = slow
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigterm_leaves_a_complete_run_or_none(base_toml, runs, tmp_path):
    """Mid-compute, SIGTERM stops the run at the end of a chunk and the part done is written
    as a valid run marked partial (exit 143), or, before the loop starts, its default action
    kills at once and there is no run folder; mid-write (between metrics.npz and
    config.json: the default action again) the previous run of the same config is intact."""
    fresh, rerun, marker = tmp_path / "fresh", tmp_path / "rerun", tmp_path / "writing"
    shutil.copytree(runs["A"], rerun)
    old = _tree(rerun)
    long = ["--set", "train.steps=100000000"]
    e = {**os.environ, "PYTHONPATH": str(REPO)}
    p_compute = _cli("run", str(base_toml), "--out", str(fresh), *long, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p_write = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, str(marker), "run", str(base_toml), "--out", str(rerun)],
        cwd=REPO,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not marker.exists():
        assert p_write.poll() is None and time.time() < deadline, p_write.stderr.read()
        time.sleep(0.05)
    for p in (p_write, p_compute):
        assert p.poll() is None, "the run ended before the signal"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    assert p_write.returncode == -signal.SIGTERM
    if p_compute.returncode == 143:  # stopped between chunks: a complete run, marked partial, and its checkpoint
        meta = json.loads((fresh / "config.json").read_text())
        assert meta["partial"] is True and meta["interrupted_by"] == "SIGTERM" and results.read_run(fresh)
        assert (tmp_path / ".scaling-sgd-tmp" / "fresh.checkpoint.npz").is_file()
    else:  # killed before the chunk loop (compiling): nothing
        assert p_compute.returncode == -signal.SIGTERM and not fresh.exists()
    assert _tree(rerun) == old and results.read_run(rerun)  # the old complete run, untouched
    assert list((tmp_path / ".scaling-sgd-tmp").iterdir())  # the killed writer's half folder ...
    assert main(["run", str(base_toml), "--out", str(rerun)]) == 0  # ... is removed by the next write
    left = [e.name for e in (tmp_path / ".scaling-sgd-tmp").iterdir() if not e.name.endswith(".checkpoint.npz")]
    assert not left and results.read_run(rerun)


def test_sigterm_during_a_sweep_releases_the_claim(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE.replace("steps = 20", "steps = 100000000") + "[sweep]\nd = [8]\n")
    out = tmp_path / "sw"
    p = _cli("sweep", str(cfg), "--out", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_claim(out, p)
    time.sleep(1.0)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    took = time.time() - t0
    assert p.returncode == 143 and took < 60, (p.returncode, took, p.stderr.read().decode()[-2000:])
    assert not list((out / "claims").iterdir())  # released at once: a requeued job takes the point now
    assert not [d for d in (out / "points").iterdir() if not d.name.startswith(".")]  # no point folder
    assert "Traceback" not in p.stderr.read().decode()


def _wait_for_claim(out: Path, proc, timeout: float = 240):
    """Wait until the sweep process ``proc`` holds a claim in ``out/claims``."""
    deadline = time.time() + timeout
    while not ((out / "claims").is_dir() and list((out / "claims").iterdir())):
        assert proc.poll() is None and time.time() < deadline, "the sweep ended or hung before claiming a point"
        time.sleep(0.02)


# -- sweeps: repair, claims, O(1) index writes ------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = root / "s.toml"
    cfg.write_text(SWEEP)
    assert main(["sweep", str(cfg), "--out", str(root / "sw")]) == 0
    return cfg, root / "sw"


def _points(sw: Path) -> list[Path]:
    return [sw / p["dir"] for p in json.loads((sw / "sweep.json").read_text())["points"]]


def _metrics_equal(a: Path, b: Path):
    ma, mb = results.read_run(a)[1], results.read_run(b)[1]
    assert ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)


SWEEP_DAMAGE = {
    "truncated metrics": lambda pts: _truncate(pts[0] / "metrics.npz", 0.5),
    "corrupt config.json": lambda pts: (pts[0] / "config.json").write_text('{"config": '),
    "metrics deleted": lambda pts: (pts[0] / "metrics.npz").unlink(),
    "metrics swapped between points": lambda pts: (
        shutil.copy(pts[0] / "metrics.npz", pts[0].parent / "t"),
        shutil.copy(pts[1] / "metrics.npz", pts[0] / "metrics.npz"),
        shutil.move(pts[0].parent / "t", pts[1] / "metrics.npz"),
    ),
    "point folder replaced by a file": lambda pts: (shutil.rmtree(pts[0]), pts[0].write_text("x")),
}


@pytest.mark.parametrize("name", list(SWEEP_DAMAGE))
def test_sweep_analyze_skips_and_resume_repairs_damaged_points(swept, tmp_path, capsys, name):
    cfg, ref = swept
    sw = tmp_path / "sw"
    shutil.copytree(ref, sw)
    pts = _points(sw)
    SWEEP_DAMAGE[name](pts)
    n_bad = 2 if "swapped" in name else 1
    # analyze: the damaged points are skipped and listed, the rest analysed
    assert main(["analyze", str(sw)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped point") == n_bad and "damaged" in out
    s = json.loads((sw / "summary.json").read_text())
    assert len(s["skipped"]) == n_bad and all(x["reason"].startswith("damaged") for x in s["skipped"])
    # resume: one line per damaged point, recomputed, the others untouched
    assert main(["sweep", str(cfg), "--out", str(sw)]) == 0
    cap = capsys.readouterr()
    assert cap.err.count("recomputing it") == n_bad and f"computed {n_bad}, failed 0, already done {2 - n_bad}" in cap.out
    for p in _points(sw):
        _metrics_equal(p, ref / p.relative_to(sw))
    assert all(e["state"] == "done" for e in json.loads((sw / "sweep.json").read_text())["points"])


def test_lost_or_corrupt_sweep_json_is_rebuilt(swept, tmp_path, capsys):
    cfg, ref = swept
    for damage in (lambda p: p.unlink(), lambda p: p.write_text('{"points": [')):
        sw = tmp_path / f"sw{len(list(tmp_path.iterdir()))}"
        shutil.copytree(ref, sw)
        damage(sw / "sweep.json")
        assert main(["analyze", str(sw)]) == 0
        out = capsys.readouterr().out
        assert "rebuilt from 2 point folders" in out and "2 replica groups from 2 points" in out
        assert json.loads((sw / "summary.json").read_text())["swept"] == ["train.steps"]
        assert main(["sweep", str(cfg), "--out", str(sw)]) == 0  # the index itself comes back
        assert "computed 0, failed 0, already done 2" in capsys.readouterr().out
        assert json.loads((sw / "sweep.json").read_text()) == json.loads((ref / "sweep.json").read_text())


def test_index_is_not_rewritten_per_point(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + "[sweep]\nsteps = [20, 30, 40, 50]\n")
    calls = []
    real = sweep.Index.write
    monkeypatch.setattr(sweep.Index, "write", lambda self: calls.append(1) or real(self))
    monkeypatch.setattr(sweep_state, "INDEX_MIN_INTERVAL_S", 3600.0)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "sw")]) == 0
    assert "computed 4" in capsys.readouterr().out
    assert len(calls) == 2  # at the start and at the end, not after each of the 4 points
    index = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [p["state"] for p in index["points"]] == ["done"] * 4


def test_claims(tmp_path, monkeypatch):
    lock = sweep.Index(tmp_path, None).locked
    path = tmp_path / "claims" / "p"
    c = sweep.Claim.acquire(path, lock)
    assert c is not None and sweep.Claim.acquire(path, lock) is None  # held by a live job (this one)
    c.release()
    assert not path.exists()
    # a claim of a dead process on this host is stale and taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"host": sweep_state._HOST, "pid": int(dead.stdout), "time": 0}))
    assert sweep.Claim.stale(path)
    c = sweep.Claim.acquire(path, lock)
    assert c is not None and json.loads(path.read_text())["pid"] == os.getpid()
    c.release()
    # another host's claim is live until its heartbeat stops for CLAIM_STALE_S
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    assert not sweep.Claim.stale(path) and sweep.Claim.acquire(path, lock) is None
    old = time.time() - sweep_state.CLAIM_STALE_S - 10
    os.utime(path, (old, old))
    assert sweep.Claim.stale(path)
    sweep.Claim.clear_stale(path.parent, lock)
    assert not path.exists()
    # the heartbeat keeps a held claim fresh
    monkeypatch.setattr(sweep_state, "CLAIM_HEARTBEAT_S", 0.05)
    c = sweep.Claim.acquire(path, lock)
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5
    c.release()


@pytest.mark.slow
def test_identical_concurrent_sweeps_compute_each_point_once(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + "[sweep]\nsteps = [2000, 3000, 4000]\n")
    out = tmp_path / "sw"
    job = _cli("sweep", str(cfg), "--out", str(out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _wait_for_claim(out, job)
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    mine = capsys.readouterr().out
    theirs = job.communicate(timeout=240)[0]
    assert job.returncode == 0

    def computed(text):
        return int(text.split("computed ")[1].split(",")[0])

    assert computed(mine) + computed(theirs) == 3, (mine, theirs)  # no point computed twice
    index = json.loads((out / "sweep.json").read_text())
    assert [p["state"] for p in index["points"]] == ["done"] * 3 and not list((out / "claims").iterdir())
    for p in index["points"]:
        assert results.run_state(out / p["dir"], p["id"]) == ("done", "")


def test_sweep_refuses_an_impossible_point_before_any_compute(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(BASE + "[sweep]\nd = [8, 1000000000]\n")
    n0 = driver.compiled_programs()
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "sw")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "memory: needs ~" in line and "in sweep point data.d=1000000000" in line
    assert driver.compiled_programs() == n0


def test_analyze_sweep_api_tolerates_a_damaged_point(swept, tmp_path):
    _, ref = swept
    sw = tmp_path / "sw"
    shutil.copytree(ref, sw)
    _truncate(_points(sw)[1] / "metrics.npz", 0.3)
    s = analyze_sweep(sw, stream=None, n_boot=50, figures=False)
    assert s["groups_analysed"] == 1 and len(s["skipped"]) == 1
    with pytest.raises(OutputError):  # a run with --force can never replace a sweep's points/
        preflight.check_target(sw / "points", None, force=True)


def test_a_folder_with_an_unreadable_run_is_replaced_only_with_force(tmp_path):
    """A folder holding only a run's files but no readable config hash (an incomplete or
    damaged run) is not any config's: a run refuses it unless forced."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.npz").write_bytes(b"not a zip archive")
    with pytest.raises(OutputError, match="incomplete or damaged"):
        preflight.check_target(out, "0123abcd")
    preflight.check_target(out, "0123abcd", force=True)


def test_the_index_counts_an_interrupted_point_as_partial_not_done(swept, tmp_path):
    """A point whose run was interrupted (its config.json marked partial, as a stopped run
    writes it) is ``partial`` in the index, so a resume recomputes it."""
    from scaling_sgd._src import config as cfgmod

    cfg, ref = swept
    sw = tmp_path / "sw"
    shutil.copytree(ref, sw)
    first = _points(sw)[0]
    doc = json.loads((first / "config.json").read_text())
    (first / "config.json").write_text(json.dumps({**doc, "partial": True, "interrupted_by": "SIGINT"}))
    index = sweep_state.build_index(sw, sweep.plan(cfgmod.load(cfg)))
    assert [e["state"] for e in index["points"]] == ["partial", "done"]
