"""Robustness against a hostile or careless user, output side: links, outputs found
unwritable only after the compute, analysis files on a full disk, sweep folders shared by
two sweeps or tampered with, claims that are not claims, and the memory budget."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time

import pytest
from robustness_common import SWEEP, _one_error_line

from scaling_sgd._src import preflight, runner, sweep_state
from scaling_sgd._src.errors import ResourceError, ResultsError
from scaling_sgd.cli import main


@pytest.fixture()
def no_compute(monkeypatch):
    """Fail the test if a run is simulated (a refusal must come before the compute)."""

    def boom(*a, **k):
        raise AssertionError("compute started")

    monkeypatch.setattr(runner, "simulate", boom)


# -- links and paths ------------------------------------------------------------------------
def test_analyze_replaces_a_link_never_writes_through_it(runs, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(runs["A"], d)
    (tmp_path / "important").write_bytes(b"precious")
    (d / "staircase.png").symlink_to(tmp_path / "important")
    assert main(["analyze", str(d)]) == 0
    assert (tmp_path / "important").read_bytes() == b"precious"
    assert not (d / "staircase.png").is_symlink() and (d / "staircase.png").read_bytes()[:4] == b"\x89PNG"


def test_out_that_cannot_take_the_results_is_refused_before_compute(base_toml, tmp_path, monkeypatch, capsys, no_compute):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".scaling-sgd-tmp").write_text("in the way")
    (tmp_path / "empty").mkdir()
    cases = [
        (str(tmp_path / "link"), "symbolic link"),
        (str(tmp_path / "p" / "out"), ".scaling-sgd-tmp"),
        (str(tmp_path / ("x" * 300)), "too long"),
        (".", "current folder"),
    ]
    monkeypatch.chdir(tmp_path / "empty")
    for out, words in cases:
        assert main(["run", str(base_toml), "--out", out]) == 2
        assert words in _one_error_line(capsys.readouterr().err)
    assert (tmp_path / "link").is_symlink() and not os.listdir(tmp_path / "target")
    assert not os.listdir(tmp_path / "empty")


# -- analysis files on a full disk ------------------------------------------------------------
def test_analyze_on_a_full_disk_keeps_the_old_figures(runs, tmp_path, monkeypatch, capsys):
    d = tmp_path / "run"
    shutil.copytree(runs["A"], d)
    assert main(["analyze", str(d)]) == 0
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["analyze", str(d)]) == 2
    assert "No space left" in _one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # no 0-byte figure, no temporary file


# -- sweep folders ------------------------------------------------------------------------------
@pytest.fixture()
def swept(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(SWEEP)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "sw")]) == 0
    capsys.readouterr()
    return cfg, tmp_path / "sw"


def test_a_sweep_folder_belongs_to_one_sweep(swept, tmp_path, capsys):
    cfg, sw = swept
    other = tmp_path / "o.toml"
    other.write_text(SWEEP.replace("d = 8", "d = 9"))
    index = (sw / "sweep.json").read_bytes()
    assert main(["sweep", str(other), "--out", str(sw)]) == 2
    assert "another sweep" in _one_error_line(capsys.readouterr().err)
    assert (sw / "sweep.json").read_bytes() == index
    (sw / "sweep.json").unlink()  # the index lost: the point folders still say whose folder it is
    assert main(["sweep", str(other), "--out", str(sw)]) == 2
    assert "another sweep" in _one_error_line(capsys.readouterr().err)
    assert main(["sweep", str(cfg), "--out", str(sw)]) == 0  # its own sweep resumes


def test_untrusted_index_is_rebuilt_and_never_leads_outside(swept, runs, tmp_path, capsys):
    cfg, sw = swept
    idx = json.loads((sw / "sweep.json").read_text())
    shutil.copytree(runs["B"], tmp_path / "other")
    for edit in (
        lambda i: i["points"][0].__setitem__("dir", "../other"),
        lambda i: i["points"][0].__setitem__("dir", str(tmp_path / "other")),
        lambda i: i["points"][1].__setitem__("dir", i["points"][0]["dir"]),
        lambda i: i["points"][0].__setitem__("settings", "steps=20"),
    ):
        bad = json.loads(json.dumps(idx))
        edit(bad)
        (sw / "sweep.json").write_text(json.dumps(bad))
        got = sweep_state.read_sweep_index(sw)
        assert "not to be trusted" in got["rebuilt_from_points"]
        assert sorted(p["id"] for p in got["points"]) == sorted(p["id"] for p in idx["points"])
        assert main(["analyze", str(sw)]) == 0
        assert not (tmp_path / "other" / "summary.json").exists()
    bad = dict(idx, format=99)
    (sw / "sweep.json").write_text(json.dumps(bad))
    with pytest.raises(ResultsError, match="format 99"):
        sweep_state.read_sweep_index(sw)
    assert main(["sweep", str(cfg), "--out", str(sw)]) == 2
    assert "format 99" in _one_error_line(capsys.readouterr().err)


def test_load_sweep_of_a_run_folder_is_one_line(runs):
    import scaling_sgd as ss

    with pytest.raises(ResultsError, match="a run folder"):
        ss.load_sweep(runs["A"])


@pytest.mark.parametrize("name,kind", [("sweep.json", "dir"), ("sweep.lock", "dir"), ("claims", "file"), ("points", "file")])
def test_sweep_folder_entries_of_the_wrong_kind(swept, name, kind, capsys):
    cfg, sw = swept
    p = sw / name
    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    p.mkdir() if kind == "dir" else p.write_text("x")
    assert main(["sweep", str(cfg), "--out", str(sw)]) == 2
    assert name in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("content", [b"", b"\x00\xff{garbage"])
def test_unreadable_claim_is_stale_after_a_moment(tmp_path, content):
    c = tmp_path / "claim"
    c.write_bytes(content)
    assert not sweep_state.Claim.stale(c)  # maybe being written right now
    old = time.time() - sweep_state.CLAIM_UNREADABLE_S - 1
    os.utime(c, (old, old))
    assert sweep_state.Claim.stale(c)


def test_claim_on_a_full_disk_leaves_no_file(tmp_path, monkeypatch):
    import json as _json

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_json, "dump", full)
    with pytest.raises(Exception, match="No space left"):
        sweep_state.Claim._create(tmp_path / "claim")
    assert not (tmp_path / "claim").exists()


# -- the memory budget -----------------------------------------------------------------------
def test_memory_budget_env_refuses_with_the_estimate(base_toml, tmp_path, monkeypatch, capsys, no_compute):
    monkeypatch.setenv(preflight.LIMIT_ENV, "0.01")
    assert main(["run", str(base_toml), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "needs ~" in line and preflight.LIMIT_ENV in line
    assert not (tmp_path / "o").exists()
    sw = tmp_path / "s.toml"
    sw.write_text(SWEEP)
    assert main(["sweep", str(sw), "--out", str(tmp_path / "sw")]) == 2
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "sw" / "points").exists()
    monkeypatch.setenv(preflight.LIMIT_ENV, "lots")
    with pytest.raises(ResourceError, match=preflight.LIMIT_ENV):
        preflight.memory_limit()


def test_cgroup_limits_of_every_level_count(tmp_path, monkeypatch):
    # a v2 hierarchy: the job's limit (1 GB, 0.4 used) sits above the step's (no limit)
    root = tmp_path / "cg"
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "memory.max").write_text("1000000000\n")
    (root / "job" / "memory.current").write_text("400000000\n")
    (root / "job" / "step" / "memory.max").write_text("max\n")
    (root / "job" / "step" / "memory.current").write_text("100\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    real_open = open

    def fake_open(path, *a, **k):
        return real_open(proc if str(path) == "/proc/self/cgroup" else path, *a, **k)

    monkeypatch.setattr(preflight, "CGROUP_ROOT", str(root))
    monkeypatch.setattr("builtins.open", fake_open)
    assert preflight._cgroup_available() == 600_000_000


def test_memory_estimate_scales_with_replicas():
    # the measured peak RSS grows ~20 KB a replica at d = 8, P = m = 2 (tools/memory_peak.py)
    import tomllib

    from scaling_sgd._src import config as cfgmod
    from scaling_sgd._src.spec import build_spec

    from helpers import TINY_TOML

    def est(R):
        raw = tomllib.loads(TINY_TOML)
        raw["train"]["seed"] = list(range(R))
        return sum(preflight.memory_estimate(build_spec(cfgmod.resolve(raw))).values())

    per_replica = (est(16_384) - est(8_192)) / 8_192  # bucket sizes: no padded replicas
    assert 17_000 <= per_replica <= 24_000
