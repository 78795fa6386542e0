"""File-system helpers: atomic and durable writes, JSON, checksums, writability probes,
atomic exchange of two paths, and sizes for people.  They know nothing of runs; the run
format (:mod:`.results`) and the sweep index build on them."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import OutputError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "check_writable",
    "exchange",
    "file_sha256",
    "fmt_bytes",
    "fsync_dir",
    "json_bytes",
    "json_default",
    "nearest_existing",
    "pid_alive",
    "unlink_quietly",
    "write_file",
]


def umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and flush it to disk (the one low-level writer)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would get
        # (shared sweep directories on a cluster must stay readable by the group).
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n").encode()


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | Path, key: str = "--out") -> None:
    """``path`` is a folder, or can be created as one, in which files can be written.

    Raises:
        OutputError: ``path`` is a file, lies under a file, or its (nearest existing)
            folder cannot be written (permissions, a read-only mount).
    """
    out = Path(path)
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(key, f"{str(out)!r} is a file; accepted: a folder path (new, empty, or a run folder)")
    base = out if out.is_dir() else nearest_existing(out.parent)
    if not base.is_dir():
        raise OutputError(key, f"cannot create {str(out)!r}: {str(base)!r} is a file; accepted: a path under a folder")
    try:  # the only reliable test of writability (permissions, read-only mounts, quotas)
        probe = tempfile.mkdtemp(prefix=".scaling-sgd-probe-", dir=base)
        os.rmdir(probe)
    except OSError as e:
        raise OutputError(key, f"cannot write in {str(base)!r} ({e.strerror or e}); accepted: a writable folder") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where
    the system or the file system has no such call."""
    if not hasattr(exchange, "fn"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            exchange.fn = fn
        except (OSError, AttributeError):
            exchange.fn = None
    if exchange.fn is None:
        return False
    at_fdcwd = -100
    rc = exchange.fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fmt_bytes(n: float) -> str:
    """``n`` bytes for a person: ``512 B``, ``3.4 MB``, ``16.0 GB``, ``2.1e+06 PB``."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.1f} {unit}" if n < 1000 else f"{n:.1e} {unit}"
        n /= 1000.0
    return f"{n:.1e} PB"  # pragma: no cover
