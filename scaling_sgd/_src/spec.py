"""The run spec: a resolved config turned, once, into everything a run needs.

:func:`build_spec` reads the config a single time and returns a :class:`RunSpec`: the
engine (built by itself from its table), the static description (shapes and code paths:
a compile-time constant), the replicas (traced numbers), the log grid, and the metrics
the run will log.  The preflight, the runner, the sweep's ordering and the results code
take the spec, not the config.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import config as cfgmod
from .engines import ENGINES, Engine, Replicas, Static, driver  # noqa: F401 - driver: Replicas as a pytree
from .engines.base import itemsize, log_grid
from .hermite import activation
from .model import Model, teacher_coefficients
from .schema import schema

__all__ = ["RunSpec", "build_spec"]


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything a run needs, resolved once.

    Attributes:
        config: the resolved config (JSON; what ``config.json`` records).
        hash: its :func:`.config.config_hash`.
        engine: the engine object.
        static: shapes and code paths (:class:`.engines.base.Static`).
        replicas: per-replica numbers on the host (:class:`.engines.base.Replicas`).
        steps: ``(T,)`` int64 log grid (``0`` first).
        metrics: name -> dimension names of every array the run writes (:mod:`.schema`).
        sizes: dimension name -> length (``replica``, ``step``, ``direction``, ``neuron``).
        itemsize: bytes per float.
    """

    config: dict
    hash: str
    engine: Engine
    static: Static
    replicas: Replicas
    steps: np.ndarray
    metrics: dict
    sizes: dict
    itemsize: int

    @property
    def R(self) -> int:
        """Number of replicas."""
        return self.sizes["replica"]

    @property
    def T(self) -> int:
        """Number of log points (with repeats on a short grid; see :func:`.engines.base.log_grid`)."""
        return self.sizes["step"]

    @property
    def R_compiled(self) -> int:
        """Replicas the program runs: :attr:`R` padded to its bucket
        (:func:`.engines.driver.replica_bucket`)."""
        from .engines.driver import replica_bucket

        return replica_bucket(self.R)

    @property
    def program(self) -> tuple:
        """What one compiled program is specific to: the engine, the static description it
        is compiled for (:meth:`.engines.base.Engine.program`), the replica bucket and the
        number of log points (runs with equal keys share it)."""
        return (self.engine, self.engine.program(self.static, self.replicas)[0], self.R_compiled, self.T)


def build_spec(cfg: dict) -> RunSpec:
    """The :class:`RunSpec` of a resolved config (:func:`.config.resolve`)."""
    grid = cfgmod.replica_grid(cfg)
    overlap = cfgmod.with_overlap(cfg, len(grid["seed"]))
    run_hash = cfgmod.config_hash(cfg)
    t, s, tr = cfg["teacher"], cfg["student"], cfg["train"]
    deg = t["activation_degree"]
    teacher = activation(t["activation"], deg)
    student = activation(s["activation"], deg) if s["activation"] is not None else teacher
    model = Model(d=cfg["data"]["d"], P=t["P"], m=s["m"], teacher=teacher, student=student, basis=t["basis"])
    static = Static(
        model=model,
        batch_size=tr["batch_size"],
        optimizer=tr["optimizer"],
        optimizer_kwargs=tuple(sorted(tr["optimizer_kwargs"].items())),
        schedule=tr["schedule"],
        schedule_n0=float(tr["schedule_n0"]),
        dtype=tr["dtype"],
        with_overlap=overlap,
    )
    replicas = Replicas(
        seed=np.asarray(grid["seed"], np.int64),
        lr=np.asarray(grid["lr"], np.float64),
        a=teacher_coefficients(t, grid["beta"]),
        beta=np.asarray(grid["beta"], np.float64),
        init_scale=s["init_scale"],
        diverge_bound=tr["diverge_bound"],
    )
    steps = log_grid(tr["steps"], cfg["log"]["points"])
    engine = ENGINES[tr["engine"]].from_config(cfg)
    return RunSpec(
        config=cfg,
        hash=run_hash,
        engine=engine,
        static=static,
        replicas=replicas,
        steps=steps,
        metrics=schema(engine.name, overlap),
        sizes={"replica": replicas.R, "step": int(steps.size), "direction": model.P, "neuron": model.m},
        itemsize=itemsize(static),
    )
