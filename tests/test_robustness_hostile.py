"""Robustness against a hostile or careless user, config side: values at the edge of the
dtype, replica lists with copies, optimizers that fail only when compiled, deep and huge
inputs, odd files.  Each must be one error line with exit status 2, before any compute
(``tools/fuzz_hostile.py`` holds the same cases for the fuzz tool)."""

from __future__ import annotations

import math
import os
import tomllib

import numpy as np
import pytest
from robustness_common import _one_error_line

from scaling_sgd._src import config as cfgmod
from scaling_sgd._src.errors import ConfigError
from scaling_sgd.cli import main

from helpers import TINY_TOML

BIG = 10**400  # an integer no float can hold


def _resolve(**sets):
    """The tiny config with ``table__key=value`` settings, resolved."""
    raw = tomllib.loads(TINY_TOML)
    for k, v in sets.items():
        cfgmod.set_key(raw, k.replace("__", "."), v)
    return cfgmod.resolve(raw)


def _refused(key: str, **sets) -> str:
    with pytest.raises(ConfigError) as e:
        _resolve(**sets)
    assert e.value.key == key, str(e.value)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture()
def cfg_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(TINY_TOML)
    return p


# -- numbers past the dtype ----------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value",
    [
        ("train.lr", BIG),
        ("teacher.beta", BIG),
        ("student.init_scale", BIG),
        ("train.schedule_n0", BIG),
        ("train.diverge_bound", BIG),
        ("analysis.threshold", BIG),
        ("teacher.a", [1.0, BIG]),
        ("teacher.activation", {4: BIG}),
    ],
)
def test_integer_too_large_for_a_float_is_one_line(key, value):
    msg = _refused(key, **{key.replace(".", "__"): value})
    assert "accepted" in msg or "finite" in msg


@pytest.mark.parametrize(
    "dtype,c,bad",
    [("float32", 1e-25, True), ("float32", 2e-19, False), ("float64", 1e-200, True), ("float64", 1e-150, False)],
)
def test_activation_coefficient_whose_square_underflows(dtype, c, bad):
    # the loss is a sum of c_j^2 terms: c^2 below the dtype's smallest normal number reads as 0
    sets = {"train__dtype": dtype, "teacher__activation": {4: 1.0, 6: c}}
    if bad:
        msg = _refused("teacher.activation", **sets)
        assert f"{math.sqrt(float(np.finfo(dtype).tiny)):.3g}" in msg
    else:
        assert _resolve(**sets)["teacher"]["activation"]["6"] == c


def test_activation_coefficients_huge_zero_and_student():
    _refused("teacher.activation", teacher__activation={4: 1e200})
    _refused("student.activation", student__activation={4: 1e-30})
    # a zero coefficient is an absent one, not an underflow
    assert _resolve(teacher__activation={4: 1.0, 6: 0.0})["teacher"]["activation"] == {"4": 1.0}


@pytest.mark.parametrize("table", [{"4": 1.0, "04": 0.5}, {4: 1.0, "4": 0.5}, {4.5: 1.0}, {True: 1.0}, {"+4": 1.0}, {31: 1.0}])
def test_activation_keys_are_degrees_written_once(table):
    _refused("teacher.activation", teacher__activation=table)


def test_activation_keys_as_ints_and_strings_agree():
    a = _resolve(teacher__activation={4: 1.0, 6: 0.25})["teacher"]["activation"]
    b = _resolve(teacher__activation={"4": 1.0, "6": 0.25})["teacher"]["activation"]
    assert a == b == {"4": 1.0, "6": 0.25}


@pytest.mark.parametrize("n0,ok", [(1e-50, False), (1e308, False), (1e-3, True), (1e30, True), (0.0, True)])
def test_schedule_n0_within_float32(n0, ok):
    sets = {"train__schedule": "inverse_time", "train__schedule_n0": n0}
    if ok:
        assert _resolve(**sets)["train"]["schedule_n0"] == n0
    else:
        _refused("train.schedule_n0", **sets)


# -- replicas that are copies --------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value", [("train.seed", [0, 0]), ("train.lr", [1e-3, 1e-3]), ("teacher.beta", [-0.0, 0.0]), ("teacher.beta", [1, 1.0])]
)
def test_duplicate_replicas_refused(key, value):
    msg = _refused(key, **{key.replace(".", "__"): value})
    assert "twice" in msg


# -- optimizers that pass the name check but cannot run -------------------------------------
@pytest.mark.parametrize("name", ["lbfgs", "sm3", "rprop", "optimistic_adam"])
def test_optimizer_that_fails_when_compiled(name):
    msg = _refused("train.optimizer", train__optimizer=name)
    assert name in msg


def test_plain_optimizers_still_accepted():
    assert _resolve(train__optimizer="adam")["train"]["optimizer"] == "adam"
    assert _resolve(train__optimizer="sgd", train__optimizer_kwargs={"momentum": 0.9})["train"]["optimizer_kwargs"]


# -- deep, huge and odd inputs through the command line ------------------------------------
def test_deep_toml_file_and_set(cfg_file, tmp_path, capsys):
    deep = "[" * 3000 + "]" * 3000
    cfg_file.write_text(TINY_TOML + f"[analysis]\nx = {deep}\n")
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "o")]) == 2
    assert "too deeply" in _one_error_line(capsys.readouterr().err)
    cfg_file.write_text(TINY_TOML)
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "o"), "--set", f"train.lr={deep}"]) == 2
    assert "too deeply" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_error_line_of_a_huge_value_is_short(cfg_file, tmp_path, capsys):
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "o"), "--set", "train.optimizer='" + "x" * 200_000 + "'"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert len(line) < 1200 and "train.optimizer" in line and "accepted" in line


def test_fifo_config_is_not_a_missing_file(tmp_path, capsys):
    p = tmp_path / "c.toml"
    os.mkfifo(p)
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2  # returns at once: never opened
    line = _one_error_line(capsys.readouterr().err)
    assert "not a regular file" in line and "no such file" not in line


@pytest.mark.parametrize("shard", ["1_0/2_0", "1/2_0", "+1/2", "1.0/2"])
def test_shard_is_plain_digits(shard, tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(TINY_TOML + "[sweep]\nd = [8, 9]\n")
    assert main(["sweep", str(p), "--out", str(tmp_path / "sw"), "--shard", shard]) == 2
    assert "--shard" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "sw").exists()
