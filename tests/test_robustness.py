"""Robustness: every bad input and every damaged result gets one clear line
(exit 2) or a repair, never a traceback, and nothing wrong is reported as learned.

* config fuzzing (hypothesis): ``resolve`` accepts a config or raises ``ConfigError``,
  and what it accepts is representable (steps, lr, a_p, booleans, activations);
* hand-picked bad values through the command line (integer limits, underflow, degenerate
  activations, wrong types, malformed ``--set`` strings, impossible memory): one line
  naming the key, exit 2, nothing written;
* damaged run folders (truncated, corrupted, deleted, swapped files): ``analyze`` refuses
  them in one line; a damaged sweep point is recomputed on resume and skipped by
  ``analyze``; a lost ``sweep.json`` is rebuilt;
* outputs: another config's results (refused, ``--force``), a rerun (replaced whole), a
  user's files (never replaced), a file, a read-only folder, a full disk (mocked ENOSPC,
  and a real tmpfs where this user may mount one), the disk and memory preflight;
* SIGTERM with a real signal on real ``scaling-sgd run`` / ``sweep`` processes: a
  complete run folder or none, claims released;
* diverged replicas never counted as learned (run table, analyze, JSON);
* claims (identical concurrent sweeps compute each point once) and O(1) index writes.

Every run here shares one compiled shape, so the file costs a few compilations.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustness_common import (
    BASE,
    _edit_config,
    _flip,
    _one_error_line,
    _rewrite_npz,
    _tree,
    _truncate,
)

from scaling_sgd._src import config as cfgmod
from scaling_sgd._src import preflight, results
from scaling_sgd._src.engines import driver
from scaling_sgd._src.engines.base import MAX_STEPS_INT32
from scaling_sgd._src.errors import ConfigError, ConfigWarning, ResultsError
from scaling_sgd._src.spec import build_spec
from scaling_sgd.cli import main, print_emergence

# -- config fuzzing --------------------------------------------------------------------------
_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**31, 2**62]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-300, 1e-40, 1e-20, 1e38, 1e39, 1e300, 1e6, 200.0, -0.5]),
    st.booleans(),
    st.sampled_from(["", "h0", "h4", "relu", "sgd", "adam", "flow", "reduced", "auto", "float64", "x", "random"]),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.booleans(), st.text(max_size=2)), max_size=3),
    st.dictionaries(
        st.sampled_from(["0", "1", "4", "b1", "momentum", "nesterov", "x"]),
        st.one_of(st.floats(), st.booleans(), st.text(max_size=2)),
        max_size=2,
    ),
)
_KEYS = [(t, k) for t, body in cfgmod.defaults().items() if t != "sweep" for k in body] + [("train", "bogus"), ("nope", "x")]


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=1, max_size=3))
def test_resolve_accepts_or_raises_config_error_and_accepts_only_sound_values(edits):
    raw = {"teacher": {"P": 2}, "student": {"m": 2}, "data": {"d": 8}, "train": {"steps": 20, "progress": False}}
    for (table, key), value in edits:
        raw.setdefault(table, {})[key] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        try:
            cfg = cfgmod.resolve(raw)
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).startswith(e.key)
            return
    # what is accepted can run: representable in its dtype, within the engine's ranges
    tr, t = cfg["train"], cfg["teacher"]
    fi = np.finfo(np.float64 if tr["dtype"] == "float64" else np.float32)
    assert 1 <= tr["steps"] <= MAX_STEPS_INT32
    for lr in tr["lr"] if isinstance(tr["lr"], list) else [tr["lr"]]:
        assert fi.tiny <= lr <= fi.max and np.asarray(lr, fi.dtype) > 0
    a = np.asarray(t["a"], np.float64)[None] if t["a"] is not None else _power_law_a(cfg)
    assert np.all(a.astype(fi.dtype) > 0) and np.all(np.isfinite(a.astype(fi.dtype)))
    assert isinstance(cfg["log"]["overlap"], bool) or cfg["log"]["overlap"] == "auto"
    assert sum(preflight.memory_estimate(build_spec(cfg)).values()) > 0
    cfgmod.config_hash(cfg)


def _power_law_a(cfg):
    from scaling_sgd import power_law_coefficients

    betas = cfg["teacher"]["beta"] if isinstance(cfg["teacher"]["beta"], list) else [cfg["teacher"]["beta"]]
    return power_law_coefficients(np.asarray(betas, np.float64), cfg["teacher"]["P"])


# -- hand-picked bad values, through the command line ----------------------------------------
BAD_SETS = [
    (["train.steps=2147483648"], "train.steps"),
    (["train.steps=9223372036854775807"], "train.steps"),
    (["train.steps=9223372036854775808"], "train.steps"),  # past TOML's integers
    (["train.optimizer='adam'", "train.optimizer_kwargs={b1 = 'x'}"], "train.optimizer_kwargs"),
    (["train.optimizer_kwargs={momentum = 0.9, nesterov = 1}"], "train.optimizer_kwargs"),
    (["train.optimizer='adam'", "train.optimizer_kwargs={mu_dtype = 'nope'}"], "train.optimizer_kwargs"),
    (["teacher.a=[1.0, 0.0]"], "teacher.a"),
    (["teacher.a=[1.0, 1e-300]"], "teacher.a"),
    (["teacher.beta=1e6"], "teacher.beta"),
    (["teacher.beta=[1.0, 200.0]"], "teacher.beta"),
    (["teacher.activation='h0'"], "teacher.activation"),
    (["student.activation={0 = 1.0}"], "student.activation"),
    (["train.lr=1e-300"], "train.lr"),
    (["train.lr=1e39"], "train.lr"),
    (["student.init_scale=1e-25"], "student.init_scale"),
    (["log.overlap=1"], "log.overlap"),
    (["log.overlap=0.0"], "log.overlap"),
    (["train.engine=['sgd']"], "train.engine"),
    (["train.lr=1e-3 foo"], "--set"),
    (["train.steps=30 # a comment"], "--set"),
    (["train.steps=30\nlr = 5.0"], "--set"),
    (["train.seed=0,1"], "--set"),
    (["data.d=1000000000", "train.seed=[0,1,2,3,4,5,6,7]"], "memory"),
    (["train.batch_size=1099511627776"], "memory"),
]


@pytest.mark.parametrize("sets,key", BAD_SETS)
def test_bad_input_is_one_line_naming_the_key_before_any_compute(base_toml, tmp_path, capsys, sets, key):
    out = tmp_path / "out"
    n0 = driver.compiled_programs()
    argv = ["run", str(base_toml), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"error: {key}:" in line, line
    assert "accepted" in line if key != "memory" else "available" in line, line
    assert not out.exists() and driver.compiled_programs() == n0


def test_memory_preflight_message(base_toml, tmp_path, capsys):
    sets = ["data.d=10000000", "teacher.P=8", "student.m=8", "train.seed=" + str(list(range(64)))]
    argv = ["run", str(base_toml), "--out", str(tmp_path / "o")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "memory: needs ~" in line and "sgd input blocks" in line and "available" in line and 'engine "reduced"' in line
    # the estimate follows the shapes, and a known budget decides
    cfg = build_spec(cfgmod.resolve(cfgmod.apply_set(cfgmod.load(base_toml), ["data.d=4096"])))
    big = build_spec(cfgmod.resolve(cfgmod.apply_set(cfgmod.load(base_toml), ["data.d=8192"])))
    assert sum(preflight.memory_estimate(big).values()) > sum(preflight.memory_estimate(cfg).values())
    need = sum(preflight.memory_estimate(cfg).values())
    preflight.check_memory(cfg, (need + 1, "test memory", 1))
    with pytest.raises(preflight.ResourceError, match="test memory"):
        preflight.check_memory(cfg, (need - 1, "test memory", 1))
    with pytest.raises(preflight.ResourceError, match="per device"):  # split over devices
        preflight.check_memory(cfg, (need // 2 - 1, "test memory", 2))
    preflight.check_memory(cfg, (need // 2 + 1, "test memory", 2))  # half on each of two devices fits


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_memory_room_is_limit_minus_usage(monkeypatch, version):
    """Under a cgroup memory limit the room is ``limit - usage`` (v2: ``memory.max`` and
    ``memory.current``; v1: ``memory.limit_in_bytes`` and ``memory.usage_in_bytes``), never
    negative; ``max`` (v2) or a v1 limit of ``2^60`` or more means no limit."""
    if version == 2:
        group = "0::/scaling-sgd-test\n"
        limit_file, usage_file = "/sys/fs/cgroup/scaling-sgd-test/memory.max", "/sys/fs/cgroup/scaling-sgd-test/memory.current"
        unlimited = "max"
    else:  # a v1 hierarchy whose group folder is not mounted: the root memory group is read
        group = "7:cpu\n5:memory:/scaling-sgd-test\n"
        limit_file, usage_file = "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"
        unlimited = str(2**62)
    for limit, room in (("8000", 5000), ("2000", 0), (str(2**59), 2**59 - 3000), (unlimited, None)):
        files = {"/proc/self/cgroup": group, limit_file: limit, usage_file: "3000"}

        def fake_open(path, *args, files=files, **kw):
            if path not in files:
                raise FileNotFoundError(path)
            return io.StringIO(files[path])

        monkeypatch.setattr(preflight, "open", fake_open, raising=False)
        assert preflight._cgroup_available() == room, (version, limit)


def test_bad_config_files(tmp_path, capsys):
    cases = {
        "latin1.toml": BASE.encode().replace(b"P = 2", b"P = 2 # \xe9t\xe9"),
        "binary.toml": bytes(range(256)) * 4,
        "utf16.toml": BASE.encode("utf-16"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["run", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        assert "not UTF-8" in _one_error_line(capsys.readouterr().err)
    (tmp_path / "dir.toml").mkdir()
    assert main(["run", str(tmp_path / "dir.toml")]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_set_values_are_parsed_whole():
    ok = {"1e-3": 1e-3, "[0, 1]": [0, 1], "adam": "adam", "'h4'": "h4", "{4 = 1.0}": {"4": 1.0}, "true": True, "nan": None}
    for text, want in ok.items():
        got = cfgmod._parse_value(text, text)
        assert math.isnan(got) if want is None else got == want, (text, got)
    for text in ("1e-3 foo", "30 # c", "[0, 1]]", "0,1", "30\nx = 1", "", "'adam", "1,"):
        with pytest.raises(ConfigError, match="--set"):
            cfgmod._parse_value(text, text)


def test_analysis_keys_are_not_sweepable(tmp_path, capsys):
    for key in ('"analysis.threshold"', "threshold", "analysis.observable"):
        p = tmp_path / "s.toml"
        p.write_text(BASE + f"[sweep]\n{key} = [0.1, 0.5]\n")
        assert main(["sweep", str(p), "--out", str(tmp_path / "sw")]) == 2
        assert "not sweepable" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "sw").exists()


def test_flow_with_a_batch_warns_once_and_is_not_an_error(base_toml, tmp_path, capsys):
    raw = cfgmod.apply_set(cfgmod.load(base_toml), ["train.engine='flow'", "train.batch_size=4"])
    with pytest.warns(ConfigWarning, match="train.batch_size"):
        cfgmod.resolve(raw)
    # on the command line: one warning line (the run is then refused for another reason here)
    (tmp_path / "f").write_text("a file")
    assert (
        main(["run", str(base_toml), "--out", str(tmp_path / "f"), "--set", "train.engine='flow'", "--set", "train.batch_size=4"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (
        "scaling-sgd: warning: train.batch_size: = 4 has no effect in engine 'flow' (the population flow has no batch); "
        "its results equal batch_size = 1"
    )
    assert len(err) == 2 and err[1].startswith("scaling-sgd: error: --out")


# -- damaged run folders -------------------------------------------------------------------------
DAMAGE = {
    "truncated metrics": (lambda d, r: _truncate(d / "metrics.npz", 0.5), "checksum"),
    "empty metrics": (lambda d, r: _truncate(d / "metrics.npz", 0.0), "checksum"),
    "flipped byte": (lambda d, r: _flip(d / "metrics.npz"), "checksum"),
    "corrupt config.json": (lambda d, r: _truncate(d / "config.json", 0.5), "config.json is unreadable"),
    "config.json not an object": (lambda d, r: (d / "config.json").write_text("[1]"), "not a JSON object"),
    "config.json not UTF-8": (lambda d, r: (d / "config.json").write_bytes(b"\xff{"), "config.json is unreadable"),
    "config.json without P": (lambda d, r: _edit_config(d, lambda c: c["config"]["teacher"].pop("P")), "teacher.P"),
    "metrics deleted": (lambda d, r: (d / "metrics.npz").unlink(), "metrics.npz is missing"),
    "config.json deleted": (lambda d, r: (d / "config.json").unlink(), "config.json is missing"),
    "metrics swapped with another run": (lambda d, r: shutil.copy(r["B"] / "metrics.npz", d / "metrics.npz"), "checksum"),
    "config.json swapped with another run": (lambda d, r: shutil.copy(r["B"] / "config.json", d / "config.json"), "checksum"),
    # written by hand without a checksum (an older format): the shapes are checked instead
    "no checksum, array missing": (
        lambda d, r: (_edit_config(d, lambda c: c.pop("metrics_sha256")), _rewrite_npz(d, lambda m: m.pop("skill"))),
        "no 'skill' array",
    ),
    "no checksum, wrong shape": (
        lambda d, r: (
            _edit_config(d, lambda c: c.pop("metrics_sha256")),
            _rewrite_npz(d, lambda m: m.update(skill=m["skill"][..., :1])),
        ),
        "'skill' has shape",
    ),
    "no checksum, random bytes": (
        lambda d, r: (_edit_config(d, lambda c: c.pop("metrics_sha256")), (d / "metrics.npz").write_bytes(os.urandom(3000))),
        "metrics.npz is unreadable",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_analyze_refuses_a_damaged_run_in_one_line(runs, tmp_path, capsys, name):
    damage, words = DAMAGE[name]
    d = tmp_path / "run"
    shutil.copytree(runs["A"], d)
    damage(d, runs)
    before = _tree(d)
    assert main(["analyze", str(d)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(d) in line and words in line, line
    assert _tree(d) == before  # nothing written beside damaged results
    with pytest.raises(ResultsError):
        results.read_run(d)


def test_all_diverged_run_is_a_report_not_a_crash(runs, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(runs["D"], d)
    assert main(["analyze", str(d)]) == 0
    out = capsys.readouterr().out
    assert "every replica diverged" in out and "no direction counts as learned" in out
    s = json.loads((d / "summary.json").read_text())
    assert s["all_diverged"] and s["replicas"] == 0 and s["diverged_excluded"] == 2 and s["fits"] == {}
    assert all(x["n_learned"] == 0 for x in json.loads((d / "emergence.json").read_text())["directions"])


def test_diverged_replicas_are_never_counted_as_learned(runs, capsys):
    # a diverged replica whose skill blew up to inf (must not read as 'learned 4/4 at step ~443')
    step = np.array([0, 10, 100, 1000])
    skill = np.zeros((3, 4, 2))
    skill[0, 2:, :] = np.inf
    skill[1, 3, 0] = 0.9  # a live replica that learned direction 1
    m = {"step": step, "skill": skill, "diverged": np.array([True, False, False]), "a": np.ones((3, 2))}
    print_emergence(m, {"analysis": {"observable": "skill", "threshold": 0.5}}, stream=sys.stdout)
    rows = capsys.readouterr().out.splitlines()
    assert "(1 diverged, left out)" in rows[0] and rows[1].split()[-2:] == ["learned", "diverged"]
    assert rows[2].split()[-2:] == ["1/3", "1"] and rows[3].split()[-2:] == ["0/3", "1"]
    # analyze of a run where half of the replicas diverged: learned counts only live ones
    assert main(["analyze", str(runs["H"])]) == 0
    out = capsys.readouterr().out
    assert "2 diverged excluded" in out
    e = json.loads((runs["H"] / "emergence.json").read_text())
    assert e["diverged_excluded"] == 2 and all(x["n_diverged"] == 2 and x["n_learned"] <= 2 for x in e["directions"])
