"""The metrics schema: every array of a run (``metrics.npz``), by name, with the names of its
dimensions.  The API's named views, the results checks and the preflight's size estimates
all read it, so a new observable is declared once (:data:`.model.OBSERVABLES`).

Dimensions: ``replica`` (``R``), ``step`` (``T`` log points), ``direction`` (``P``),
``neuron`` (``m``).
"""

from __future__ import annotations

import math

from .engines import ENGINES
from .engines.base import REPLICA_SETTINGS
from .model import OBSERVABLES, OPTIONAL_OBSERVABLES

__all__ = ["LOGGED", "RUN", "REPLICATED", "schema", "shape", "size_per_replica_step"]

#: observables logged at every log point: name -> dims
LOGGED: dict[str, tuple[str, ...]] = {name: ("replica", "step", *dims) for name, dims in OBSERVABLES.items()}
#: the replicated settings and the teacher coefficients of each replica
REPLICATED: dict[str, tuple[str, ...]] = {**{name: ("replica",) for name in REPLICA_SETTINGS}, "a": ("replica", "direction")}
#: the log grid and the divergence flags
RUN: dict[str, tuple[str, ...]] = {"step": ("step",), "diverged": ("replica",), "diverged_step": ("replica",)}


def schema(engine: str | None = None, overlap: bool = True) -> dict[str, tuple[str, ...]]:
    """Every array a run of ``engine`` (a registered name; ``None``: the model's arrays only)
    may hold: name -> dims.  ``overlap=False`` leaves the optional ``overlap`` out."""
    logged = {k: v for k, v in LOGGED.items() if overlap or k not in OPTIONAL_OBSERVABLES}
    extra = dict(ENGINES[engine].extra_metrics) if engine in ENGINES else {}
    return {**RUN, **logged, **REPLICATED, **extra}


def shape(dims: tuple[str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape of an array with ``dims``, for ``sizes`` (dimension name -> length)."""
    return tuple(int(sizes[d]) for d in dims)


def size_per_replica_step(sizes: dict[str, int], overlap: bool) -> int:
    """Numbers logged per replica and log point (every observable of :data:`LOGGED`)."""
    one = {**sizes, "replica": 1, "step": 1}
    return sum(math.prod(shape(dims, one)) for k, dims in LOGGED.items() if overlap or k not in OPTIONAL_OBSERVABLES)
