"""Shared by the robustness tests: the base config, its finished runs, and the
ways a run folder gets damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from scaling_sgd.cli import main

from helpers import TINY_TOML

REPO = Path(__file__).resolve().parents[1]

BASE = TINY_TOML
SWEEP = BASE + "[sweep]\nsteps = [20, 30]\n"  # one compiled shape: steps is traced


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("scaling-sgd: error: ") and "Traceback" not in err, lines
    return lines[0]


def _tree(root: Path) -> dict:
    """relative path -> (size, mtime_ns) of every file under root."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _cli(*args, env=None, **kw):
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "scaling_sgd.cli", *args], cwd=REPO, env=e, **kw)


def make_base_toml(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "base.toml"
    p.write_text(BASE)
    return p


def make_runs(base_toml, tmp_path_factory):
    """Finished runs: A (the base), B (another lr, same shapes), H (half of the replicas
    diverge), D (every replica diverges), all of one compiled shape."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, sets in {
        "A": [],
        "B": ["--set", "train.lr=2e-3"],
        "H": ["--set", "train.lr=[1e-3, 5.0]"],
        "D": ["--set", "train.lr=5.0"],
    }.items():
        assert main(["run", str(base_toml), "--out", str(root / name), *sets]) == 0
        out[name] = root / name
    return out


def _truncate(p: Path, frac: float):
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * frac)])


def _flip(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _rewrite_npz(d: Path, edit):
    with np.load(d / "metrics.npz") as z:
        m = {k: z[k] for k in z.files}
    edit(m)
    np.savez_compressed(d / "metrics.npz", **m)


def _edit_config(d: Path, edit):
    cj = json.loads((d / "config.json").read_text())
    edit(cj)
    (d / "config.json").write_text(json.dumps(cj))
