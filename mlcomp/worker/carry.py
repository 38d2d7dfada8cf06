"""Full checkpoints carried between computers through the store, for tasks spread over several
(:mod:`mlcomp.gang`), whose computers share no filesystem.

Rank 0's :class:`~mlcomp.worker.report.Reporter` (opened with ``carry=True``) stores the content of
the checkpoints a later attempt reads (:data:`CARRIED`: ``last_full.pth`` and ``best_full.pth`` to
resume, ``best.pth`` for a later stage to start from) in ``snapshot_blob``, content-addressed by SHA-256 like code snapshots, and names it in the
checkpoint row's ``sha256``. Before a later attempt's ranks start on a computer, the worker writes
there the latest stored content of each (:func:`fetch`), so every rank resumes from the same
bytes wherever the attempt was placed. Only that latest content is kept: each flush that stores a
new one drops the task's superseded ones (:func:`prune`), so a long run holds one copy per path in
the store, not one per epoch. The per-epoch (``{stage}.{epoch}_full.pth``, one path each, deleted
as they leave a stage's n best) and per-iteration full checkpoints stay on rank 0's computer.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mlcomp.checkpoint_names import BEST, BEST_FULL, FILES, LAST_FULL
from mlcomp.db import Checkpoint, SnapshotBlob, SnapshotFile

__all__ = ["CARRIED", "is_carried", "blob", "fetch", "prune"]

CARRIED = (FILES[LAST_FULL], FILES[BEST_FULL], FILES[BEST])
"""The checkpoint file names the store carries between computers."""


def is_carried(path: str) -> bool:
    """Whether the checkpoint at ``path`` (relative to the task's folder) is one a later attempt
    reads (:data:`CARRIED`), which the store carries."""
    return PurePosixPath(path).name in CARRIED


def blob(content: bytes) -> dict:
    """The ``snapshot_blob`` row of ``content``: ``sha256`` (hex), ``size`` (bytes), ``content``."""
    return {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content), "content": content}


def _stored(session: Session, task_id: int) -> tuple[dict[str, str], set[str]]:
    """The stored contents of task ``task_id``'s full checkpoints: the latest SHA-256 of each
    path (relative to the task's folder), and every SHA-256 its checkpoint rows name."""
    rows = session.execute(select(Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.task_id == task_id, Checkpoint.sha256.is_not(None)).order_by(Checkpoint.id)).all()
    latest = {path: sha256 for path, sha256 in rows}  # the last row of a path wins
    return latest, {sha256 for _, sha256 in rows}


def prune(session: Session, task_id: int) -> int:
    """Drops the superseded stored contents of task ``task_id``'s full checkpoints (all but the
    latest of each path): their checkpoint rows no longer name them, and a blob no other row names
    (a checkpoint of another task, a code snapshot's file) is deleted. Returns how many were."""
    latest, named = _stored(session, task_id)
    old = named - set(latest.values())
    if not old:
        return 0
    session.execute(update(Checkpoint).where(Checkpoint.task_id == task_id, Checkpoint.sha256.in_(old))
                    .values(sha256=None))
    kept = set(session.scalars(select(Checkpoint.sha256).where(Checkpoint.sha256.in_(old))))
    kept.update(session.scalars(select(SnapshotFile.sha256).where(SnapshotFile.sha256.in_(old))))
    return session.execute(delete(SnapshotBlob).where(SnapshotBlob.sha256.in_(old - kept))).rowcount


def fetch(session: Session, task_id: int, folder: Path) -> list[str]:
    """Writes under ``folder`` (the task's folder on this computer) the latest stored content of
    each full checkpoint of task ``task_id`` whose local copy differs or is missing (through a
    temporary file and a rename); returns the paths written, relative to ``folder``."""
    latest, _ = _stored(session, task_id)
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
