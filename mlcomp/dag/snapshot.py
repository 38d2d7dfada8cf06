"""Code snapshots: a DAG's expdir stored content-addressed in the database at submission.

Each file's bytes are a :class:`~mlcomp.db.SnapshotBlob` keyed by SHA-256 (stored once, however
many DAGs use it); each DAG has a :class:`~mlcomp.db.SnapshotFile` per path. A task runs in a copy
written by :func:`materialize`, so editing the code after submission does not change a DAG that
is already running. Skipped: patterns of the expdir's ``.gitignore`` and ``.mlcompignore``
(gitwildmatch, via ``pathspec``) and :data:`ALWAYS_IGNORED` (data, logs, caches, VCS).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterable, Iterator

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from mlcomp.dag.rows import insert_ignore
from mlcomp.db import SnapshotBlob, SnapshotFile
from mlcomp.errors import DagError, NotFoundError

if TYPE_CHECKING:  # pathspec is imported where a snapshot is collected (submission), not by the worker,
    import pathspec  # which only writes stored snapshots out (materialize)

__all__ = ["FileEntry", "ALWAYS_IGNORED", "IGNORE_FILES", "ignore_spec", "collect", "own_paths", "store", "materialize",
           "snapshot_files", "SnapshotCache", "list_files", "read_file", "blob_count"]

ALWAYS_IGNORED = ("data/", "runs/", "logs/", "__pycache__/", ".git/", "*.pyc")
IGNORE_FILES = (".gitignore", ".mlcompignore")
MB = 1 << 20
_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot: its POSIX ``path`` relative to the expdir, content and digest."""

    path: str
    content: bytes = dataclasses.field(repr=False)
    sha256: str
    size: int

    @classmethod
    def read(cls, path: str, file: Path) -> "FileEntry":
        """The entry for ``file`` stored as ``path``.

        Raises:
            DagError: the file cannot be read (permissions, removed meanwhile).
        """
        try:
            content = file.read_bytes()
        except OSError as e:
            raise DagError(f"cannot read {file} for the code snapshot: {e.strerror or e}; fix its permissions "
                           f"or list it in {file.parent / '.mlcompignore'}") from None
        return cls(path=path, content=content, sha256=hashlib.sha256(content).hexdigest(), size=len(content))


def ignore_spec(expdir: Path) -> pathspec.PathSpec:
    """:data:`ALWAYS_IGNORED` plus the patterns of ``expdir``'s ignore files (gitwildmatch)."""
    import pathspec

    lines = list(ALWAYS_IGNORED)
    for name in IGNORE_FILES:
        if (expdir / name).is_file():
            lines += (expdir / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def collect(expdir: str | Path, limit_mb: float = 50.0, exclude: Iterable[str | Path] = ()) -> list[FileEntry]:
    """The files of ``expdir`` that a snapshot keeps, sorted by path. Sizes are checked before
    any file is read, so a data folder left in the expdir fails fast. ``exclude`` names files and
    folders to leave out wherever they are (mlcomp's own database and folders, see
    :func:`own_paths`, when its root lies in the expdir).

    Raises:
        DagError: the files add up to more than ``limit_mb`` megabytes; the message gives the
            largest files and how to leave them out.
    """
    root = Path(expdir)
    files = sorted(_walk(root, {Path(path).absolute() for path in exclude}))
    total = sum(size for _path, _file, size in files)
    if total > limit_mb * MB:
        largest = ", ".join(f"{path} ({size / MB:.1f} MB)" for path, _file, size in
                            sorted(files, key=lambda item: -item[2])[:5])
        raise DagError(f"the snapshot of {root} is {total / MB:.1f} MB, over the limit of {limit_mb:g} MB "
                       f"(setting snapshot_max_mb); largest files: {largest}. List data and outputs in "
                       f"{root / '.mlcompignore'} (gitignore patterns) or keep them outside the expdir")
    return [FileEntry.read(path, file) for path, file, _size in files]


def _walk(root: Path, exclude: set[Path]):
    """``(posix path, file, size)`` of each kept regular file under ``root``, less the paths in
    ``exclude`` (absolute); symlinked folders are not followed."""
    spec = ignore_spec(root)
    for folder, dirs, names in os.walk(root):
        rel = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs[:] = [d for d in dirs if not spec.match_file(f"{rel / d}/")
                   and (Path(folder) / d).absolute() not in exclude]
        for name in names:
            path, file = str(rel / name), Path(folder) / name
            if not spec.match_file(path) and file.is_file() and file.absolute() not in exclude:
                yield path, file, file.stat().st_size


def own_paths(settings) -> list[Path]:
    """mlcomp's own files under ``settings.root``: the task, snapshot and data folders and, for
    SQLite, the database with its journal files; a snapshot never takes them."""
    paths = [settings.tasks_dir, settings.snapshots_dir, settings.data_dir]
    url = settings.db_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url[len("sqlite:///"):])
        paths += [database] + [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    return paths


def store(session: Session, dag_ids: Iterable[int], entries: list[FileEntry]) -> None:
    """Writes ``entries`` as the snapshot of each DAG of ``dag_ids``; blobs already stored (by any
    DAG) are not sent again."""
    digests = sorted({e.sha256 for e in entries})
    known = set()
    for i in range(0, len(digests), _CHUNK):
        known.update(session.scalars(select(SnapshotBlob.sha256)
                                     .where(SnapshotBlob.sha256.in_(digests[i:i + _CHUNK]))))
    new = {e.sha256: e for e in entries if e.sha256 not in known}
    insert_ignore(session, SnapshotBlob, [{"sha256": e.sha256, "size": e.size, "content": e.content}
                                          for e in new.values()], ["sha256"])
    rows = [{"dag_id": dag_id, "path": e.path, "sha256": e.sha256} for dag_id in dag_ids for e in entries]
    if rows:
        session.execute(insert(SnapshotFile), rows)


def snapshot_files(session: Session, dag_id: int) -> Iterator[tuple[str, bytes]]:
    """``(path, content)`` of each file of DAG ``dag_id``'s snapshot, read 100 rows at a time."""
    statement = (select(SnapshotFile.path, SnapshotBlob.content)
                 .join(SnapshotBlob, SnapshotBlob.sha256 == SnapshotFile.sha256)
                 .where(SnapshotFile.dag_id == dag_id).execution_options(yield_per=100))
    for path, content in session.execute(statement):
        yield path, content


def materialize(session: Session, dag_id: int, dest: str | Path,
                files: Iterable[tuple[str, bytes]] | None = None) -> int:
    """Writes DAG ``dag_id``'s snapshot under ``dest`` (created; files there are overwritten);
    returns the number of files written. ``files``: the snapshot's ``(path, content)`` pairs
    when the caller has them (:class:`SnapshotCache`), else they are read from the store.

    Raises:
        DagError: a path leaves ``dest``.
    """
    dest = Path(dest)
    if not dest.is_dir():
        dest.mkdir(parents=True)
    count = 0
    root = None
    for path, content in snapshot_files(session, dag_id) if files is None else files:
        root = root or dest.resolve()  # resolved once there is a file: an empty snapshot costs no lookups
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise DagError(f"DAG {dag_id}: snapshot path {path!r} leaves the task's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        count += 1
    return count


class SnapshotCache:
    """The snapshots of the DAGs a worker ran last, kept in memory up to ``max_bytes`` of file
    content in all (least recently used first out), so a worker reads a DAG's snapshot from the
    store once, not once per task: a 100-cell grid on a remote PostgreSQL sends its code once.

    A snapshot never changes after its DAG's submission; entries are keyed by the DAG's id and
    creation time, so an id reused after a deletion never gets another DAG's files. Safe to use
    from several threads.
    """

    def __init__(self, max_bytes: int = 64 * MB):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[list[tuple[str, bytes]], int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def files(self, session: Session, dag_id: int, created) -> list[tuple[str, bytes]]:
        """``(path, content)`` of each file of DAG ``dag_id`` (created at ``created``)."""
        key = (dag_id, created)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        files = list(snapshot_files(session, dag_id))
        size = sum(len(content) for _, content in files)
        with self._lock:
            if size <= self.max_bytes and key not in self._entries:
                self._entries[key] = (files, size)
                self._size += size
                while self._size > self.max_bytes:
                    self._size -= self._entries.popitem(last=False)[1][1]
        return files


def list_files(session: Session, dag_id: int) -> list[tuple[str, int]]:
    """``(path, size in bytes)`` of each file of DAG ``dag_id``'s snapshot, sorted by path."""
    statement = (select(SnapshotFile.path, SnapshotBlob.size)
                 .join(SnapshotBlob, SnapshotBlob.sha256 == SnapshotFile.sha256)
                 .where(SnapshotFile.dag_id == dag_id).order_by(SnapshotFile.path))
    return [(path, size) for path, size in session.execute(statement)]


def read_file(session: Session, dag_id: int, path: str) -> bytes:
    """The content of ``path`` in DAG ``dag_id``'s snapshot.

    Raises:
        NotFoundError: the snapshot has no such path.
    """
    content = session.scalar(select(SnapshotBlob.content)
                             .join(SnapshotFile, SnapshotBlob.sha256 == SnapshotFile.sha256)
                             .where(SnapshotFile.dag_id == dag_id, SnapshotFile.path == path))
    if content is None:
        raise NotFoundError(f"DAG {dag_id} has no file {path!r} in its code snapshot")
    return content


def blob_count(session: Session) -> int:
    """How many distinct contents the snapshot store holds (for tests and the UI)."""
    return session.scalar(select(func.count()).select_from(SnapshotBlob))
