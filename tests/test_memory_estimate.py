"""The preflight's memory estimate against the measured peak resident memory of a run.

One case per engine (and both flow solvers), each run in a fresh process by
``benchmarks/memory_check.py``, beside the same engine at a tiny size.  Two ratios are
pinned within [0.6, 2]: the peak over the estimate, and the growth of the peak from the
tiny size to the case over the growth of the estimate.  The second is the engine's own
part alone: the runtime, the same in both, cannot carry it into the band.
"""

import importlib.util
from pathlib import Path

import pytest

import scaling_sgd as ss
from scaling_sgd._src import preflight
from scaling_sgd._src.config import set_key

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("memory_check", ROOT / "benchmarks" / "memory_check.py")
memory_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory_check)

CASES = ["sgd d=2^16 R=8", "reduced P=m=256 R=64", "flow rkc P=m=512 R=8", "flow ros2 P=m=256 R=2"]
RUNTIME = "compiler and runtime"


def _estimate(name: str) -> dict:
    raw = {}
    for k, v in {**memory_check.BASE, **memory_check.CASES[name]}.items():
        set_key(raw, k, v)
    return preflight.memory_estimate(ss.build_spec(ss.resolve_config(raw)))


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_estimate_within_a_factor_of_the_peak(name):
    over = memory_check.CASES[name]
    tiny = {k: v for k, v in over.items() if k in ("train.engine", "flow.solver")}
    parts = _estimate(name)
    total = sum(parts.values())
    assert (total - parts[RUNTIME]) / total >= 0.4, "the case no longer exercises the engine's estimate"
    r, r0 = memory_check.measure(over), memory_check.measure(tiny)
    assert r["estimate"] == total
    growth = (r["peak"] - r0["peak"]) / (r["estimate"] - r0["estimate"])
    msg = f"{name}: peak {r['peak'] / 1e9:.3f} GB (tiny {r0['peak'] / 1e9:.3f}), estimate {total / 1e9:.3f} GB (tiny {r0['estimate'] / 1e9:.3f})"
    assert 0.6 <= r["ratio"] <= 2.0, msg
    assert 0.6 <= growth <= 2.0, msg
