"""A full disk under a task's files: how the worker sees it and says it.

A task that fills the file system of its folder cannot say so itself: its stderr, where the error
would go, is on the same file system. When a task fails, the worker looks at that file system's
free space (``statvfs``) and, if it is full, gives the task a reason that names the device error
and the folder (:func:`no_space`), instead of a bare exit code or "no exit record".

A SQLite store on that same file system could not take that reason, nor the worker's heartbeats
(the supervisor would then fail its tasks as on a silent computer). So a worker keeps a small
reserve file beside such a store (:func:`keep_store_reserve`), which :func:`no_space` deletes when
it finds the file system full: the store then has room to record the end and the reason, and the
heartbeats go on. The reserve is made again once there is room (:func:`restore_reserves`).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

__all__ = ["FULL_BELOW", "NO_SPACE", "RESERVE", "RESERVE_BYTES", "free_bytes", "mount_point", "no_space",
           "is_no_space", "keep_store_reserve", "restore_reserves"]

log = logging.getLogger(__name__)

FULL_BELOW = 1 << 20
"""Bytes free (to an unprivileged process) under which a file system counts as full: a write that
failed with ENOSPC may leave a few blocks free that are too small for it, or reserved for root."""

NO_SPACE = "no space left on device (ENOSPC)"
"""How every disk-full reason starts."""

RESERVE = ".mlcomp-reserve"
"""The reserve file's name, in the folder of a SQLite store."""
RESERVE_BYTES = 512 * 1024
"""The reserve's size: room for the store to record a few ends and many heartbeats, and less than
:data:`FULL_BELOW`, so the file system still counts as full once it is released."""

_reserves: dict[Path, bool] = {}  # reserve file → whether it is in place (False: released)
_lock = threading.Lock()


def is_no_space(error: BaseException) -> bool:
    """Whether ``error`` is an :class:`OSError` saying the device is full (ENOSPC or EDQUOT)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path) -> int | None:
    """Bytes an unprivileged process may still write on the file system of ``path`` (an existing
    file or folder), None when it cannot be told (``path`` is gone)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def mount_point(path) -> Path:
    """The folder where the file system holding ``path`` is mounted: the highest of its parents
    on the same device (``path`` itself when it cannot be read)."""
    path = Path(os.path.realpath(path))
    try:
        device = path.stat().st_dev
    except OSError:
        return path
    while path.parent != path:
        try:
            if path.parent.stat().st_dev != device:
                break
        except OSError:
            break
        path = path.parent
    return path


def keep_store_reserve(db_url: str) -> Path | None:
    """Keeps the reserve (:data:`RESERVE_BYTES`) beside the SQLite store of ``db_url``; returns its
    path, None for another database or when it cannot be made (no room: it is tried again by
    :func:`restore_reserves`). Never raises for a file-system error."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db_url)
    except Exception:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database).absolute().parent / RESERVE
    with _lock:
        kept = _reserves[path] = _make(path)
    return path if kept else None


def restore_reserves() -> None:
    """Makes again the reserves that :func:`no_space` released, where their file system has room
    (four times their size) again. Costs nothing while none is released (called at each launch)."""
    if all(_reserves.values()):
        return
    with _lock:
        for path, kept in list(_reserves.items()):
            if not path.parent.exists():  # the store is gone (a test's folder): forgotten
                del _reserves[path]
            elif not kept:
                _reserves[path] = _make(path)


def _make(path: Path) -> bool:
    """Whether the reserve file ``path`` is in place (made now if missing and there is room)."""
    try:
        if path.exists():
            return True
        free = free_bytes(path.parent)
        if free is None or free < 4 * RESERVE_BYTES:
            return False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        return True
    except OSError as e:
        log.warning("cannot keep a reserve of %d bytes at %s: %s", RESERVE_BYTES, path, e)
        path.unlink(missing_ok=True)
        return False


def _release(device: int) -> None:
    """Deletes the reserves kept on file system ``device`` (its ``st_dev``)."""
    with _lock:
        for path, kept in _reserves.items():
            try:
                if kept and path.stat().st_dev == device:
                    path.unlink()
                    _reserves[path] = False
                    log.warning("the file system of %s is full: its reserve of %d bytes is released so that the "
                                "store there can record it", path.parent, RESERVE_BYTES)
            except OSError:
                _reserves[path] = False


def no_space(path) -> str | None:
    """The reason to give a task whose files are under ``path`` (or would be: the nearest
    existing parent is looked at) when their file system is full (less than :data:`FULL_BELOW`
    bytes free), e.g. ``"no space left on device (ENOSPC) on
    /mnt/scratch (holding /mnt/scratch/mlcomp/tasks/7/attempts/1): 0 bytes free"``; None when it
    is not full or cannot be read. Releases the reserve of a store on that file system
    (:func:`keep_store_reserve`)."""
    existing = Path(path)
    while not existing.exists() and existing.parent != existing:  # a folder the full disk kept from being made
        existing = existing.parent
    free = free_bytes(existing)
    if free is None or free >= FULL_BELOW:
        return None
    reason = f"{NO_SPACE} on {mount_point(existing)} (holding {path}): {free} bytes free"
    try:
        _release(existing.stat().st_dev)
    except OSError:
        pass
    return reason
