"""A toy engine in one file: what adding an engine takes (docs/architecture.md).

Each direction is learned at a constant rate, ``skill_p(t) = min(1, rate a_p lr t)``, so
its emergence step at threshold ``h`` is ``h / (rate a_p lr)`` in closed form.  The engine
owns a settings table ``[toy]`` (``rate``, and ``bytes_per_neuron``, the memory it claims
per neuron and replica, so that a test can make the preflight refuse it), its config rule
(``rate`` positive) and its memory estimate.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp

from scaling_sgd._src.validate import check_num
from scaling_sgd.engines import Engine


class ToyState(NamedTuple):
    t: object  # (R,) int32 steps done
    diverged: object
    diverged_step: object


@dataclasses.dataclass(frozen=True)
class Toy(Engine):
    """Directions learned at a constant rate (see the module docstring)."""

    rate: float = 1.0
    bytes_per_neuron: float = 8.0
    name = "toy"
    table = "toy"
    defaults = {"rate": 1.0, "bytes_per_neuron": 8.0}

    @classmethod
    def resolve_settings(cls, settings: dict, dtype: str) -> dict:
        out = dict(settings)
        out["rate"] = check_num("toy.rate", out["rate"], 0.0, lo_open=True)
        out["bytes_per_neuron"] = check_num("toy.bytes_per_neuron", out["bytes_per_neuron"], 0.0)
        return out

    @classmethod
    def from_config(cls, cfg: dict) -> Toy:
        return cls(rate=cfg["toy"]["rate"], bytes_per_neuron=cfg["toy"]["bytes_per_neuron"])

    def memory(self, static, R: int, T: int) -> dict[str, int]:
        return {"toy state": int(self.bytes_per_neuron * R * static.model.m)}

    def advice(self, top: str) -> str:
        return "reduce toy.bytes_per_neuron"

    def init(self, static, reps, grid) -> ToyState:
        R = reps.seed.shape[0]
        return ToyState(jnp.zeros((R,), jnp.int32), jnp.zeros((R,), bool), jnp.full((R,), -1, jnp.int32))

    def advance(self, static, state: ToyState, reps, target, grid) -> ToyState:
        t1 = jnp.minimum(target.step, state.t + target.budget)
        return state._replace(t=jnp.where(state.diverged, state.t, jnp.maximum(state.t, t1)))

    def position(self, static, state: ToyState, grid):
        return jnp.min(jnp.where(state.diverged, jnp.iinfo(jnp.int32).max, state.t))

    def observe(self, static, state: ToyState, reps, grid, index) -> dict:
        m = static.model
        dt = jnp.float64 if static.dtype == "float64" else jnp.float32
        a = reps.a.astype(dt)
        t = state.t.astype(dt)[:, None]
        skill = jnp.minimum(1.0, self.rate * a * reps.lr.astype(dt)[:, None] * t)  # (R, P)
        obs = {
            "loss": jnp.sum(a * a * (1.0 - skill) ** 2, axis=1),
            "alignment": skill,
            "skill": skill,
            "norm2": jnp.ones((a.shape[0], m.m), dt),
        }
        if static.with_overlap:
            obs["overlap"] = jnp.zeros((a.shape[0], m.m, m.P), dt)
        return obs
