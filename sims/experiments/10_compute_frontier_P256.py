"""10. Compute frontier at P = 256: experiment 6's analysis (``06_compute_frontier``) on a
flow sweep over widths 1 to 256 at beta = 0.8 (experiment 6 at P = 16 is a finite-P
illustration).  The asymptotic slope -1/3 drops logarithms; the race model gives the
slope at this and larger P (``python -m sims.race_frontier``, docs/model.md, "The frontier
against P")."""

from __future__ import annotations

from sims.experiments import get
from sims.load import Experiment
from sims.output import Outcome


def run(exp: Experiment, force: bool = False) -> Outcome:
    return get(exp.get("analysis", "06_compute_frontier"))(exp, force)
