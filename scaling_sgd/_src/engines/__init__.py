"""Engine registry: ``name -> simulate(static, replicas, log_steps, progress) -> metrics``."""

from __future__ import annotations

import importlib

ENGINE_MODULES = {"sgd": "sgd", "reduced": "reduced", "flow": "flow"}


def get_engine(name: str):
    """Return the ``simulate`` function of engine ``name`` (imported lazily)."""
    if name not in ENGINE_MODULES:
        raise ValueError(f"unknown engine {name!r}; accepted: {', '.join(ENGINE_MODULES)}")
    try:
        mod = importlib.import_module(f"{__name__}.{ENGINE_MODULES[name]}")
    except ModuleNotFoundError as e:
        raise NotImplementedError(f"engine {name!r} is not available in this build ({e})") from None
    return mod.simulate
