"""The benchmark report, and the blocked ``sgd`` engine against its per-step reference."""

import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scaling_sgd as ss
from scaling_sgd._src import bench
from scaling_sgd._src.engines import ENGINES, sgd
from scaling_sgd._src.rng import split_keys

from helpers import assert_close, sgd_reference, small_config, spec_parts

TINY = {
    "repeats": 1,
    "b1_steps": 64,
    "b32_steps": 4,
    "numpy_steps": 4,
    "big_d": 2048,
    "big_sgd_steps": 32,
    "reduced_steps": 64,
    "flow_d": 1000,
    "flow_Pm": 4,
}


def _ratios(obj):
    """Every value under a 'ratios' key, anywhere in the report."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "ratios":
                yield from v.values()
            else:
                yield from _ratios(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _ratios(v)


@pytest.mark.slow
def test_bench_json_is_well_formed(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(SimpleNamespace(quick=True, json=str(path), sizes=TINY)) == 0
    rep = json.loads(path.read_text())
    for key in ("machine", "backend", "jax_version", "precision", "device", "cases", "targets"):
        assert key in rep, key
    assert rep["precision"] == "float32" and rep["jax_version"] == jax.__version__
    names = [c["name"] for c in rep["cases"]]
    assert any(n.startswith("sgd d=1024 m=P=32 B=1 R=32") for n in names)
    assert any(n.startswith("sgd d=1024 m=P=32 B=32 R=32") for n in names)
    head = rep["cases"][0]
    assert set(head["ratios"]) >= {"to_gaussian_bound", "to_matmul_bound", "vs_numpy"}
    ratios = list(_ratios(rep))
    assert len(ratios) >= 6
    assert all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in ratios), ratios
    for c in rep["cases"]:
        if "samples_per_s" in c:
            assert math.isfinite(c["samples_per_s"]) and c["samples_per_s"] > 0
            assert c["compile_s"] >= 0 and c["memory"]["max_rss_mb"] > 0
    # engines missing from this build are reported as skipped, not silently dropped
    engines = {c.get("engine") for c in rep["cases"]} | {s["case"] for s in rep["skipped"]}
    assert {"sgd", "reduced", "flow"} <= engines
    # cold compile seconds of every registered engine
    assert set(rep["compile_s"]) == set(ENGINES) and all(v > 0 for v in rep["compile_s"].values())
    out = capsys.readouterr().out
    assert "samples/s" in out and "x gauss" in out and "compile, cold" in out


def test_numpy_baseline_is_the_same_math():
    """One step of the NumPy baseline equals the engine's per-step update on the same W, x."""
    cfg = small_config(**{"train.dtype": "float32", "train.batch_size": 2, "train.lr": [0.05, 0.02], "train.seed": [0]})
    static, reps, _ = spec_parts(cfg)
    g = np.random.default_rng(0)  # the baseline's stream: W, then x of step 0
    W0 = g.standard_normal((2, 4, 16), dtype=np.float32) * np.float32(reps.init_scale / 4.0)
    x = g.standard_normal((2, 2, 16), dtype=np.float32)
    W_np = bench.numpy_sgd(static, reps, 1, seed=0)
    for r in range(2):
        st = sgd.init(static, 0, 0.1)._replace(W=jnp.asarray(W0[r]))
        lr, a = jnp.float32(reps.lr[r]), jnp.asarray(reps.a[r], jnp.float32)
        new = sgd._step_x(static, st, jnp.asarray(x[r]), 0, lr, a, 1, 1e8)
        assert not np.allclose(new.W, W0[r], rtol=1e-4)  # the step does something
        assert_close(W_np[r], new.W, dtype=np.float32, rtol=1e-4, atol=1e-6)


def test_blocked_run_equals_per_step_loop_across_blocks_and_divergence():
    """float64, B = 3 (U = 10 steps per block), log points inside blocks, a replica that
    diverges inside a block and one that diverges at once: the blocked engine equals
    the per-step reference at every log point, divergence steps included."""
    B = 3
    assert sgd.block_size(B) == 10
    cfg = small_config(
        **{
            "train.dtype": "float64",
            "train.batch_size": B,
            "train.steps": 47,
            "log.points": 9,
            "train.lr": [0.01, 0.07, 8.0],
            "train.seed": [3],
            "train.diverge_bound": 1e3,
            "student.init_scale": 0.5,
        }
    )
    static, reps, log_steps = spec_parts(cfg)
    assert np.any(log_steps % 10 != 0)  # some log points fall inside blocks
    m = ss.run(cfg).metrics
    ref = sgd_reference(static, reps, log_steps, 1e3)
    loss, norm2, div, div_step = ref["loss"], ref["norm2"], ref["diverged"], ref["diverged_step"]
    step, idx = np.unique(log_steps, return_index=True)
    assert_close(m["loss"], loss[:, idx], rtol=1e-11)
    assert_close(m["norm2"], norm2[:, idx], rtol=1e-11)
    assert list(m["diverged"]) == [False, True, True] == list(div)
    np.testing.assert_array_equal(m["diverged_step"], div_step)
    assert 2 < div_step[1] < 47 and div_step[1] % 10 != 0  # inside a block, after some log points


@pytest.mark.slow
def test_log_grid_does_not_change_the_trajectory_bitwise():
    """float32: blocks are keyed by absolute step and always advanced by one call site."""
    base = {"train.steps": 200, "train.seed": [0, 1], "train.batch_size": 2}
    a = ss.run(small_config(**base, **{"log.points": 3})).metrics
    b = ss.run(small_config(**base, **{"log.points": 40})).metrics
    np.testing.assert_array_equal(a["loss"][:, -1], b["loss"][:, -1])
    np.testing.assert_array_equal(a["norm2"][:, -1], b["norm2"][:, -1])
    shared = np.intersect1d(a["step"], b["step"])
    ia, ib = np.searchsorted(a["step"], shared), np.searchsorted(b["step"], shared)
    np.testing.assert_array_equal(a["loss"][:, ia], b["loss"][:, ib])


def test_batches_are_fresh_standard_gaussians_across_block_boundaries():
    cfg = small_config(**{"train.batch_size": 4, "data.d": 64, "train.dtype": "float64"})
    static, _, _ = spec_parts(cfg)
    U = sgd.block_size(4)
    key = split_keys(5).data
    xs = np.stack([np.asarray(sgd.draw_batch(static, key, t)) for t in range(3 * U)])  # (3U, B, d)
    assert xs.shape == (3 * U, 4, 64)
    np.testing.assert_array_equal(xs[U + 1], np.asarray(sgd.draw_block(static, key, 1))[1])
    flat = xs.reshape(-1)
    n = flat.size
    assert abs(flat.mean()) < 5 / math.sqrt(n)
    assert abs(flat.var() - 1) < 5 * math.sqrt(2 / n)
    # no sample is reused: every (step, b) row is distinct, also across block boundaries
    rows = xs.reshape(-1, 64)
    assert len({r.tobytes() for r in rows}) == rows.shape[0]
    # consecutive steps are uncorrelated (incl. the boundary U-1 -> U)
    c = np.corrcoef(xs[:-1].reshape(-1), xs[1:].reshape(-1))[0, 1]
    assert abs(c) < 5 / math.sqrt(xs[1:].size)


def test_gaussian_bound_transforms_every_number():
    """The timed draw loops return the sum of every normal they draw (so XLA cannot
    transform only a slice of each chunk, which once overstated the bound), for both
    threefry counter layouts."""
    key = jax.random.PRNGKey(7)
    n, loops = 512, 3
    for part in (True, False):
        with jax.threefry_partitionable(part):
            xs = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), (n,), jnp.float32)) for i in range(loops)])
        acc = np.asarray(bench._draw_loop(n, loops, "accumulated", part)(key))
        tot = float(bench._draw_loop(n, loops, "summed", part)(key))
        assert_close(acc, xs.sum(axis=0), rtol=1e-6, atol=1e-6)
        assert_close(tot, xs.sum(), rtol=1e-5, atol=1e-4)
    # the two layouts are different streams: the comparison above is not vacuous
    assert not np.array_equal(bench._draw_loop(n, 1, "accumulated", True)(key), bench._draw_loop(n, 1, "accumulated", False)(key))


def test_input_stream_does_not_depend_on_the_global_partitionable_flag():
    """A seed gives the same inputs whatever the process-wide threefry layout is."""
    static, _, _ = spec_parts(small_config(**{"train.batch_size": 2, "data.d": 64}))
    key = split_keys(3).data
    draws = []
    for part in (True, False):
        with jax.threefry_partitionable(part):
            draws.append(np.asarray(sgd.draw_block(static, key, 4)))
    np.testing.assert_array_equal(draws[0], draws[1])
    with jax.threefry_partitionable(True):
        default = np.asarray(jax.random.normal(jax.random.fold_in(key, 4), draws[0].shape, draws[0].dtype))
    assert not np.array_equal(default, draws[0])


def test_products_loop_is_the_engine_block_products():
    """The timed products loop computes X W^T, X X^T and W <- c W - G^T X block after
    block on alternating inputs (nothing loop-invariant that XLA could hoist)."""
    R, K, d, m, loops = 2, 3, 5, 2, 3
    rng = np.random.default_rng(0)
    X1, X2 = rng.standard_normal((2, R, K, d)).astype(np.float32)
    W = rng.standard_normal((R, m, d)).astype(np.float32)
    G = rng.standard_normal((R, K, m)).astype(np.float32)
    got = np.asarray(bench._products_loop(R, K, d, m, loops)(X1, X2, W, G))
    A, Bx, w, g = X1.astype(np.float64), X2.astype(np.float64), W.astype(np.float64), G.astype(np.float64)
    for _ in range(loops):
        XW = A @ w.transpose(0, 2, 1)
        XX = A @ A.transpose(0, 2, 1)
        w = 0.999 * w - 1e-3 * g.transpose(0, 2, 1) @ A
        g = 0.5 * g + 1e-3 * (XW + XX.mean(axis=-1, keepdims=True))
        A, Bx = Bx, A
    assert_close(got, w, rtol=1e-5, atol=1e-6)
    assert bench.products_time(R, K, d, m, repeats=1, loops=2) > 0
