"""The bugs planted by hand in the mutation run (tools/mutation.py; tests/MUTATION.md,
"The planted bugs")."""

from __future__ import annotations

# Bugs planted by hand (tests/MUTATION.md, "The planted bugs"), run with every sample:
# (module, exact source text, replacement, what it is).  A snippet that is not in its
# module (exactly once) is reported as stale, not silently dropped.
PLANTED = [
    (
        "model",
        " + model.K_tt(jnp.asarray(0.0, a.dtype)) * (\n        jnp.sum(a) ** 2 - jnp.sum(a * a)\n    )",
        "",
        "loss drops the teacher off-diagonal term K_tt(0) ((sum a)^2 - |a|^2)",
    ),
    ("model", '"alignment": jnp.max(M * M, axis=0)', '"alignment": jnp.max(jnp.abs(M), axis=0)', "alignment = max_i |M_ip|"),
    (
        "engines.reduced",
        "jnp.asarray((m.d - n_used)[:, None] - np.arange(B)[None, :], dt)",
        "jnp.asarray((m.d + 1 - n_used)[:, None] - np.arange(B)[None, :], dt)",
        "chi-square degrees of freedom of the step's remainder off by one",
    ),
    (
        "engines.reduced",
        "jnp.asarray(m.d - m.P - np.arange(m.m), dt)",
        "jnp.asarray(m.d - m.P - 1 - np.arange(m.m), dt)",
        "chi-square degrees of freedom of the initial Bartlett factor off by one",
    ),
    (
        "engines.reduced",
        'r = jnp.linalg.qr(res.T, mode="r")',
        'r = jnp.linalg.qr(res[:, : res.shape[0]].T, mode="r")',
        "recompression forgets the buffered new directions",
    ),
    (
        "analysis.fit",
        "idx = np.random.default_rng(seed).integers(0, R, size=(n_boot, R))\n    return central, f(y_reps[idx], 1)",
        "idx = np.random.default_rng(seed).integers(0, R, size=(n_boot, R, y_reps.shape[1]))\n"
        "    return central, f(np.take_along_axis(y_reps[None], idx, axis=1), 1)",
        "bootstrap resamples seeds independently at each point",
    ),
    (
        "config",
        'c.pop("analysis", None)',
        'c.pop("analysis", None)\n    c.pop("log", None)',
        "config hash ignores the [log] table",
    ),
    (
        "hermite",
        "dc = [j * c[j] for j in range(1, len(c))]",
        "dc = [c[j] for j in range(1, len(c))]",
        "K'(rho) without the factor j",
    ),
    (
        "engines.sgd",
        "X_after = self._draw(static, c.states, c.b + 2)",
        "X_after = self._draw(static, c.states, c.b + 1)",
        "blocked sgd reuses an input block",
    ),
    ("engines.sgd", "ok = good & ~diverged\n", "ok = good\n", "blocked sgd does not freeze a diverged replica"),
    # the RKC state machine and the other solvers' landing on output times
    (
        "engines.rkc",
        "k_new = jnp.where(acc & hits,",
        "k_new = jnp.where(hits,",
        "a rejected step that would land on an output time advances the output index",
    ),
    (
        "engines.rkc",
        "h_next = jnp.where(acc & hits, jnp.maximum(h_next, h), h_next)",
        "pass",
        "a landing step forgets the longer proposal",
    ),
    ("engines.flow_solvers", "reached = acc & hits", "reached = hits", "ros2: a rejected landing step advances the output index"),
    # the driver's chunking
    (
        "engines.driver",
        "raise Interrupted(_collect(engine, static, chunk, j, log_steps)",
        "raise Interrupted(_collect(engine, static, chunk, j + 1, log_steps)",
        "an interrupted run returns a log point it has not reached",
    ),
    (
        "engines.driver",
        "reached = engine.position(static, state, grid) >= grid.step[c.j]",
        "reached = engine.position(static, state, grid) + 1 >= grid.step[c.j]",
        "a chunk observes a log point one step before it is reached",
    ),
    # the double-word loss
    (
        "twofloat",
        "return DW(*_fast_two_sum(s, e + f))",
        "return DW(*_fast_two_sum(s, e))",
        "double-word add drops the low parts' error",
    ),
    (
        "model",
        "out = tf.add(tf.mul(out, x), tf.dw(float(c), dt))",
        "out = tf.add(tf.mul(out, x), tf.DW(jnp.asarray(float(c), dt), jnp.zeros((), dt)))",
        "double-word loss with its kernel coefficients rounded to working precision",
    ),
    # sweep repair and claims
    (
        "sweep_state",
        'if not pid_alive(info["pid"]):',
        'if pid_alive(info["pid"]):',
        "a claim of a dead process on this host is not stale",
    ),
    ("sweep_state", 'elif doc.get("partial"):', "elif False:", "the index counts an interrupted point as done"),
    # the preflight
    ("preflight", "per_dev = need / max(ndev, 1)", "per_dev = need", "memory check ignores the number of devices"),
    (
        "preflight",
        "if stored == config_hash or force:",
        "if stored == config_hash or force or stored is None:",
        "a damaged run folder is replaced without --force",
    ),
    # the schedules' clocks
    ("schedules", "return c * np.log1p(t / c)", "return np.log1p(t / c)", "inverse_time clock without the factor c"),
    (
        "schedules",
        "return 0.5 * t + T / (2.0 * math.pi) * np.sin(math.pi * np.minimum(t / T, 1.0))",
        "return 0.5 * t + T / math.pi * np.sin(math.pi * np.minimum(t / T, 1.0))",
        "cosine clock with the wrong sine amplitude",
    ),
]
