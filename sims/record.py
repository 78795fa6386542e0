"""The per-seed record of an experiment's runs: what its rows are fitted from, small enough
for the repository (``sims/data/<tag>[.<part>].npz``, compressed).

A record holds, for every sweep point, its settings, resolved config and run metadata
(JSON), and the arrays of its ``metrics.npz`` that the analyses read:

* every array without a per-direction or per-neuron axis at each log point: the loss
  curves, the log grid, the replicated settings, the teacher coefficients ``a``, the
  divergence flags, the crossing steps;
* ``emergence_step`` ``(R, P)``: the emergence steps with the config's criterion, as
  :func:`scaling_sgd.analysis.emergence.run_emergence_times` gives them from the whole run;
* the wide observables ``(R, T, P)`` or ``(R, T, m, P)`` (``skill``, ``overlap``, ...) only
  at their first and last log points, as ``<name>@first`` and ``<name>@last``, and only
  when those are at most :data:`SLICE_CAP` numbers (the random initial cosines do not
  compress); whole when the experiment names them in its ``[experiment] record_whole``
  list and they are at most :data:`CAP` numbers.

Nothing here is rounded: a record gives the analyses the very numbers the run gave them.
Each point is stored under its config hash; reading a record whose hashes differ from the
experiment's plan is refused (the config changed since the record was made).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from scaling_sgd._src.files import atomic_write_bytes, json_default

__all__ = ["CAP", "SLICE_CAP", "RecordError", "compact", "path", "points", "read", "write"]

#: the most numbers one stored array may hold
CAP = 2**15
#: ... and one first or last log point of a wide observable
SLICE_CAP = 2**13
_WIDE = ("direction", "neuron")


class RecordError(ValueError):
    """A record that is missing or does not belong to the experiment's plan: one line."""


def path(data_dir: Path, tag: str, part: str | None = None) -> Path:
    """``<data_dir>/<tag>[.<part>].npz``."""
    return Path(data_dir) / (f"{tag}.{part}.npz" if part else f"{tag}.npz")


def compact(metrics: dict, dims: dict[str, tuple[str, ...]], times: np.ndarray, keep_whole=()) -> dict[str, np.ndarray]:
    """The arrays of one run's ``metrics`` that go into its record.

    Args:
        metrics: the run's arrays.  dims: name -> dimension names (the metrics schema;
            an array not in it is kept when it is small).  times: ``(R, P)`` its emergence
            steps.  keep_whole: wide observables the experiment reads at every log point.
    """
    out = {"emergence_step": np.asarray(times, np.float64)}
    for k, v in metrics.items():
        v = np.asarray(v)
        d = dims.get(k, ())
        wide = "step" in d and any(w in d for w in _WIDE)
        if not wide:
            if v.size <= CAP:
                out[k] = v
            continue
        if k in keep_whole and v.size <= CAP:
            out[k] = v
            continue
        axis = d.index("step")
        for tag, i in (("first", 0), ("last", -1)):
            s = np.take(v, i, axis=axis)
            if s.size <= SLICE_CAP:
                out[f"{k}@{tag}"] = s
    return out


def write(file: Path, points: list[tuple[str, dict, dict, dict, dict]]) -> Path:
    """Write the record of ``points`` (``(config hash, settings, config, meta, arrays)`` in
    grid order) to ``file``, whole or not at all."""
    arrays = {}
    head = []
    for i, (h, settings, cfg, meta, arr) in enumerate(points):
        head.append({"hash": h, "settings": settings, "config": cfg, "meta": meta, "arrays": sorted(arr)})
        arrays.update({f"{i}/{k}": np.asarray(v) for k, v in arr.items()})
    arrays["head"] = np.array(json.dumps(head, sort_keys=True, default=json_default))
    buf = io.BytesIO()
    # np.savez_compressed's layout, with a fixed member date: the same record is the same bytes
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            one = io.BytesIO()
            np.lib.format.write_array(one, v, allow_pickle=False)
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, one.getvalue())
    atomic_write_bytes(file, buf.getvalue())
    return Path(file)


def points(file: Path) -> dict[str, tuple[dict, dict, dict, dict]]:
    """Every point the record ``file`` holds, ``{config hash: (settings, config, meta, arrays)}``,
    whatever plan it was made for (``{}`` when there is no record): a record written while a
    sweep was unfinished holds the points done by then."""
    file = Path(file)
    if not file.is_file():
        return {}
    with np.load(file, allow_pickle=False) as z:
        head = json.loads(str(z["head"]))
        return {
            p["hash"]: (p["settings"], p["config"], p["meta"], {k: z[f"{i}/{k}"] for k in p["arrays"]})
            for i, p in enumerate(head)
        }


def read(file: Path, hashes: list[str]) -> list[tuple[dict, dict, dict, dict]]:
    """The points of the record ``file`` as ``(settings, config, meta, arrays)``, checked to be
    those of ``hashes`` (the experiment's plan, grid order)."""
    file = Path(file)
    rerun = f"python -m sims.reproduce {file.stem.split('-')[0].split('.')[0]}"
    if not file.is_file():
        raise RecordError(f"record: no {file.name}; run its experiment to make it: {rerun}")
    held = points(file)
    got = list(held)
    if set(got) < set(hashes):
        raise RecordError(
            f"record: {file.name} holds {len(got)} of the {len(hashes)} points the experiment plans "
            f"(its run is unfinished); finish it: {rerun}"
        )
    if got != list(hashes):
        raise RecordError(f"record: {file.name} holds the points {got}, the experiment plans {list(hashes)}; rerun it")
    return list(held.values())
