"""The per-seed records of the experiments and the refit from them (sims/record.py,
sims/refit.py): what a record keeps, that it gives back the very numbers, and that a refit
redoes an experiment's rows exactly and notices when the record no longer gives them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from scaling_sgd._src.schema import schema
from sims import load, make_validation, output, record, refit, reproduce

DIMS = schema("flow")


def _metrics(R=3, T=5, P=4, m=6, seed=0):
    g = np.random.default_rng(seed)
    return {
        "step": np.arange(T, dtype=np.int64),
        "loss": g.random((R, T)),
        "skill": g.random((R, T, P)),
        "overlap": g.random((R, T, m, P)),
        "a": g.random((R, P)),
        "beta": np.ones(R),
        "diverged": np.zeros(R, bool),
    }


def test_a_record_keeps_narrow_arrays_whole_and_wide_ones_at_their_ends(monkeypatch):
    mets = _metrics()
    times = np.array([[1.0, np.inf, 3.0, 4.0]] * 3)
    out = record.compact(mets, DIMS, times)
    for k in ("step", "loss", "a", "beta", "diverged"):
        assert out[k] is mets[k] or np.array_equal(out[k], mets[k])
    assert "skill" not in out and "overlap" not in out
    np.testing.assert_array_equal(out["skill@first"], mets["skill"][:, 0])
    np.testing.assert_array_equal(out["skill@last"], mets["skill"][:, -1])
    np.testing.assert_array_equal(out["overlap@last"], mets["overlap"][:, -1])
    np.testing.assert_array_equal(out["emergence_step"], times)
    # whole when the experiment asks for it; nothing over the cap, whole or sliced
    assert np.array_equal(record.compact(mets, DIMS, times, keep_whole=("skill",))["skill"], mets["skill"])
    monkeypatch.setattr(record, "CAP", 3 * 4)  # R P: whole skill does not fit
    monkeypatch.setattr(record, "SLICE_CAP", 3 * 4)  # one slice of skill fits, one of overlap does not
    small = record.compact(mets, DIMS, times, keep_whole=("skill",))
    assert "skill" not in small and "skill@last" in small and not any(k.startswith("overlap") for k in small)


def test_a_record_gives_back_the_same_numbers_and_the_same_bytes(tmp_path):
    mets = _metrics()
    times = np.where(np.random.default_rng(1).random((3, 4)) < 0.3, np.inf, 7.0)
    arr = record.compact(mets, DIMS, times)
    pts = [("h0", {"data.d": 64}, {"teacher": {"P": 4}}, {"wall_time_s": 1.5}, arr)]
    f = record.write(tmp_path / "x.npz", pts)
    first = f.read_bytes()
    record.write(f, pts)
    assert f.read_bytes() == first  # no time stamp inside: a rerun leaves the file as it was
    ((settings, cfg, meta, got),) = record.read(f, ["h0"])
    assert settings == {"data.d": 64} and cfg == {"teacher": {"P": 4}} and meta == {"wall_time_s": 1.5}
    assert sorted(got) == sorted(arr)
    for k, v in arr.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    with pytest.raises(record.RecordError, match="plans"):
        record.read(f, ["another"])
    with pytest.raises(record.RecordError, match="sims.reproduce"):
        record.read(tmp_path / "none.npz", ["h0"])


def test_a_run_reads_an_observable_at_its_ends_whole_or_from_a_record():
    mets = _metrics()
    whole = load.Run({}, {}, {}, mets)
    kept = load.Run({}, {}, {}, record.compact(mets, DIMS, np.zeros((3, 4))))
    for r in (whole, kept):
        np.testing.assert_array_equal(r.first("skill"), mets["skill"][:, 0])
        np.testing.assert_array_equal(r.last("overlap"), mets["overlap"][:, -1])
    assert whole.first("norm2") is None and kept.last("norm2") is None
    np.testing.assert_array_equal(kept.times, np.zeros((3, 4)))


@pytest.fixture
def sims_in(tmp_path, monkeypatch):
    """The sims folders under ``tmp_path``, with the experiment files copied there."""
    S = tmp_path / "sims"
    S.mkdir()
    for f in load.experiment_files().values():
        shutil.copy(f, S)
    for mod, k, v in (
        (load, "REPO", tmp_path),
        (load, "SIMS", S),
        (load, "RUN_ROOT", tmp_path / "results" / "sims"),
        (load, "DATA_DIR", S / "data"),
        (output, "RESULT_DIR", S / "results"),
        (output, "FIG_DIR", S / "figures"),
    ):
        monkeypatch.setattr(mod, k, v)
    return S


@pytest.mark.slow
def test_a_refit_redoes_the_rows_and_its_check_sees_a_changed_record(sims_in, capsys):
    name = "09_loss_exponent_P256"
    reproduce.run_one(name, "quick")
    stored = output.load_json(sims_in / "results" / f"{name}-quick.json")
    new, why = refit.refit_one(name, "quick")
    assert why == "" and refit.differences(stored, new) == []
    assert new["checks"] == stored["checks"] and new["extra"] == stored["extra"]
    assert stored["records"] == new["records"] == [f"{name}-quick.npz"]
    # an experiment with no record is named, not refitted
    assert refit.refit_one("01_staircase", "quick")[0] is None
    assert refit.main(["--mode", "quick"]) == 0  # writes VALIDATION-quick.md
    report = (sims_in / "VALIDATION-quick.md").read_text()
    assert refit.main(["--mode", "quick", "--check"]) == 0
    # a record whose emergence steps moved: the check fails and names the rows, nothing is written
    f = record.path(load.DATA_DIR, f"{name}-quick")
    plan = load.load_experiment(name, "quick").plan()
    ((settings, cfg, meta, arr),) = record.read(f, [p.dir for p in plan.points])
    arr["emergence_step"] = arr["emergence_step"] ** 1.05  # every T_p slope moves
    record.write(f, [(plan.points[0].dir, settings, cfg, meta, arr)])
    capsys.readouterr()
    assert refit.main(["--mode", "quick", "--check"]) == 1
    assert "slope of T_p vs p" in capsys.readouterr().out
    assert (sims_in / "VALIDATION-quick.md").read_text() == report
    assert output.load_json(sims_in / "results" / f"{name}-quick.json") == stored


def test_the_report_says_which_experiments_a_record_can_refit(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "DATA_DIR", tmp_path)
    res = {"title": "T", "checks": [], "runs": 1, "compute_s": 1.0}
    record.write(record.path(tmp_path, "01_x"), [])
    results = {
        "01_x": res | {"records": ["01_x.npz"]},
        "02_y": res | {"records": ["01_x.npz", "02_y.npz"]},  # one of its records is missing
        "03_z": res | {"records": ["01_x.npz"]},  # fitted from another experiment's runs
        "04_w": dict(res),  # run before records existed
        "05_v": None,
    }
    text = make_validation.render(results)
    assert "2 of 4 experiments can be refitted from their stored per-seed records (`python -m sims.refit`): 01_x, 03_z." in text
    assert "Refittable: `python -m sims.refit 01_x` redoes these rows from the per-seed records `sims/data/01_x.npz`." in text
    for name in ("02_y", "04_w"):
        part = text.split(f"## {name}")[1].split("## ")[0]
        assert "Not refittable yet" in part and "Refittable:" not in part


def test_race_rows_only_recomputes_the_named_experiments_and_keeps_the_others(tmp_path, monkeypatch):
    from sims import race_rows

    def rows(name, value):
        nan = float("nan")
        return lambda mode: [
            {"experiment": name, "quantity": "q", "race": value, "fitted": nan, "lo": nan, "hi": nan, "inside": None}
        ]

    names = {k: next(n for n in load.experiment_files() if n.startswith(k + "_")) for k in race_rows.ROWS}
    monkeypatch.setattr(race_rows, "ROWS", {k: rows(names[k], 1.0) for k in race_rows.ROWS})
    out = tmp_path / "rows.json"
    assert race_rows.main(["--out", str(out)]) == 0
    monkeypatch.setattr(race_rows, "ROWS", {k: rows(names[k], 2.0) for k in race_rows.ROWS})
    assert race_rows.main(["--out", str(out), "--only", "15"]) == 0
    got = {r["experiment"]: r["race"] for r in output.load_json(out)["rows"]}
    assert got == {n: (2.0 if k == "15" else 1.0) for k, n in names.items()}
    assert [r["experiment"] for r in output.load_json(out)["rows"]] == [names[k] for k in sorted(names)]


def test_a_refit_check_ignores_last_bit_rounding_and_nothing_else():
    row = {"quantity": "q", "fitted": 0.7812345678901234, "lo": 0.76, "hi": 0.79, "agrees": False}
    old = {"checks": [row], "notes": ["n"], "extra": {"x": [1.0, float("nan"), float("inf")]}}
    near = {
        "checks": [row | {"fitted": row["fitted"] * (1 + 1e-15)}],
        "notes": ["n"],
        "extra": {"x": [1.0, float("nan"), float("inf")]},
    }
    assert refit.differences(old, near) == []
    moved = {"checks": [row | {"fitted": row["fitted"] * (1 + 1e-6)}], "notes": ["n"], "extra": old["extra"]}
    assert refit.differences(old, moved) == [f"row 'q': fitted {row['fitted']} -> {moved['checks'][0]['fitted']}"]
    assert refit.differences(old, old | {"extra": {"x": [1.0, 2.0, float("inf")]}}) == ["extra differ"]
    assert refit.differences(old, old | {"checks": [row | {"agrees": True}]}) != []
