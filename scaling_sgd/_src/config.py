"""Configuration: TOML tables with defaults, strict validation, ``--set`` overrides.

A config is a plain nested ``dict`` ``{table: {key: value}}``.  :func:`resolve` fills
every default, rejects unknown keys and checks types and ranges *before any compute*,
raising :class:`ConfigError` whose message names the key and the accepted values.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import itertools
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .engines import DEFAULT_ENGINE, ENGINES
from .engines.base import MAX_STEPS_INT32, REPLICA_SETTINGS
from .errors import ConfigError
from .hermite import activation as make_activation
from .optim import check_optimizer
from .schedules import SCHEDULES
from .validate import (
    MAX_DEPTH,
    check_activation_table,
    check_choice,
    check_depth,
    check_distinct,
    check_int,
    check_num,
    check_representable,
    finfo,
    is_num,
    scalar_or_list,
    short,
)

__all__ = ["ConfigError", "defaults", "load", "resolve", "apply_set", "set_key", "config_hash", "replica_grid", "with_overlap"]

DTYPES = ("float32", "float64")
BASES = ("canonical", "random")
OBSERVABLES = ("skill", "alignment")

# Every key of the model, training, logging and analysis tables with its default; the
# engines add their own tables (:func:`defaults`), and [sweep] comes last.
CORE_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {
        "P": 8,
        "beta": 1.0,
        "a": None,
        "activation": "h4",
        "activation_degree": 12,
        "basis": "canonical",
    },
    "student": {"m": 8, "init_scale": 0.1, "activation": None},
    "data": {"d": 128},
    "train": {
        "engine": DEFAULT_ENGINE,
        "steps": 1_000_000,
        "batch_size": 1,
        "lr": 1e-5,
        "seed": 0,
        "optimizer": "sgd",
        "optimizer_kwargs": {},
        "schedule": "constant",
        "schedule_n0": 0,
        "dtype": "float32",
        "diverge_bound": 1e8,
        "progress": True,
    },
    "log": {"points": 200, "overlap": "auto"},
    "analysis": {"observable": "skill", "threshold": 0.5},
}
# The replicated keys (a list makes replicas), from the engines' Replicas fields.
REPLICA_KEYS = {tuple(key.split(".")) for key in REPLICA_SETTINGS.values()}


def defaults() -> dict[str, dict[str, Any]]:
    """Every table and key with its default: the core tables, each registered engine's own
    table (:attr:`.engines.base.Engine.table`), then ``sweep``.  A new dict each call."""
    out = copy.deepcopy(CORE_DEFAULTS)
    for engine in ENGINES.values():
        if engine.table:
            out[engine.table] = copy.deepcopy(engine.defaults)
    out["sweep"] = {}
    return out


OVERLAP_AUTO_MAX = 4096  # log the full (m, P) cosine matrix when m * P is at most this
# ... and when the whole logged array (R, T, m, P) has at most this many entries (64 MiB in
# float32), so that a long sweep of wide students keeps memory and disk per point bounded.
OVERLAP_AUTO_MAX_ELEMENTS = 2**24
# Short names accepted in the [sweep] table, and the config keys they stand for.
SWEEP_ALIASES = {
    "d": "data.d",
    "P": "teacher.P",
    "m": "student.m",
    "beta": "teacher.beta",
    "a": "teacher.a",
    "activation": "teacher.activation",
    "init_scale": "student.init_scale",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "engine": "train.engine",
    "seed": "train.seed",
    "steps": "train.steps",
    "dtype": "train.dtype",
}


def load(path) -> dict:
    """Read a TOML config file (no defaults applied).  ``path``: a path, or a file inside
    an installed package (``importlib.resources``)."""
    if isinstance(path, (str, Path)):
        path = Path(path)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            what = "no such file" if e.errno == errno.ENOENT else f"cannot read ({e.strerror or e})"
            raise ConfigError("config", f"{what} {str(path)!r}") from None
        if stat.S_ISDIR(mode):
            raise ConfigError("config", f"{str(path)!r} is a folder; accepted: a TOML file")
        if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
            raise ConfigError("config", f"{str(path)!r} is not a regular file (a FIFO, socket or device); accepted: a TOML file")
    elif not path.is_file():
        raise ConfigError("config", f"no such file {str(path)!r}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError("config", f"cannot read {str(path)!r} ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            "config", f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); accepted: a TOML file in UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError("config", f"{path} nests arrays or tables too deeply; accepted: at most {MAX_DEPTH} levels") from None
    check_depth("config", raw)
    return raw


# A bare word on the command line is a string (``--set train.optimizer=adam``).
_BARE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+-]*$")


def _parse_value(text: str, item: str = ""):
    """A ``--set`` value: one whole TOML value, or a bare word taken as a string.

    The value is parsed as the only element of a TOML array, so that anything after it (a
    comment, a second value, a newline with another key) makes the parse fail instead of
    being dropped silently.
    """
    accepted = "accepted: one TOML value (a number, true/false, a quoted string, [a, list] or {a = table}) or a bare word"
    if "\n" in text or "\r" in text:
        raise ConfigError("--set", f"{item!r}: the value spans several lines; {accepted}")
    if not text:
        raise ConfigError("--set", f"{item!r}: empty value; {accepted}")
    try:
        v = tomllib.loads(f"v = [{text}]")["v"]
        check_depth("--set", v)
    except RecursionError:
        raise ConfigError("--set", f"{item[:40]!r}...: nests too deeply; accepted: at most {MAX_DEPTH} levels") from None
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.match(text):
            return text
        raise ConfigError("--set", f"{item!r}: {text!r} is not one value; {accepted}") from None
    if len(v) != 1 or text.rstrip().endswith(","):
        raise ConfigError("--set", f"{item!r}: {text!r} is not one value (a list needs brackets: [0, 1]); {accepted}")
    return v[0]


def set_key(raw: dict, dotted: str, value, where: str = "--set") -> dict:
    """Set ``raw[table][key] = value`` for ``dotted = "table.key"`` (in place; returns ``raw``).

    The one ``table.key`` setter: the command line's ``--set``, sweep points, experiment
    overrides and the benchmark all go through it.  ``where`` names the source in errors.
    """
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(where, f"{dotted!r} must be table.key, e.g. train.lr")
    table, key = parts
    raw.setdefault(table, {})
    if not isinstance(raw[table], dict):
        raise ConfigError(table, "must be a table")
    raw[table][key] = copy.deepcopy(value)
    return raw


def apply_set(raw: dict, assignments: list[str]) -> dict:
    """Apply ``table.key=value`` overrides (values parsed as TOML, else as strings)."""
    out = copy.deepcopy(raw)
    for item in assignments or []:
        if "=" not in item:
            raise ConfigError("--set", f"{item!r} is not of the form table.key=value")
        lhs, rhs = item.split("=", 1)
        set_key(out, lhs, _parse_value(rhs.strip(), item))
    return out


def _sweep_name(key: str, where: str) -> str:
    """The ``table.key`` a sweep key stands for (an alias of :data:`SWEEP_ALIASES` or a
    ``table.key`` of a config key)."""
    accepted = f"a config key as table.key or one of {', '.join(SWEEP_ALIASES)}"
    name = SWEEP_ALIASES.get(key, key)
    table, _, k = name.partition(".")
    known = defaults()
    if table == "analysis" or key in known["analysis"]:
        # they change no result, only how it is read: one run analysed at several settings
        raise ConfigError(
            where, "analysis settings are not sweepable; accepted: run 'scaling-sgd analyze DIR --threshold/--observable' instead"
        )
    if table not in known or table == "sweep" or k not in known[table]:
        raise ConfigError(where, f"unknown sweep key; accepted: {accepted}")
    return name


def _flat_items(body: Mapping):
    """``(key, value)`` pairs of a table whose keys may be TOML dotted keys
    (``data.d = [...]`` nests as ``{"data": {"d": [...]}}``)."""
    tables = defaults()
    for key, value in body.items():
        if isinstance(value, Mapping) and key in tables:
            yield from ((f"{key}.{k}", v) for k, v in value.items())
        else:
            yield key, value


def check_sweep(body: Mapping) -> dict[str, list]:
    """Validate a ``[sweep]`` table; return ``{"table.key": [values, ...]}`` in table order.

    Keys are ``table.key`` names of config keys (quoted, ``"data.d" = [...]``, or dotted,
    ``data.d = [...]``, which TOML nests) or the short aliases of :data:`SWEEP_ALIASES`;
    each value is a non-empty list.  The special key ``zip`` is a list of tables whose
    keys move together (``zip = [{d = 64, steps = 2_000_000}, {d = 128, steps = 8_000_000}]``):
    one grid axis, returned as ``"zip": [{"table.key": value, ...}, ...]``.  The values
    themselves are checked when each grid point is resolved.
    """
    out: dict[str, list] = {}
    for key, value in _flat_items(body):
        if key == "zip":
            out["zip"] = _check_zip(value)
            continue
        name = _sweep_name(key, f"sweep.{key}")
        if not isinstance(value, list) or not value:
            raise ConfigError(f"sweep.{key}", f"got {short(value)}; accepted: a non-empty list of values")
        if name in out:
            raise ConfigError(f"sweep.{key}", f"sweeps {name} twice; accepted: each key once")
        out[name] = list(value)
    zipped = {k for entry in out.get("zip", []) for k in entry}
    both = sorted(zipped & set(out))
    if both:
        raise ConfigError(f"sweep.{both[0]}", "is both a grid axis and in zip; accepted: one of the two")
    return out


def _check_zip(value) -> list[dict]:
    accepted = "a non-empty list of tables with the same keys, e.g. zip = [{d = 64, steps = 1000}, {d = 128, steps = 4000}]"
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) and v for v in value):
        raise ConfigError("sweep.zip", f"got {short(value)}; accepted: {accepted}")
    entries = [{_sweep_name(k, f"sweep.zip.{k}"): v for k, v in _flat_items(entry)} for entry in value]
    if any(set(e) != set(entries[0]) for e in entries):
        raise ConfigError("sweep.zip", f"entries have different keys; accepted: {accepted}")
    return entries


def _plain(value):
    """A config written in Python, as plain TOML-like values: NumPy scalars and 0-d arrays
    become ``int``/``float``/``bool``, NumPy arrays and tuples lists, and an
    :class:`~.hermite.Activation` its table of Hermite coefficients (what a TOML file would
    say), so that the resolved config is JSON and its hash is what the numbers are."""
    from .hermite import Activation

    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Activation):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist()) if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return value.item()
    return value


def resolve(raw: Mapping) -> dict:
    """Fill defaults, reject unknown keys, validate every value.  Returns a new dict.

    Raises:
        ConfigError: on the first problem found.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("config", "must be a table of tables")
    raw = _plain(raw)
    known = defaults()
    cfg = copy.deepcopy(known)
    for table, body in raw.items():
        if table not in known:
            raise ConfigError(table, f"unknown table; accepted: {', '.join(known)}")
        if not isinstance(body, Mapping):
            raise ConfigError(table, "must be a table")
        if table == "sweep":
            cfg["sweep"] = check_sweep(body)
            continue
        for key, value in body.items():
            if key not in known[table]:
                raise ConfigError(f"{table}.{key}", f"unknown key; accepted: {', '.join(known[table])}")
            cfg[table][key] = value

    t, s, dt, tr, lg, an = (cfg[k] for k in ("teacher", "student", "data", "train", "log", "analysis"))
    tr["dtype"] = dtype = check_choice("train.dtype", tr["dtype"], DTYPES)  # first: numbers are checked in it
    d = check_int("data.d", dt["d"], 1)
    t["P"] = check_int("teacher.P", t["P"], 1, d, what=f"with 1 <= P <= data.d (= {d})")
    s["m"] = check_int("student.m", s["m"], 1)
    t["activation_degree"] = check_int("teacher.activation_degree", t["activation_degree"], 1, 30)
    for key, val in (("teacher.activation", t["activation"]), ("student.activation", s["activation"])):
        if val is None:
            continue
        if isinstance(val, (str, Mapping)) and not val:
            raise ConfigError(key, "empty activation; accepted: 'h4', 'relu', ... or {4 = 1.0, 6 = 0.3}")
        if isinstance(val, Mapping):
            val = check_activation_table(key, val, dtype)
        try:
            act = make_activation(val, t["activation_degree"])
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
        if act.info_exponent is None:
            # a constant has no direction to learn (skill and emergence are undefined)
            raise ConfigError(
                key, f"{short(val)} is a constant; accepted: an activation with some c_j != 0 for j >= 1, e.g. 'h4'"
            )
        if isinstance(val, Mapping):
            # canonical, JSON-friendly form
            val = act.to_dict()
        if key == "teacher.activation":
            t["activation"] = val
        else:
            s["activation"] = val
    t["basis"] = check_choice("teacher.basis", t["basis"], BASES)
    t["beta"] = scalar_or_list("teacher.beta", t["beta"], lambda k, v: check_num(k, v, 0.0))
    if isinstance(t["beta"], list):
        check_distinct("teacher.beta", t["beta"])
    for b in t["beta"] if isinstance(t["beta"], list) else [t["beta"]]:
        _check_power_law(b, t["P"], dtype)
    if t["a"] is not None:
        a = t["a"]
        if not isinstance(a, list) or not a or not all(is_num(x) for x in a):
            raise ConfigError("teacher.a", f"got {short(a)}; accepted: a list of P = {t['P']} numbers")
        if len(a) != t["P"]:
            raise ConfigError("teacher.a", f"has {len(a)} entries; accepted: exactly P = {t['P']}")
        fi = finfo(dtype)
        for p, x in enumerate(a, start=1):
            # skill divides by a_p: a coefficient that is 0 (or rounds to 0) would read as learned at step 0
            if not float(fi.tiny) <= x <= float(fi.max):
                raise ConfigError(
                    "teacher.a", f"a_{p} = {x!r}; accepted: positive numbers in [{fi.tiny:.3g}, {fi.max:.3g}] for {dtype}"
                )
        t["a"] = [float(x) for x in a]
    fi = finfo(dtype)
    s["init_scale"] = check_num("student.init_scale", s["init_scale"], 0.0, lo_open=True)
    # the norms r^2 ~ init_scale^2 must be normal numbers of the dtype
    why = f"init_scale^2 is not a normal {dtype} number"
    check_representable("student.init_scale", s["init_scale"], dtype, math.sqrt(fi.tiny), math.sqrt(fi.max), why)

    tr["engine"] = check_choice("train.engine", tr["engine"], ENGINES)
    # the step counter is int32 on the device (engines.base.MAX_STEPS_INT32)
    tr["steps"] = check_int("train.steps", tr["steps"], 1, MAX_STEPS_INT32)
    tr["batch_size"] = check_int("train.batch_size", tr["batch_size"], 1)
    tr["lr"] = scalar_or_list(
        "train.lr", tr["lr"], lambda k, v: check_representable(k, check_num(k, v, 0.0, lo_open=True), dtype)
    )
    tr["seed"] = scalar_or_list("train.seed", tr["seed"], lambda k, v: check_int(k, v, 0, 2**31 - 1))
    for k, v in (("train.lr", tr["lr"]), ("train.seed", tr["seed"])):
        if isinstance(v, list):
            check_distinct(k, v)
    if not isinstance(tr["optimizer"], str) or not tr["optimizer"]:
        raise ConfigError("train.optimizer", f"got {tr['optimizer']!r}; accepted: an optax optimizer name")
    check_optimizer(tr["optimizer"], tr["optimizer_kwargs"])
    tr["schedule"] = check_choice("train.schedule", tr["schedule"], SCHEDULES)
    tr["schedule_n0"] = check_num(
        "train.schedule_n0", tr["schedule_n0"], 0.0, what=">= 0 (steps; 0 = the schedule's default, steps/100)"
    )
    if tr["schedule_n0"]:
        # the schedule's factor is float32: n0 must be a float32 number with t / n0 finite for t <= steps
        f32 = finfo("float32")
        lo = max(float(f32.tiny), tr["steps"] / float(f32.max))
        why = "the learning-rate factor 1 / (1 + t/n0) is float32"
        check_representable("train.schedule_n0", tr["schedule_n0"], "float32", lo, float(f32.max), why)
    tr["diverge_bound"] = check_representable(
        "train.diverge_bound", check_num("train.diverge_bound", tr["diverge_bound"], 0.0, lo_open=True), dtype
    )
    if not isinstance(tr["progress"], bool):
        raise ConfigError("train.progress", f"got {tr['progress']!r}; accepted: true or false")

    lg["points"] = check_int("log.points", lg["points"], 2, 100_000)
    # strict: 1 == True and 0.0 == False in Python, but neither is a boolean in the config
    if not (isinstance(lg["overlap"], bool) or (isinstance(lg["overlap"], str) and lg["overlap"] == "auto")):
        raise ConfigError("log.overlap", f"got {lg['overlap']!r}; accepted: true, false, 'auto'")
    an["observable"] = check_choice("analysis.observable", an["observable"], OBSERVABLES)
    an["threshold"] = check_num("analysis.threshold", an["threshold"], 0.0, lo_open=True, hi=1.0, what="in (0, 1]")
    for engine in ENGINES.values():  # each engine's own table, then its rules
        if engine.table:
            cfg[engine.table] = engine.resolve_settings(cfg[engine.table], dtype)
    ENGINES[tr["engine"]].from_config(cfg).check(cfg)
    return cfg


def _check_power_law(beta: float, P: int, dtype: str) -> None:
    """Every ``a_p = p^-beta / sqrt(sum_q q^-2 beta)`` must be a positive normal number of
    the dtype: a coefficient that underflows to 0 makes ``skill`` infinite, read as learned."""
    if P == 1:
        return
    fi = finfo(dtype)
    log_norm = 0.5 * math.log(math.fsum(math.exp(-2.0 * beta * math.log(q)) for q in range(1, P + 1)))
    log_aP = -beta * math.log(P) - log_norm
    if log_aP < math.log(fi.tiny):
        beta_max = -math.log(fi.tiny) / math.log(P)
        raise ConfigError(
            "teacher.beta",
            f"= {beta:g} makes a_{P} = P^-beta underflow to 0 in {dtype}; accepted: beta <= {beta_max:.4g} for P = {P} in {dtype}",
        )


def with_overlap(cfg: Mapping, R: int) -> bool:
    """Whether a run logs the full cosine matrix ``overlap`` ``(R, T, m, P)``.

    ``log.overlap = "auto"`` keeps it when it is small: ``m P <= OVERLAP_AUTO_MAX`` and the
    whole array at most ``OVERLAP_AUTO_MAX_ELEMENTS`` entries (bounded memory and disk).
    ``R``: the replica count.
    """
    ov = cfg["log"]["overlap"]
    if ov != "auto":
        return bool(ov)
    mP = cfg["student"]["m"] * cfg["teacher"]["P"]
    size = R * (cfg["log"]["points"] + 1) * mP
    return mP <= OVERLAP_AUTO_MAX and size <= OVERLAP_AUTO_MAX_ELEMENTS


def canonical_json(cfg: Mapping) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: Mapping) -> str:
    """SHA-256 (hex, 16 chars) of the resolved config, ignoring keys that do not change results."""
    c = copy.deepcopy(dict(cfg))
    c.get("train", {}).pop("progress", None)
    c.pop("analysis", None)
    return hashlib.sha256(canonical_json(c).encode()).hexdigest()[:16]


def replica_grid(cfg: Mapping) -> dict[str, list]:
    """The replicas a resolved config asks for: the product of the lists of the replicated
    settings (:data:`.engines.base.REPLICA_SETTINGS`: ``beta x lr x seed``, seed fastest).

    Returns ``{"beta": [...], "lr": [...], "seed": [...]}``, each of length ``R``.
    """
    lists = []
    for name, key in REPLICA_SETTINGS.items():
        table, k = key.split(".")
        v = cfg[table][k]
        cast = int if name == "seed" else float
        lists.append([cast(x) for x in (v if isinstance(v, list) else [v])])
    columns = list(zip(*itertools.product(*lists)))
    return {name: list(col) for name, col in zip(REPLICA_SETTINGS, columns)}
