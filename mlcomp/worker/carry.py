"""Full checkpoints carried between computers through the store, for tasks spread over several
(:mod:`mlcomp.gang`), whose computers share no filesystem.

Rank 0's :class:`~mlcomp.worker.report.Reporter` (opened with ``carry=True``) stores the content of
every full checkpoint it reports (``*_full.pth``: ``last_full.pth``, ``best_full.pth``) in
``snapshot_blob``, content-addressed by SHA-256 like code snapshots, and names it in the
checkpoint row's ``sha256``. Before a later attempt's ranks start on a computer, the worker writes
there the latest stored content of each (:func:`fetch`), so every rank resumes from the same
bytes wherever the attempt was placed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import Checkpoint, SnapshotBlob

__all__ = ["is_carried", "blob", "fetch"]

SUFFIX = "_full.pth"


def is_carried(path: str) -> bool:
    """Whether the checkpoint at ``path`` (relative to the task's folder) is a full one, which
    resume needs and the store carries."""
    return PurePosixPath(path).name.endswith(SUFFIX)


def blob(content: bytes) -> dict:
    """The ``snapshot_blob`` row of ``content``: ``sha256`` (hex), ``size`` (bytes), ``content``."""
    return {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content), "content": content}


def fetch(session: Session, task_id: int, folder: Path) -> list[str]:
    """Writes under ``folder`` (the task's folder on this computer) the latest stored content of
    each full checkpoint of task ``task_id`` whose local copy differs or is missing (through a
    temporary file and a rename); returns the paths written, relative to ``folder``."""
    latest = {}
    rows = session.execute(select(Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.task_id == task_id, Checkpoint.sha256.is_not(None)).order_by(Checkpoint.id))
    for path, sha256 in rows:
        latest[path] = sha256  # the last row of a path wins
    written = []
    for path, sha256 in sorted(latest.items()):
        target = folder / path
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        content = session.scalar(select(SnapshotBlob.content).where(SnapshotBlob.sha256 == sha256))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(content)
        os.replace(partial, target)
        written.append(path)
    return written
