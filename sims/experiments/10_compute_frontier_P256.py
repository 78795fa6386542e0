"""10. Compute frontier at P = 256: experiment 6's analysis (``06_compute_frontier``) on a
flow sweep over widths 1 to 256 at beta = 0.8, where the additive model says the frontier
is close to its asymptotic slope (experiment 6 at P = 16 is a finite-P illustration)."""

from __future__ import annotations

from sims.experiments import get
from sims.load import Experiment
from sims.output import Outcome


def run(exp: Experiment, force: bool = False) -> Outcome:
    return get(exp.get("analysis", "06_compute_frontier"))(exp, force)
