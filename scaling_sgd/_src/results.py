"""Results I/O (docs/model.md §4): a run folder of ``config.json`` + ``metrics.npz``.

**Atomic as a folder.**  :func:`write_run` writes both files into a temporary folder
beside the run folder (inside a hidden ``.scaling-sgd-tmp``, so that no glob such as
``points/*/config.json`` sees it), flushes them to disk, and renames the folder into
place.  A run folder therefore either holds a complete run or does not exist: a kill
(``SIGKILL``, a Slurm ``SIGTERM``, Ctrl-C, a power cut) or a full disk at any instant
never leaves new metrics beside an old ``config.json``, and a rerun never leaves the
previous run's analysis files (``summary.json``, figures) beside new metrics.  An existing
folder is replaced by an atomic exchange where the system has one (Linux ``renameat2``),
else by two renames (a kill between them leaves no run folder; the previous one is then
still in ``.scaling-sgd-tmp``).  Temporary folders of writers that died are removed by
the next write beside them.

**Checksummed.**  ``config.json`` records the SHA-256 and size of ``metrics.npz``;
:func:`read_run` verifies them, so a truncated, corrupted or swapped ``metrics.npz`` is
refused with one line (:class:`ResultsError`) instead of being read as a result.

**The output-safety rule** (:func:`.preflight.check_target`, before any compute): a target
that holds another config's results is refused unless ``force``; a rerun of the same
config replaces the whole folder; a folder holding anything that is not a run's file
(a user's own files) is never replaced, ``force`` or not.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
import time
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import files
from .errors import OutputError, ResultsError
from .schema import schema, shape

__all__ = [
    "write_run",
    "read_run",
    "read_config_json",
    "check_run",
    "foreign_entries",
    "stored_hash",
    "is_run_dir",
    "is_run_file",
    "run_state",
    "metrics_bytes",
]

# Files a run folder may hold: the run itself, the analysis written beside it, a failed
# sweep point's record, figures.  Only folders holding nothing else are ever replaced.
RUN_FILES = ("config.json", "metrics.npz")
ANALYSIS_FILES = ("emergence.json", "summary.json", "error.json")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
# A temporary folder of a writer that died is removed once its process is gone (same
# host) or after this long (another host sharing the file system).
STALE_TMP_S = 24 * 3600.0
# The hidden folder (beside the run folders) that holds runs being written.
TMP_DIR = ".scaling-sgd-tmp"
# The format of config.json this version writes and reads.
FORMAT = 1
_HOST = socket.gethostname()


# -- files ------------------------------------------------------------------------------
def metrics_bytes(metrics: dict) -> bytes:
    """The ``metrics.npz`` file of ``metrics`` (compressed), as bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in metrics.items()})
    return buf.getvalue()


# -- the output-safety rule -----------------------------------------------------------------
def is_run_file(name: str) -> bool:
    """Whether a file name belongs in a run folder (its results, analysis, figures, or a
    temporary file of an interrupted writer)."""
    if name in RUN_FILES or name in ANALYSIS_FILES:
        return True
    if name.startswith(".") and name.endswith(".tmp"):
        return True
    return name.endswith(FIGURE_SUFFIXES)


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that are not a run's files (sub-folders included)."""
    out = []
    for e in os.scandir(folder):
        if not (e.is_file(follow_symlinks=False) and is_run_file(e.name)):
            out.append(e.name)
    return sorted(out)


def stored_hash(folder: Path) -> str | None:
    """The config hash in ``folder/config.json``, or ``None`` if it has none readable."""
    try:
        cj = json.loads((folder / "config.json").read_bytes().decode("utf-8"))
        h = cj.get("hash") if isinstance(cj, dict) else None
        return h if isinstance(h, str) else None
    except (OSError, ValueError):
        return None


# -- writing a run folder ---------------------------------------------------------------------
def _tmp_root(out: Path) -> Path:
    """Where the temporary folders of runs written into ``out.parent`` live: a hidden
    folder beside them, so that no glob such as ``points/*/config.json`` ever matches a
    run that is still being written."""
    return out.parent / TMP_DIR


def _tmp_sibling(out: Path, tag: str) -> Path:
    return _tmp_root(out) / f"{out.name}~{tag}~{_HOST}~{os.getpid()}~{uuid.uuid4().hex[:8]}"


def _remove_stale_siblings(out: Path) -> None:
    """Remove the temporary folders of ``out`` left by writers that died."""
    try:
        entries = list(os.scandir(_tmp_root(out)))
    except OSError:
        return
    now = time.time()
    for e in entries:
        parts = e.name.rsplit("~", 4)
        if len(parts) != 5 or parts[0] != out.name:
            continue
        try:
            host, pid = parts[2], int(parts[3])
            age = now - e.stat(follow_symlinks=False).st_mtime
        except (ValueError, OSError):
            continue
        dead = host == _HOST and pid != os.getpid() and not files.pid_alive(pid)
        if dead or age > STALE_TMP_S:
            shutil.rmtree(e.path, ignore_errors=True) if e.is_dir(follow_symlinks=False) else files.unlink_quietly(e.path)


def _place(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out`` (replacing a run folder there)."""
    if not os.path.lexists(out):
        try:
            os.rename(tmp, out)
            return
        except OSError as e:  # created meanwhile by another writer: replace it below
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if not out.is_dir():
        raise OutputError("--out", f"{str(out)!r} became a file during the run; results kept in {str(tmp)!r}")
    foreign = foreign_entries(out)
    if foreign:  # the folder changed during the run: keep everything, say where the results are
        keep = out.parent / f"{out.name}.new-{uuid.uuid4().hex[:6]}"
        os.rename(tmp, keep)
        raise OutputError(
            "--out", f"{str(out)!r} gained other files ({foreign[0]!r}) during the run; results written to {str(keep)!r}"
        )
    if files.exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old run
        return
    old = _tmp_sibling(out, "old")
    os.rename(out, old)
    os.rename(tmp, out)  # a kill between the two renames leaves no run folder, never a mixed one
    shutil.rmtree(old, ignore_errors=True)


def write_run(out_dir: str | Path, config: dict, metrics: dict, meta: dict) -> Path:
    """Write a run folder atomically: ``metrics.npz`` and ``config.json`` in a temporary
    folder, then renamed into place (replacing a run folder there, see module docstring).

    Args:
        out_dir: the run folder.  config: resolved config.  metrics: name -> array.
        meta: extra fields for ``config.json`` (hash, versions, wall time, ...); the
            checksum ``metrics_sha256`` and size ``metrics_bytes`` are added here.
    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    Raises:
        OutputError: the folder cannot be written (full disk, read-only, ...); nothing
            at ``out_dir`` was changed.
    """
    out = Path(out_dir)
    data = metrics_bytes(metrics)
    doc = {"config": config, **meta, "metrics_sha256": hashlib.sha256(data).hexdigest(), "metrics_bytes": len(data)}
    tmp = None
    try:
        _tmp_root(out).mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(out)
        tmp = _tmp_sibling(out, "new")
        os.mkdir(tmp, 0o777)
        files.write_file(tmp / "metrics.npz", data)
        files.write_file(tmp / "config.json", files.json_bytes(doc))  # last: a folder with it is complete
        files.fsync_dir(tmp)
        _place(tmp, out)
        files.fsync_dir(out.parent)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        need = f" (the run needs ~{files.fmt_bytes(len(data) + 4096)})" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OutputError("--out", f"cannot write {str(out)!r}: {e.strerror or e}{need}; nothing there was changed") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# -- reading a run folder ---------------------------------------------------------------------
def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` has a run's two files (not whether they are sound: :func:`read_run`)."""
    p = Path(path)
    return (p / "config.json").is_file() and (p / "metrics.npz").is_file()


def _bad(path: Path, what: str) -> ResultsError:
    return ResultsError(str(path), f"{what}; the run is damaged or incomplete: rerun it")


def read_config_json(path: str | Path) -> dict:
    """The ``config.json`` object of a run folder, checked to be a run's (raises :class:`ResultsError`)."""
    p = Path(path)
    f = p / "config.json"
    if not p.is_dir():
        what = "not a folder" if os.path.lexists(p) else "no such folder"
        raise ResultsError(str(p), f"{what}; accepted: a run folder (config.json + metrics.npz)")
    if not f.is_file():
        raise _bad(p, "config.json is missing")
    try:
        cj = json.loads(f.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _bad(p, f"config.json is unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(cj, dict):
        raise _bad(p, "config.json is not a JSON object")
    if "format" in cj and cj["format"] != FORMAT:
        raise ResultsError(
            str(p), f"config.json has format {str(cj['format'])[:20]}; accepted: format {FORMAT} (another version wrote it)"
        )
    cfg = cj.get("config", cj)
    _check_config_shape(p, cfg)
    return cj


def _check_config_shape(p: Path, cfg) -> None:
    """The config keys the analysis relies on are there with sensible types."""
    if not isinstance(cfg, dict):
        raise _bad(p, "config.json has no 'config' object")
    for table, key in (("teacher", "P"), ("student", "m"), ("data", "d")):
        v = cfg.get(table, {}).get(key) if isinstance(cfg.get(table), dict) else None
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise _bad(p, f"config.json has no valid {table}.{key} (got {v!r})")
    if not isinstance(cfg.get("train"), dict) or "activation" not in cfg["teacher"]:
        raise _bad(p, "config.json lacks the train table or teacher.activation")


def check_run(path, cj: dict, metrics: dict) -> None:
    """Shapes and types of ``metrics`` against the config and the metrics schema
    (:func:`.schema.schema`; raises :class:`ResultsError`).

    ``step`` ``(T,)`` increasing from 0; ``loss`` ``(R, T)``; every other array of the schema
    that is present has the shape its dimensions give; every array is numeric.
    """
    p = Path(path)
    cfg = cj.get("config", cj)
    P, m = cfg["teacher"]["P"], cfg["student"]["m"]
    for k in ("step", "loss", "skill", "alignment"):
        if k not in metrics:
            raise _bad(p, f"metrics.npz has no {k!r} array")
    step = metrics["step"]
    if step.ndim != 1 or step.size < 1 or step.dtype.kind not in "iu" or step[0] != 0 or np.any(np.diff(step) <= 0):
        raise _bad(p, "metrics.npz 'step' is not an increasing integer grid from 0")
    T = step.size
    loss = metrics["loss"]
    if loss.ndim != 2 or loss.shape[1] != T or loss.shape[0] < 1:
        raise _bad(p, f"metrics.npz 'loss' has shape {loss.shape}; expected (R, {T})")
    sizes = {"replica": loss.shape[0], "step": T, "direction": P, "neuron": m}
    engine = cfg["train"].get("engine")
    for k, dims in schema(engine if isinstance(engine, str) else None).items():
        want = shape(dims, sizes)
        if k in metrics and metrics[k].shape != want:
            raise _bad(p, f"metrics.npz {k!r} has shape {metrics[k].shape}; expected {want} (P = {P}, m = {m} in config.json)")
    for k, v in metrics.items():
        if v.dtype.kind not in "biuf":
            raise _bad(p, f"metrics.npz {k!r} is not numeric")


def _verify_checksum(p: Path, cj: dict) -> None:
    """``p/metrics.npz`` has the size and SHA-256 recorded in ``cj`` (no-op when ``cj``
    records no checksum)."""
    if "metrics_sha256" not in cj:
        return
    f = p / "metrics.npz"
    try:
        size_ok = os.path.getsize(f) == cj.get("metrics_bytes", os.path.getsize(f))
        ok = size_ok and files.file_sha256(f) == cj["metrics_sha256"]
    except OSError as e:
        raise _bad(p, f"metrics.npz is unreadable ({e.strerror or e})") from None
    if not ok:
        raise _bad(p, "metrics.npz does not match the checksum in config.json (truncated, corrupted or from another run)")


def read_run(path: str | Path, verify: bool = True) -> tuple[dict, dict]:
    """Return ``(config_json, metrics)`` of a run folder, checked.

    ``config_json`` is the whole ``config.json`` object (the resolved config is under
    ``"config"``); ``metrics`` maps names to numpy arrays.  With ``verify``, the SHA-256
    of ``metrics.npz`` is compared with the one in ``config.json`` (a ``config.json``
    without ``metrics_sha256`` is read without the check).

    Raises:
        ResultsError: one line naming the folder and what is wrong with it.
    """
    p = Path(path)
    cj = read_config_json(p)
    f = p / "metrics.npz"
    if not f.is_file():
        raise _bad(p, "metrics.npz is missing")
    if verify:
        _verify_checksum(p, cj)
    try:
        with np.load(f, allow_pickle=False) as z:
            metrics = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise _bad(p, f"metrics.npz is unreadable ({type(e).__name__}: {str(e)[:80]})") from None
    check_run(p, cj, metrics)
    return cj, metrics


def run_state(path: str | Path, expect_hash: str | None = None, verify: bool = True) -> tuple[str, str]:
    """State of a run folder: ``("done", "")``, ``("absent", "")``, ``("partial", why)`` or
    ``("damaged", why)``.

    ``done`` needs a sound ``config.json`` whose ``hash`` is ``expect_hash`` (when given),
    not marked ``partial``, and (with ``verify``) a ``metrics.npz`` matching its checksum
    (results without one are loaded and their shapes checked).  Cheap without ``verify``
    (only ``config.json`` is read).
    """
    p = Path(path)
    if not os.path.lexists(p) or (p.is_dir() and not (p / "config.json").exists() and not (p / "metrics.npz").exists()):
        return "absent", ""
    try:
        cj = read_config_json(p)
        if not (p / "metrics.npz").is_file():
            raise _bad(p, "metrics.npz is missing")
        if verify and "metrics_sha256" in cj:
            _verify_checksum(p, cj)  # the bytes written, which were sound: no need to decompress them
        elif verify:
            read_run(p, verify=False)  # no recorded checksum: load and check the shapes
    except ResultsError as e:
        return "damaged", str(e).removeprefix(f"{e.key}: ").split(";")[0]
    if expect_hash is not None and cj.get("hash") != expect_hash:
        return "damaged", f"config.json is another config's (hash {cj.get('hash')}, expected {expect_hash})"
    if cj.get("partial"):
        return "partial", f"interrupted at step {cj.get('last_step', '?')}"
    return "done", ""
