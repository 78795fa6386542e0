"""15. Width arms at P = 256 with m = 2P: experiment 9's analysis (``09_loss_exponent_P256``:
the same estimator, fit window rule, bootstrap and scope rules) on its beta = 0.75 and 1
arms with twice the neurons, then each T_p slope set beside the same beta's slope at m = P
(experiment 9's stored fit) and beside the race model on these seeds
(``sims/results/race_rows.json``, written by ``python -m sims.race_rows`` before the run)."""

from __future__ import annotations

import math

from sims import output
from sims.experiments import get
from sims.load import Experiment
from sims.output import Outcome


def run(exp: Experiment, force: bool = False) -> Outcome:
    out = get(exp.get("analysis", "09_loss_exponent_P256"))(exp, force)
    notes = out.notes + width_notes(exp, out.checks) + [assumptions_note(out.runs[0].cfg)]
    return Outcome(out.checks, out.figure, notes, out.runs, out.extra)


def assumptions_note(cfg: dict) -> str:
    """Where the run sits against the theorem's assumptions (m = Theta~(P), P << d^0.1)."""
    P, m, d = int(cfg["teacher"]["P"]), int(cfg["student"]["m"]), float(cfg["data"]["d"])
    return (
        f"Against the theorem's assumptions: m = {m} = {m / P:g}P meets m = Theta~(P) (width up to log factors), but "
        f"P = {P} is far above d^0.1 = {d**0.1:.1f} (d = {d:g}); no feasible d meets P << d^0.1 at this P. These rows "
        "test the additive picture at finite size (the race model), not the theorem."
    )


def width_notes(exp: Experiment, checks: list[dict], base: str = "09_loss_exponent_P256") -> list[str]:
    """One note per T_p-slope row: its interval against the slope at m = P (``base``'s stored
    row of the same beta) and the race model's value for these seeds, when they are stored."""
    stored = _checks(output.RESULT_DIR / f"{base}.json")
    race = {r["quantity"]: r["race"] for r in _rows(output.RESULT_DIR / "race_rows.json") if r["experiment"] == exp.name}
    out = []
    for c in checks:
        if not c["quantity"].startswith("slope of T_p vs p"):
            continue
        key = c["quantity"].split(", m=")[0]  # the same beta and P at m = P
        ref = stored.get(key)
        if ref is None or not math.isfinite(c["lo"]):
            continue
        excludes = not (c["lo"] <= ref["fitted"] <= c["hi"])
        rv = race.get(c["quantity"])
        out.append(
            f"{c['quantity']}: {c['fitted']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] against {ref['fitted']:.3f} at m = P "
            f"({base}); the interval {'excludes' if excludes else 'contains'} the m = P slope"
            + (f", and the race model on these seeds gives {rv:.3f}" if rv is not None else "")
            + (
                f". With more neurons per direction the excess over beta = {c['predicted']:g} "
                f"{'shrinks' if abs(c['fitted'] - c['predicted']) < abs(ref['fitted'] - c['predicted']) else 'does not shrink'}."
            )
        )
    return out


def _checks(path) -> dict:
    return {c["quantity"]: c for c in output.load_json(path)["checks"]} if path.is_file() else {}


def _rows(path) -> list[dict]:
    return output.load_json(path)["rows"] if path.is_file() else []
