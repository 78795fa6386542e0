"""Config hashing: every key that can change a result changes ``config_hash``; the keys
that cannot (progress output, the analysis table) do not.

The hash names a sweep point's directory and decides whether ``sweep`` resumes or redoes
a point: a key left out of it silently merges distinct runs (a sweep over ``log.points``
collapses to one point, a resume reuses stale results), and a key wrongly in it splits one
run into two.  The keys are taken from ``config.defaults()``, so a key added later is covered
without editing this file (a key whose alternatives cannot be derived from its default
makes ``test_every_key_has_alternative_values`` fail until it gets an entry in SPECIAL).
"""

import json
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scaling_sgd._src import config as cfgmod

from helpers import small_config

KEYS = [(t, k) for t, body in cfgmod.defaults().items() for k in body]
# keys that never change a simulated number
NOT_RESULTS = {("train", "progress")} | {("analysis", k) for k in cfgmod.defaults()["analysis"]}

# Valid alternatives for keys whose default's type does not say what a different valid
# value is (None, tables, a string that is not a choice).
SPECIAL = {
    ("teacher", "a"): [[0.9, 0.4, 0.1], [1.0, 1.0, 1.0]],
    ("student", "activation"): ["h3", "relu", {"4": 1.0, "6": 0.3}],
    ("train", "optimizer_kwargs"): [{"momentum": 0.9}, {"nesterov": True}],
    ("log", "overlap"): [True, False],
}
# replicable keys also take lists (replicas)
LISTS = {("train", "lr"): [[1e-3, 2e-3]], ("train", "seed"): [[0, 1], [3]], ("teacher", "beta"): [[1.0, 1.5]]}


def _accepted_choices(table, key):
    """The quoted values listed by the error for a bad string (the error names the
    accepted values): the choices of a string key."""
    try:
        small_config(**{f"{table}.{key}": "no-such-value"})
    except cfgmod.ConfigError as e:
        return re.findall(r"'([^']*)'", str(e).split("accepted", 1)[-1])
    return []


def _alternatives(table, key):
    """Deterministic valid-looking alternatives to the default (validity is checked by
    resolving them)."""
    d = cfgmod.defaults()[table][key]
    out = list(SPECIAL.get((table, key), [])) + list(LISTS.get((table, key), []))
    if isinstance(d, bool):
        out += [not d, d]
    elif isinstance(d, int):
        out += [d + 1, d + 2, 2 * d + 1]
    elif isinstance(d, float):
        out += [2 * d, d / 2, d + 0.125]
    elif isinstance(d, str):
        out += [c for c in _accepted_choices(table, key) if c != d]
    return out


def _resolve(over):
    try:
        return small_config(**over)
    except cfgmod.ConfigError:
        return None


def _name(table, key):
    return f"{table}.{key}"


@pytest.mark.parametrize("table,key", KEYS, ids=[_name(*k) for k in KEYS])
def test_every_key_has_alternative_values(table, key):
    """Each key of the defaults has at least one valid value different from the base config's,
    and changing it changes the hash exactly when the key can change results."""
    base = small_config()
    h0 = cfgmod.config_hash(base)
    tried = 0
    for v in _alternatives(table, key):
        cfg = _resolve({_name(table, key): v})
        if cfg is None or cfg[table][key] == base[table][key]:
            continue
        tried += 1
        h1 = cfgmod.config_hash(cfg)
        if (table, key) in NOT_RESULTS:
            assert h1 == h0, (table, key, v)
        else:
            assert h1 != h0, (table, key, v)
    assert tried > 0, f"no valid alternative for {table}.{key}: add one to SPECIAL"


def _alt_strategy(table, key):
    d = cfgmod.defaults()[table][key]
    listed = st.sampled_from(_alternatives(table, key) or [d])
    if isinstance(d, bool):
        return listed
    if isinstance(d, int):
        return st.one_of(listed, st.integers(1, 200))
    if isinstance(d, float):
        return st.one_of(listed, st.floats(1e-6, 1.0, allow_nan=False))
    return listed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_hash_changes_exactly_with_the_keys_that_change_results(data):
    """Property: from a random valid base (up to three keys off their defaults), changing one
    random key to a random valid value changes the hash iff the resolved value changed and
    the key is one that can change results."""
    over = {}
    for _ in range(data.draw(st.integers(0, 3), label="n_base_changes")):
        t, k = data.draw(st.sampled_from(KEYS), label="base key")
        over[_name(t, k)] = data.draw(_alt_strategy(t, k), label=f"base {t}.{k}")
    base = _resolve(over)
    assume(base is not None)
    table, key = data.draw(st.sampled_from(KEYS), label="key")
    value = data.draw(_alt_strategy(table, key), label="value")
    changed = _resolve({**over, _name(table, key): value})
    assume(changed is not None)
    differs = json.dumps(changed[table][key], sort_keys=True) != json.dumps(base[table][key], sort_keys=True)
    same_hash = cfgmod.config_hash(changed) == cfgmod.config_hash(base)
    if (table, key) in NOT_RESULTS or not differs:
        assert same_hash
    else:
        assert not same_hash


def test_hash_is_a_function_of_the_content():
    """Equal configs hash equal whatever their key order (a config read back from
    ``config.json`` must find its sweep point); the hash is 16 hex digits."""
    cfg = small_config(**{"train.seed": [0, 1], "teacher.activation": {"4": 1.0, "6": 0.3}})
    rev = {t: dict(reversed(list(body.items()))) if isinstance(body, dict) else body for t, body in reversed(list(cfg.items()))}
    assert list(rev) != list(cfg)
    h = cfgmod.config_hash(cfg)
    assert cfgmod.config_hash(rev) == h == cfgmod.config_hash(json.loads(json.dumps(cfg)))
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    # and it does not mutate its argument (progress and analysis are dropped from a copy)
    assert cfg["train"]["progress"] is False and "analysis" in cfg
