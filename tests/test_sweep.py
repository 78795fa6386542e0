"""Sweeps: grid expansion, resume after kill -9, shards, device sharding, failures.

Every comparison is exact (bitwise) except where noted: the sweep must produce the very
numbers an uninterrupted single job produces.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src import config as cfgmod
from scaling_sgd._src import sweep
from scaling_sgd._src.engines import driver
from scaling_sgd._src.results import read_run
from scaling_sgd.cli import main

from helpers import spec_parts

REPO = Path(__file__).resolve().parents[1]

# A grid of 2 d x 2 betas x 2 lrs x 3 seeds = 2 points of 12 replicas each.
GRID = """
[teacher]
P = 2
[student]
m = 3
[train]
steps = 200
progress = false
[log]
points = 10
[sweep]
d = [8, 12]
beta = [1.0, 1.5]
lr = [1e-3, 2e-3]
seed = [0, 1, 2]
"""


def _cli(*args, env=None, **kw):
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "scaling_sgd.cli", *args], cwd=REPO, env=e, **kw)


def _files(root: Path) -> dict:
    """relative path -> mtime_ns of every file under root (the lock file aside)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "sweep.lock"}


def _assert_same_points(a: Path, b: Path):
    ia, ib = (json.loads((x / "sweep.json").read_text()) for x in (a, b))
    assert ia == ib
    assert all(p["state"] == "done" for p in ia["points"])
    for p in ia["points"]:
        ca, ma = read_run(a / p["dir"])
        cb, mb = read_run(b / p["dir"])
        assert ca["config"] == cb["config"] and ca["hash"] == cb["hash"] == p["id"]
        assert ma.keys() == mb.keys()
        for k in ma:
            np.testing.assert_array_equal(ma[k], mb[k], err_msg=f"{p['dir']} {k}")


@pytest.fixture(scope="module")
def grid_toml(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "grid.toml"
    p.write_text(GRID)
    return p


@pytest.fixture(scope="module")
def whole(grid_toml, tmp_path_factory):
    """The uninterrupted, unsharded sweep: the reference every other test compares to."""
    out = tmp_path_factory.mktemp("whole") / "sw"
    assert main(["sweep", str(grid_toml), "--out", str(out)]) == 0
    return out


def test_plan_folds_traced_values_and_groups_shapes(tmp_path):
    base = {"teacher": {"P": 2}, "student": {"m": 2}, "data": {"d": 8}, "train": {"steps": 10}}
    raw = {**base, "sweep": {"steps": [10, 20], "d": [8, 12], "beta": [1, 2], "seed": [0, 1, 2], "student.m": [2]}}
    pl = sweep.plan(raw)
    assert pl.swept == ["train.steps", "data.d", "teacher.beta", "train.seed", "student.m"]
    assert [(p.settings["train.steps"], p.settings["data.d"]) for p in pl.points] == [(10, 8), (10, 12), (20, 8), (20, 12)]
    for p in pl.points:
        # traced values folded into one point as replica lists: beta x seed = 6 replicas
        assert p.settings["teacher.beta"] == [1.0, 2.0] and p.settings["train.seed"] == [0, 1, 2]
        assert p.replicas == 6 and p.id == cfgmod.config_hash(p.config) and p.config["sweep"] == {}
        assert p.config["data"]["d"] == p.settings["data.d"] and p.config["student"]["m"] == 2
    assert "sweep" not in pl.base and len({p.id for p in pl.points}) == 4
    # TOML dotted keys ([sweep] data.d = [...]) mean the same as the alias
    toml = tmp_path / "dotted.toml"
    toml.write_text(
        "[teacher]\nP = 2\n[student]\nm = 2\n[train]\nsteps = 10\n[sweep]\ntrain.steps = [10, 20]\ndata.d = [8, 12]\n"
        '"teacher.beta" = [1, 2]\nseed = [0, 1, 2]\nm = [2]\n'
    )
    assert [p.id for p in sweep.plan(cfgmod.load(toml)).points] == [p.id for p in pl.points]
    # a base that is valid only once the swept keys are set (P = 20 > d = 8, d swept)
    pl2 = sweep.plan({"teacher": {"P": 20}, "data": {"d": 8}, "sweep": {"d": [32, 64]}})
    assert [p.config["data"]["d"] for p in pl2.points] == [32, 64] and pl2.base["data"]["d"] == 32
    # run order: grouped by compiled program (d), grid order within a group
    assert [p.index for p in sweep.run_order(pl.points)] == [0, 2, 1, 3]
    # shards: disjoint and together the grid, for any n
    for n in range(1, 6):
        parts = [sweep.shard_points(pl.points, i, n) for i in range(1, n + 1)]
        assert sorted(p.index for part in parts for p in part) == list(range(4))


def test_overlap_auto_is_bounded_by_size():
    def with_overlap(m, P, seeds, points=200):
        raw = {"teacher": {"P": P}, "student": {"m": m}, "data": {"d": 128}, "train": {"seed": list(range(seeds))}}
        return spec_parts(cfgmod.resolve({**raw, "log": {"points": points}}))[0].with_overlap

    assert with_overlap(64, 64, 16)  # 16 * 201 * 4096 = 13.2M entries <= 2^24
    assert not with_overlap(64, 64, 32)  # 26.3M > 2^24: too big to keep
    assert not with_overlap(65, 64, 1)  # m * P > 4096
    assert with_overlap(8, 8, 4)


BAD = [
    (["--set", "sweep.bogus=[1]"], "sweep.bogus"),
    (["--set", "sweep.d=64"], "sweep.d"),
    (["--set", "sweep.d=[]"], "sweep.d"),
    (["--set", "sweep.P=[2, 20]"], "teacher.P"),  # P > d at one grid point
    (["--set", "sweep.lr=[1e-3, -1]"], "train.lr"),
    (["--set", "sweep.engine=['sgd', 'magic']"], "train.engine"),
    (["--shard", "3/2"], "--shard"),
    (["--shard", "one"], "--shard"),
]


@pytest.mark.parametrize("extra,key", BAD)
def test_bad_sweep_input_exits_2_naming_the_key(grid_toml, tmp_path, capsys, extra, key):
    out = tmp_path / "sw"
    assert main(["sweep", str(grid_toml), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "accepted" in err[0], err
    assert not out.exists()  # nothing computed, nothing written


def test_sweep_writes_index_and_ordinary_runs(whole, grid_toml):
    index = json.loads((whole / "sweep.json").read_text())
    assert index["format"] == 1 and index["swept"] == ["data.d", "teacher.beta", "train.lr", "train.seed"]
    assert "sweep" not in index["base_config"] and index["base_config"]["teacher"]["P"] == 2
    assert [p["settings"]["data.d"] for p in index["points"]] == [8, 12]
    for p in index["points"]:
        assert p["state"] == "done" and p["replicas"] == 12 and p["diverged"] == 0 and p["dir"] == f"points/{p['id']}"
        assert p["settings"]["teacher.beta"] == [1.0, 1.5] and p["settings"]["train.lr"] == [1e-3, 2e-3]
        cj, m = read_run(whole / p["dir"])
        assert cj["hash"] == p["id"] == cfgmod.config_hash(cj["config"])
        assert list(m["seed"]) == [0, 1, 2] * 4 and list(m["beta"]) == [1.0] * 6 + [1.5] * 6
        # the point is exactly the ordinary run of the same config
        raw = json.loads(json.dumps(index["base_config"]))
        raw["data"]["d"] = p["settings"]["data.d"]
        raw["teacher"]["beta"], raw["train"]["lr"], raw["train"]["seed"] = [1.0, 1.5], [1e-3, 2e-3], [0, 1, 2]
        alone = ss.run(ss.resolve_config(raw)).metrics
        for k in ("loss", "skill", "overlap", "norm2", "diverged"):
            np.testing.assert_array_equal(alone[k], m[k])


def test_kill_9_then_resume_equals_uninterrupted_and_third_run_is_idle(whole, grid_toml, tmp_path, capsys):
    out = tmp_path / "sw"
    proc = _cli("sweep", str(grid_toml), "--out", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(out.glob("points/*/config.json")):
        assert proc.poll() is None and time.time() < deadline, "sweep ended or hung before its first point"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.glob("points/*/config.json"))
    assert len(done) == 1, "killed too late: both points finished"
    # a writer killed mid-file: a partial metrics.npz and stray temporaries, none reads as complete
    pending = [
        p for p in json.loads((whole / "sweep.json").read_text())["points"] if not (out / p["dir"] / "config.json").exists()
    ]
    (out / pending[0]["dir"]).mkdir(parents=True, exist_ok=True)
    (out / pending[0]["dir"] / "metrics.npz").write_bytes(b"PK\x03\x04 truncated")
    (out / pending[0]["dir"] / ".config.json.x1.tmp").write_text('{"config": ')
    (out / ".sweep.json.x2.tmp").write_text("{")

    assert main(["sweep", str(grid_toml), "--out", str(out)]) == 0
    assert "computed 1, failed 0, already done 1" in capsys.readouterr().out
    assert not list(out.rglob(".*.tmp"))
    _assert_same_points(out, whole)
    assert _files(out).keys() == _files(whole).keys()

    before = _files(out)
    assert main(["sweep", str(grid_toml), "--out", str(out)]) == 0
    assert "computed 0, failed 0, already done 2" in capsys.readouterr().out
    assert _files(out) == before  # nothing rewritten, not even the index

    # --force recomputes (same numbers, new files)
    assert main(["sweep", str(grid_toml), "--out", str(out), "--force"]) == 0
    assert "computed 2" in capsys.readouterr().out
    _assert_same_points(out, whole)
    assert all(_files(out)[k] > before[k] for k in before if k.endswith("metrics.npz"))


def test_concurrent_shards_equal_the_whole_grid(whole, grid_toml, tmp_path, capsys):
    """Shard 1/2 in a subprocess while shard 2/2 runs here, into one directory."""
    out = tmp_path / "sw"
    job = _cli("sweep", str(grid_toml), "--out", str(out), "--shard", "1/2", stdout=subprocess.PIPE, text=True)
    assert main(["sweep", str(grid_toml), "--out", str(out), "--shard", "2/2"]) == 0
    outs = [job.communicate(timeout=120)[0], capsys.readouterr().out]
    assert job.returncode == 0
    for o in outs:  # disjoint: each job computed exactly its one point
        assert "computed 1, failed 0, already done 0 (of 1 in this shard, 2 in all)" in o, o
    _assert_same_points(out, whole)  # together complete, and the same index
    assert _files(out).keys() == _files(whole).keys()


@pytest.mark.slow
def test_sharded_over_4_devices_equals_unsharded(whole, grid_toml, tmp_path):
    """R = 12 is padded to its bucket, 16, 4 per device; R = 6 (beta = 1 only) to 8, 2 per
    device, and must equal the first 6 replicas of the unsharded 12 (replicas are
    independent).

    The divergence flags and steps are equal; the float32 numbers (the state's norm2 and the
    observables) may differ in the last bits, because XLA vectorises the batched products
    differently for 2 or 4 replicas per device than for 16 on one."""
    four, six4 = tmp_path / "four", tmp_path / "six4"
    only_d8, r6 = ["--set", "sweep.d=[8]"], ["--set", "sweep.beta=[1.0]"]
    script = textwrap.dedent(f"""
        import jax
        from scaling_sgd.cli import main
        from scaling_sgd._src.engines.driver import replica_padding
        assert jax.local_device_count() == 4 and replica_padding(6) == 2 and replica_padding(12) == 4
        assert main(["sweep", {str(grid_toml)!r}, "--out", {str(four)!r}, *{only_d8!r}]) == 0
        assert main(["sweep", {str(grid_toml)!r}, "--out", {str(six4)!r}, *{only_d8 + r6!r}]) == 0
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = next(p for p in json.loads((whole / "sweep.json").read_text())["points"] if p["settings"]["data.d"] == 8)
    cb, mb = read_run(whole / ref["dir"])
    assert cb["environment"]["device_count"] == 1
    eps = np.finfo(np.float32).eps
    for out, R in ((four, 12), (six4, 6)):
        (p,) = json.loads((out / "sweep.json").read_text())["points"]
        ca, ma = read_run(out / p["dir"])
        assert p["state"] == "done" and ca["environment"]["device_count"] == 4 and ma["loss"].shape[0] == R
        assert (p["id"] == ref["id"]) == (R == 12) and ma.keys() == mb.keys()
        for k in ma:
            want = mb[k] if k == "step" else mb[k][:R]
            if ma[k].dtype.kind != "f":
                np.testing.assert_array_equal(ma[k], want, err_msg=k)
            else:  # the state's rounding differences grow over the steps: a few ulps more
                tol = (32 if k == "norm2" else 4) * eps
                np.testing.assert_allclose(ma[k], want, rtol=tol, atol=tol * np.max(np.abs(want)), err_msg=k)


@pytest.mark.slow
def test_failed_point_is_recorded_divergence_counted_and_shapes_compile_once(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "f.toml"
    cfg.write_text(
        "[teacher]\nP = 2\n[student]\nm = 2\n[train]\nprogress = false\n[log]\npoints = 6\n"
        "[sweep]\nsteps = [30, 60]\nd = [9, 11]\nlr = [1e-3, 50.0]\n"
    )
    out = tmp_path / "sw"
    from scaling_sgd._src import runner

    real_run = runner.run

    def flaky(c, *a, **k):
        if c.config["data"]["d"] == 11 and c.config["train"]["steps"] == 60:
            raise RuntimeError("boom")
        return real_run(c, *a, **k)

    monkeypatch.setattr(runner, "run", flaky)
    n0 = driver.compiled_programs()
    assert main(["sweep", str(cfg), "--out", str(out)]) == 1  # a failed point: exit 1, the others done
    cap = capsys.readouterr()
    assert driver.compiled_programs() == n0 + 2 * driver.PROGRAMS_PER_SHAPE  # 2 shapes (d), 3 points computed
    order = [line.split("data.d=")[1].split()[0] for line in cap.err.splitlines() if "-> points/" in line]
    assert order == ["9", "9", "11", "11"]  # grouped by shape
    index = json.loads((out / "sweep.json").read_text())
    states = {(p["settings"]["train.steps"], p["settings"]["data.d"]): p for p in index["points"]}
    assert states[(60, 11)]["state"] == "failed" and "RuntimeError: boom" in states[(60, 11)]["error"]
    for key, p in states.items():
        if key != (60, 11):
            assert p["state"] == "done"
            m = read_run(out / p["dir"])[1]
            assert list(m["diverged"]) == [False, True]  # lr = 50 diverges, lr = 1e-3 does not
            assert p["diverged"] == int(m["diverged"].sum()) == 1

    monkeypatch.setattr(runner, "run", real_run)
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0  # the failed point is retried
    assert "computed 1, failed 0, already done 3" in capsys.readouterr().out
    assert driver.compiled_programs() == n0 + 2 * driver.PROGRAMS_PER_SHAPE  # steps is traced: no new compilation
    index = json.loads((out / "sweep.json").read_text())
    assert [p["state"] for p in index["points"]] == ["done"] * 4 and not list(out.glob("points/*/error.json"))
