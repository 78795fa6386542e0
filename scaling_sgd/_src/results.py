"""Results I/O (SPEC section 4): ``config.json`` + ``metrics.npz``, written atomically.

A run directory is *complete* when ``config.json`` exists: it is written last, after
``metrics.npz``, each through a temporary file and ``os.replace``, so an interrupted run
never leaves a directory that reads as complete.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_json", "write_run", "read_run", "is_run_dir", "environment"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would get
        # (shared sweep directories on a cluster must stay readable by the group).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def environment() -> dict:
    """Versions and device of this process (recorded in every result)."""
    import jax
    import jaxlib
    import optax

    from .engines.sgd import INPUT_STREAM

    try:
        from importlib.metadata import version

        ver = version("scaling-sgd")
    except Exception:  # pragma: no cover - running from a source tree
        ver = "unknown"
    dev = jax.devices()[0]
    return {
        "scaling_sgd": ver,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "x64": bool(jax.config.jax_enable_x64),
        "prng": str(jax.config.jax_default_prng_impl),
        "sgd_input_stream": INPUT_STREAM,
    }


def write_run(out_dir: str | Path, config: dict, metrics: dict, meta: dict) -> Path:
    """Write ``metrics.npz`` then ``config.json`` (the completeness marker) into ``out_dir``.

    Args:
        config: resolved config.  metrics: name -> array.  meta: extra fields for
            ``config.json`` (hash, versions, wall time, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in metrics.items()})
    atomic_write_bytes(out_dir / "metrics.npz", buf.getvalue())
    atomic_write_json(out_dir / "config.json", {"config": config, **meta})
    return out_dir


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and (p / "metrics.npz").is_file()


def read_run(path: str | Path) -> tuple[dict, dict]:
    """Return ``(config_json, metrics)`` of a run directory.

    ``config_json`` is the whole ``config.json`` object (the resolved config is under
    ``"config"``); ``metrics`` maps names to numpy arrays.
    """
    p = Path(path)
    if not is_run_dir(p):
        raise FileNotFoundError(f"{p} is not a results directory (needs config.json and metrics.npz)")
    with (p / "config.json").open() as f:
        cfg = json.load(f)
    with np.load(p / "metrics.npz") as z:
        metrics = {k: z[k] for k in z.files}
    return cfg, metrics
