"""Configuration: TOML tables with defaults, strict validation, ``--set`` overrides.

A config is a plain nested ``dict`` ``{table: {key: value}}``.  :func:`resolve` fills
every default, rejects unknown keys and checks types and ranges *before any compute*,
raising :class:`ConfigError` whose message names the key and the accepted values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["ConfigError", "DEFAULTS", "load", "resolve", "apply_set", "config_hash", "replica_grid"]


class ConfigError(ValueError):
    """A bad config value.  ``str(err)`` is one line naming the key and what is accepted."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


ENGINES = ("sgd", "reduced", "flow")
DTYPES = ("float32", "float64")
SCHEDULES = ("constant", "cosine", "linear", "inverse_time")
BASES = ("canonical", "random")
OBSERVABLES = ("skill", "alignment")
FLOW_SOLVERS = ("auto", "ros2", "kvaerno5", "kvaerno3", "tsit5", "dopri5")

# Every key with its default.  Replicable keys (scalar or list) are marked in REPLICA_KEYS.
DEFAULTS: dict[str, dict[str, Any]] = {
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
        "engine": "sgd",
        "steps": 1_000_000,
        "batch_size": 1,
        "lr": 1e-5,
        "seed": 0,
        "optimizer": "sgd",
        "optimizer_kwargs": {},
        "schedule": "constant",
        "dtype": "float32",
        "diverge_bound": 1e8,
        "progress": True,
    },
    "log": {"points": 200, "overlap": "auto"},
    "analysis": {"observable": "skill", "threshold": 0.5},
    "flow": {"rtol": 1e-6, "atol": 1e-9, "solver": "auto"},
    "sweep": {},
}
REPLICA_KEYS = {("train", "lr"), ("train", "seed"), ("teacher", "beta")}
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
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "engine": "train.engine",
    "seed": "train.seed",
    "steps": "train.steps",
}


def load(path: str | Path) -> dict:
    """Read a TOML config file (no defaults applied)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"no such file {str(path)!r}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML ({e})") from None


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word such as adam or h4


def apply_set(raw: dict, assignments: list[str]) -> dict:
    """Apply ``table.key=value`` overrides (values parsed as TOML, else as strings)."""
    out = copy.deepcopy(raw)
    for item in assignments or []:
        if "=" not in item:
            raise ConfigError("--set", f"{item!r} is not of the form table.key=value")
        lhs, rhs = item.split("=", 1)
        parts = lhs.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError("--set", f"{lhs!r} must be table.key, e.g. train.lr")
        table, key = parts
        out.setdefault(table, {})
        if not isinstance(out[table], dict):
            raise ConfigError(table, "must be a table")
        out[table][key] = _parse_value(rhs.strip())
    return out


# -- checkers ------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int(key, v, lo=None, hi=None, what=""):
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = what or (f">= {lo}" if hi is None else f"in [{lo}, {hi}]")
        raise ConfigError(key, f"got {v!r}; accepted: an integer {rng}")
    return v


def _num(key, v, lo=None, lo_open=False, hi=None, what=""):
    bad = not _is_num(v)
    if not bad and lo is not None:
        bad = v <= lo if lo_open else v < lo
    if not bad and hi is not None:
        bad = v > hi
    if bad:
        rng = what or (f"{'>' if lo_open else '>='} {lo}" if lo is not None else "finite")
        raise ConfigError(key, f"got {v!r}; accepted: a number {rng}")
    return float(v)


def _choice(key, v, choices):
    if v not in choices:
        raise ConfigError(key, f"got {v!r}; accepted: {', '.join(repr(c) for c in choices)}")
    return v


def _scalar_or_list(key, v, check):
    if isinstance(v, list):
        if not v:
            raise ConfigError(key, "empty list; accepted: a value or a non-empty list of values")
        return [check(key, x) for x in v]
    return check(key, v)


def check_sweep(body: Mapping) -> dict[str, list]:
    """Validate a ``[sweep]`` table; return ``{"table.key": [values, ...]}`` in table order.

    Keys are ``table.key`` names of config keys (quoted, ``"data.d" = [...]``, or dotted,
    ``data.d = [...]``, which TOML nests) or the short aliases of :data:`SWEEP_ALIASES`;
    each value is a non-empty list.  The values themselves are checked when each grid
    point is resolved.
    """
    accepted = f"a config key as table.key or one of {', '.join(SWEEP_ALIASES)}"
    flat: list[tuple[str, Any]] = []
    for key, value in body.items():
        if isinstance(value, Mapping):  # TOML dotted key: data.d = [...] -> {"data": {"d": [...]}}
            flat.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            flat.append((key, value))
    out: dict[str, list] = {}
    for key, value in flat:
        name = SWEEP_ALIASES.get(key, key)
        table, _, k = name.partition(".")
        if table not in DEFAULTS or table == "sweep" or k not in DEFAULTS[table]:
            raise ConfigError(f"sweep.{key}", f"unknown sweep key; accepted: {accepted}")
        if not isinstance(value, list) or not value:
            raise ConfigError(f"sweep.{key}", f"got {value!r}; accepted: a non-empty list of values")
        if name in out:
            raise ConfigError(f"sweep.{key}", f"sweeps {name} twice; accepted: each key once")
        out[name] = list(value)
    return out


def resolve(raw: Mapping) -> dict:
    """Fill defaults, reject unknown keys, validate every value.  Returns a new dict.

    Raises:
        ConfigError: on the first problem found.
    """
    from .hermite import activation as make_activation

    if not isinstance(raw, Mapping):
        raise ConfigError("config", "must be a table of tables")
    cfg = copy.deepcopy(DEFAULTS)
    for table, body in raw.items():
        if table not in DEFAULTS:
            raise ConfigError(table, f"unknown table; accepted: {', '.join(DEFAULTS)}")
        if not isinstance(body, Mapping):
            raise ConfigError(table, "must be a table")
        if table == "sweep":
            cfg["sweep"] = check_sweep(body)
            continue
        for key, value in body.items():
            if key not in DEFAULTS[table]:
                raise ConfigError(f"{table}.{key}", f"unknown key; accepted: {', '.join(DEFAULTS[table])}")
            cfg[table][key] = value

    t, s, dt, tr, lg, an, fl = (cfg[k] for k in ("teacher", "student", "data", "train", "log", "analysis", "flow"))
    d = _int("data.d", dt["d"], 1)
    t["P"] = _int("teacher.P", t["P"], 1, d, what=f"with 1 <= P <= data.d (= {d})")
    s["m"] = _int("student.m", s["m"], 1)
    t["activation_degree"] = _int("teacher.activation_degree", t["activation_degree"], 1, 30)
    for key, val in (("teacher.activation", t["activation"]), ("student.activation", s["activation"])):
        if val is None:
            continue
        if isinstance(val, (str, Mapping)) and not val:
            raise ConfigError(key, "empty activation; accepted: 'h4', 'relu', ... or {4 = 1.0, 6 = 0.3}")
        try:
            act = make_activation(val, t["activation_degree"])
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
        if isinstance(val, Mapping):
            # canonical, JSON-friendly form
            val = act.to_dict()
        if key == "teacher.activation":
            t["activation"] = val
        else:
            s["activation"] = val
    t["basis"] = _choice("teacher.basis", t["basis"], BASES)
    t["beta"] = _scalar_or_list("teacher.beta", t["beta"], lambda k, v: _num(k, v, 0.0))
    if t["a"] is not None:
        a = t["a"]
        if not isinstance(a, list) or not a or not all(_is_num(x) for x in a):
            raise ConfigError("teacher.a", f"got {a!r}; accepted: a list of P = {t['P']} numbers")
        if len(a) != t["P"]:
            raise ConfigError("teacher.a", f"has {len(a)} entries; accepted: exactly P = {t['P']}")
        t["a"] = [float(x) for x in a]
    s["init_scale"] = _num("student.init_scale", s["init_scale"], 0.0, lo_open=True)

    tr["engine"] = _choice("train.engine", tr["engine"], ENGINES)
    tr["steps"] = _int("train.steps", tr["steps"], 1)
    tr["batch_size"] = _int("train.batch_size", tr["batch_size"], 1)
    tr["lr"] = _scalar_or_list("train.lr", tr["lr"], lambda k, v: _num(k, v, 0.0, lo_open=True))
    tr["seed"] = _scalar_or_list("train.seed", tr["seed"], lambda k, v: _int(k, v, 0, 2**31 - 1))
    if not isinstance(tr["optimizer"], str) or not tr["optimizer"]:
        raise ConfigError("train.optimizer", f"got {tr['optimizer']!r}; accepted: an optax optimizer name")
    from .optim import check_optimizer

    check_optimizer(tr["optimizer"], tr["optimizer_kwargs"], tr["engine"])
    tr["schedule"] = _choice("train.schedule", tr["schedule"], SCHEDULES)
    tr["dtype"] = _choice("train.dtype", tr["dtype"], DTYPES)
    tr["diverge_bound"] = _num("train.diverge_bound", tr["diverge_bound"], 0.0, lo_open=True)
    if not isinstance(tr["progress"], bool):
        raise ConfigError("train.progress", f"got {tr['progress']!r}; accepted: true or false")

    lg["points"] = _int("log.points", lg["points"], 2, 100_000)
    if lg["overlap"] not in (True, False, "auto"):
        raise ConfigError("log.overlap", f"got {lg['overlap']!r}; accepted: true, false, 'auto'")
    an["observable"] = _choice("analysis.observable", an["observable"], OBSERVABLES)
    an["threshold"] = _num("analysis.threshold", an["threshold"], 0.0, lo_open=True, hi=1.0, what="in (0, 1]")
    fl["rtol"] = _num("flow.rtol", fl["rtol"], 0.0, lo_open=True)
    fl["atol"] = _num("flow.atol", fl["atol"], 0.0, lo_open=True)
    fl["solver"] = _choice("flow.solver", fl["solver"], FLOW_SOLVERS)

    if tr["engine"] == "reduced":
        need = t["P"] + s["m"] + tr["batch_size"]
        if d < need:
            raise ConfigError("data.d", f"= {d} is too small for engine 'reduced'; accepted: d >= P + m + batch_size = {need}")
    if tr["engine"] == "flow" and d < t["P"] + s["m"]:
        raise ConfigError("data.d", f"= {d} is too small for engine 'flow'; accepted: d >= P + m = {t['P'] + s['m']}")
    return cfg


def canonical_json(cfg: Mapping) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(cfg: Mapping) -> str:
    """SHA-256 (hex, 16 chars) of the resolved config, ignoring keys that do not change results."""
    c = copy.deepcopy(dict(cfg))
    c.get("train", {}).pop("progress", None)
    c.pop("analysis", None)
    return hashlib.sha256(canonical_json(c).encode()).hexdigest()[:16]


def replica_grid(cfg: Mapping) -> dict[str, list]:
    """The replicas a resolved config asks for: product of the ``beta x lr x seed`` lists.

    Returns ``{"beta": [...], "lr": [...], "seed": [...]}``, each of length ``R``, with
    the seed varying fastest.
    """

    def as_list(v):
        return v if isinstance(v, list) else [v]

    betas = as_list(cfg["teacher"]["beta"])
    lrs = as_list(cfg["train"]["lr"])
    seeds = as_list(cfg["train"]["seed"])
    out = {"beta": [], "lr": [], "seed": []}
    for b in betas:
        for lr in lrs:
            for s in seeds:
                out["beta"].append(float(b))
                out["lr"].append(float(lr))
                out["seed"].append(int(s))
    return out
