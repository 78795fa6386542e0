"""The random-number contract: one seed, one key per role.

Every engine derives its randomness from a replica's integer seed through
:func:`split_keys`, so that the same seed gives the same teacher, the same initial
student and the same data stream in every engine that uses them (and ``flow`` started
with ``match_sgd`` starts from ``sgd``'s weights).
"""

from __future__ import annotations

from typing import NamedTuple

from .lazy import lazy

jax = lazy("jax")


__all__ = ["Keys", "split_keys"]


class Keys(NamedTuple):
    """PRNG keys by role: ``teacher`` (a random teacher basis), ``init`` (the student's
    initial weights), ``data`` (the input stream)."""

    teacher: jax.Array
    init: jax.Array
    data: jax.Array


def split_keys(seed) -> Keys:
    """Role-separated keys of one replica: ``split(PRNGKey(seed), 3)``."""
    k_teacher, k_init, k_data = jax.random.split(jax.random.PRNGKey(seed), 3)
    return Keys(k_teacher, k_init, k_data)
