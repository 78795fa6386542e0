"""One compiled program per shape that matters, and the stop of an all-diverged run.

* ``reduced`` and ``flow`` take ``d`` as a traced number: a sweep over ``d`` compiles
  once, and the numbers equal those of a program with ``d`` static, bit for bit;
* the replica count is padded to a bucket (1, 4, 8, ...): a seed list that grows inside
  it compiles nothing, and the pads change no replica's numbers;
* once every replica has diverged the run stops, and its metrics equal those of the run
  advanced to the end, bit for bit.
"""

import dataclasses

import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src.engines import driver
from scaling_sgd._src.engines.flow import Flow
from scaling_sgd._src.engines.reduced import Reduced

from helpers import small_config, spec_parts

# one small shape shared by the tests (programs compiled by one are reused by the next)
SMALL = {"train.steps": 60, "log.points": 6, "train.seed": [0, 1]}
ARRAYS = ("loss", "skill", "alignment", "norm2", "diverged", "diverged_step", "step")


def _equal(a: dict, b: dict):
    for k in ARRAYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@dataclasses.dataclass(frozen=True)
class StaticDReduced(Reduced):
    """``reduced`` compiled with ``d`` static (the reference for the traced ``d``)."""

    def program(self, static, reps):
        return static, reps


@dataclasses.dataclass(frozen=True)
class StaticDFlow(Flow):
    """``flow`` compiled with ``d`` static."""

    def program(self, static, reps):
        return static, reps


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["reduced", "flow"])
def test_d_is_traced_one_program_for_every_d_and_the_same_numbers(engine):
    over = {"train.engine": engine, **SMALL, "train.dtype": "float64"}
    ss.run(small_config(**{**over, "data.d": 16}))
    n0 = driver.compiled_programs()
    runs = {d: ss.run(small_config(**{**over, "data.d": d})).metrics for d in (24, 40)}
    assert driver.compiled_programs() == n0
    # d moves the numbers (the initial scale is s / sqrt(d)) ...
    assert not np.allclose(runs[24]["norm2"][:, 0], runs[40]["norm2"][:, 0])
    # ... exactly as a program with d static computes them
    ref_engine = StaticDReduced() if engine == "reduced" else StaticDFlow(solver=Flow.from_config(small_config(**over)).solver)
    static, reps, steps = spec_parts(small_config(**{**over, "data.d": 40}))
    _equal(runs[40], driver.simulate(ref_engine, static, reps, steps))


def test_replica_buckets():
    assert [driver.replica_bucket(R) for R in (1, 2, 3, 4, 5, 8, 9, 100)] == [1, 4, 4, 4, 8, 8, 16, 128]


@pytest.mark.slow
def test_seed_list_inside_its_bucket_lr_beta_steps_compile_nothing_and_pads_change_nothing():
    over = {"train.engine": "reduced", **SMALL}
    two = ss.run(small_config(**{**over, "train.seed": [0, 1]})).metrics
    n0 = driver.compiled_programs()
    three = ss.run(small_config(**{**over, "train.seed": [0, 1, 2]})).metrics
    ss.run(small_config(**{**over, "train.seed": [3, 4], "train.lr": 2e-3, "teacher.beta": 1.5, "train.steps": 80}))
    assert driver.compiled_programs() == n0
    assert three["loss"].shape[0] == 3
    # replicas are independent: the third one (padded with itself) leaves the first two as they were
    for k in ARRAYS[:-1]:
        np.testing.assert_array_equal(three[k][:2], two[k], err_msg=k)
    # d enters the shapes of reduced through its buffer K when d is small: its own program
    ss.run(small_config(**{**over, "data.d": 9}))  # K = (9 - 3 - 4) // 1 = 2 < 8
    assert driver.compiled_programs() == n0 + driver.PROGRAMS_PER_SHAPE


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sgd", "reduced"])
def test_all_diverged_run_stops_with_the_numbers_of_the_full_run(engine):
    over = {"train.engine": engine, **SMALL, "train.seed": 0, "train.lr": [30.0, 60.0], "student.init_scale": 1.0}
    cfg = small_config(**{**over, "train.steps": 20_000})
    static, reps, steps = spec_parts(cfg)
    spec = ss.build_spec(cfg)
    stopped = driver.simulate(spec.engine, static, reps, steps)
    full = driver.simulate(spec.engine, static, reps, steps, stop_when_diverged=False)
    assert stopped["diverged"].all()
    assert stopped["stopped_at"] == stopped["diverged_step"].max() < steps[-1] // 100
    assert full["stopped_at"] == -1
    _equal(stopped, full)
    res = ss.run(cfg)
    assert res.meta["all_diverged_at"] == stopped["stopped_at"]


def test_a_run_with_a_live_replica_does_not_stop():
    over = {"train.engine": "reduced", **SMALL, "train.seed": 0, "train.lr": [1e-3, 60.0], "student.init_scale": 1.0}
    cfg = small_config(**over)
    res = ss.run(cfg)
    assert list(res.metrics["diverged"]) == [False, True] and "all_diverged_at" not in res.meta


@pytest.mark.slow
def test_programs_are_released_near_the_limit_on_memory_mappings(monkeypatch):
    """Past MAP_LIMIT_SHARE of vm.max_map_count the driver drops the compiled programs
    before compiling another (a process at the limit is aborted in the compiler); below
    it, they are kept, and a released run gives the same numbers."""
    maps = driver.memory_maps()
    if maps is not None:  # Linux: the process holds some mappings, fewer than the limit
        assert 0 < maps[0] < maps[1]
    cfg = small_config(**SMALL)
    first = ss.run(cfg).metrics
    held = driver.compiled_programs()
    assert held >= driver.PROGRAMS_PER_SHAPE
    if maps is not None and maps[0] < driver.MAP_LIMIT_SHARE * maps[1]:
        assert not driver.release_programs_near_map_limit()
    monkeypatch.setattr(driver, "memory_maps", lambda: (76, 100))
    again = ss.run(cfg).metrics
    assert driver.compiled_programs() == driver.PROGRAMS_PER_SHAPE  # only this run's programs
    _equal(first, again)
    monkeypatch.setattr(driver, "memory_maps", lambda: (74, 100))
    ss.run(small_config(**{**SMALL, "student.m": 3}))
    assert driver.compiled_programs() == 2 * driver.PROGRAMS_PER_SHAPE  # kept, one shape added
