"""10. Compute frontier at P = 256: experiment 6's analysis (``06_compute_frontier``) on a
flow sweep over widths 1 to 256 at beta = 0.8, where the additive model says the frontier
is close to its asymptotic slope (experiment 6 at P = 16 is a finite-P illustration)."""

from __future__ import annotations

from sims import common as C
from sims.experiments import get


def run(exp: C.Experiment, force: bool = False) -> C.Outcome:
    return get(exp.get("analysis", "06_compute_frontier"))(exp, force)
