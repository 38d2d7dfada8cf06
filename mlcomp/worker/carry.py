"""Full checkpoints carried between computers through the store, for a later attempt of a task
placed on a computer that lacks them: a task spread over several (:mod:`mlcomp.gang`), whose
computers share no filesystem, and a task on one computer that paused for a preemption
(:mod:`mlcomp.supervisor.preempt`), which may resume on another.

Rank 0's :class:`~mlcomp.worker.report.Reporter` (opened with ``carry=True``) stores the content of
the checkpoints a later attempt reads (:data:`CARRIED`: ``last_full.pth`` and ``best_full.pth`` to
resume, ``best.pth`` for a later stage to start from) in ``snapshot_blob``, content-addressed by SHA-256 like code snapshots, and names it in the
checkpoint row's ``sha256``. For a task on one computer the worker does the same once, when it
records the end of an attempt that paused for a preemption (:func:`keep`), with what a
resume from "last" reads (:data:`RESUMED`). Before a later attempt starts on a computer, the worker
writes there the latest stored content of each (:func:`fetch`), so it resumes from the same
bytes wherever it was placed. Only that latest content is kept: each flush that stores a
new one drops the task's superseded ones (:func:`prune`), so a long run holds one copy per path in
the store, not one per epoch. The per-epoch (``{stage}.{epoch}_full.pth``, one path each, deleted
as they leave a stage's n best) and per-iteration full checkpoints stay on rank 0's computer.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from mlcomp.checkpoint_names import BEST, BEST_FULL, FILES, LAST_FULL
from mlcomp.dag.rows import insert_ignore
from mlcomp.db import Checkpoint, SnapshotBlob, SnapshotFile

__all__ = ["CARRIED", "RESUMED", "is_carried", "blob", "keep", "fetch", "prune"]

CARRIED = (FILES[LAST_FULL], FILES[BEST_FULL], FILES[BEST])
"""The checkpoint file names the store carries between a gang's computers."""
RESUMED = (FILES[LAST_FULL], FILES[BEST])
"""The checkpoint file names a resume from "last" reads (the position it continues from, the model
a later stage starts from): those :func:`keep` stores for a task on one computer."""


def is_carried(path: str) -> bool:
    """Whether the checkpoint at ``path`` (relative to the task's folder) is one a later attempt
    reads (:data:`CARRIED`), which the store carries."""
    return PurePosixPath(path).name in CARRIED


def blob(content: bytes) -> dict:
    """The ``snapshot_blob`` row of ``content``: ``sha256`` (hex), ``size`` (bytes), ``content``."""
    return {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content), "content": content}


def _stored(session: Session, task_id: int) -> tuple[dict[str, str], set[str], set[str]]:
    """The stored contents of task ``task_id``'s full checkpoints: the latest SHA-256 of each
    path (relative to the task's folder), every SHA-256 its checkpoint rows name, and the paths
    recorded again after their latest stored content (a later attempt's file, kept only on the
    computer that wrote it)."""
    stored_paths = select(Checkpoint.path).where(Checkpoint.task_id == task_id, Checkpoint.sha256.is_not(None))
    rows = session.execute(select(Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.task_id == task_id, Checkpoint.path.in_(stored_paths)).order_by(Checkpoint.id)).all()
    latest = {path: sha256 for path, sha256 in rows if sha256 is not None}  # the last stored row of a path wins
    newest = {path: sha256 for path, sha256 in rows}
    named = {sha256 for _, sha256 in rows if sha256 is not None}
    return latest, named, {path for path, sha256 in newest.items() if sha256 is None}


def prune(session: Session, task_id: int) -> int:
    """Drops the superseded stored contents of task ``task_id``'s full checkpoints (all but the
    latest of each path): their checkpoint rows no longer name them, and a blob no other row names
    (a checkpoint of another task, a code snapshot's file) is deleted. Returns how many were."""
    latest, named, _ = _stored(session, task_id)
    old = named - set(latest.values())
    if not old:
        return 0
    session.execute(update(Checkpoint).where(Checkpoint.task_id == task_id, Checkpoint.sha256.in_(old))
                    .values(sha256=None))
    kept = set(session.scalars(select(Checkpoint.sha256).where(Checkpoint.sha256.in_(old))))
    kept.update(session.scalars(select(SnapshotFile.sha256).where(SnapshotFile.sha256.in_(old))))
    return session.execute(delete(SnapshotBlob).where(SnapshotBlob.sha256.in_(old - kept))).rowcount


def keep(session: Session, task_id: int, folder: Path) -> list[str]:
    """Stores the checkpoints of task ``task_id`` that a resume from "last" reads (:data:`RESUMED`)
    from ``folder`` (the task's folder on this computer), for a later attempt elsewhere
    (:func:`fetch`): the newest record of each such path is named with its file's content when
    that differs from what the record names (a file never written is skipped), then the
    superseded contents are dropped (:func:`prune`). The worker calls it as it records the end of
    an attempt of a task on one computer that paused for a preemption, after the
    attempt's journal reached the store. Returns the paths stored, relative to ``folder``.

    Raises:
        OSError: a file could not be read.
    """
    rows = session.execute(select(Checkpoint.id, Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.task_id == task_id, or_(*(Checkpoint.path.endswith(name, autoescape=True) for name in RESUMED)))
        .order_by(Checkpoint.id)).all()
    newest = {row.path: row for row in rows if PurePosixPath(row.path).name in RESUMED}  # the last row wins
    stored = []
    for path, row in sorted(newest.items()):
        try:
            content = blob((folder / path).read_bytes())
        except FileNotFoundError:
            continue
        if content["sha256"] == row.sha256:
            continue
        insert_ignore(session, SnapshotBlob, [content], ["sha256"])
        session.execute(update(Checkpoint).where(Checkpoint.id == row.id)
                        .values(sha256=content["sha256"], size=content["size"]))
        stored.append(path)
    if stored:
        prune(session, task_id)
    return stored


def fetch(session: Session, task_id: int, folder: Path) -> list[str]:
    """Writes under ``folder`` (the task's folder on this computer) the latest stored content of
    each full checkpoint of task ``task_id`` whose local copy is missing, or differs while that
    content is the path's newest record (a path recorded again since, by an attempt whose file was
    not stored, keeps its local copy: it may be that newer file), through a temporary file and a
    rename; returns the paths written, relative to ``folder``."""
    latest, _, newer = _stored(session, task_id)
    written = []
    for path, sha256 in sorted(latest.items()):
        target = folder / path
        if target.is_file() and (path in newer or hashlib.sha256(target.read_bytes()).hexdigest() == sha256):
            continue
        content = session.scalar(select(SnapshotBlob.content).where(SnapshotBlob.sha256 == sha256))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(content)
        os.replace(partial, target)
        written.append(path)
    return written
