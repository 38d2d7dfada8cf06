"""The Reporter: how a task (its child process, or the worker on its behalf) writes logs, metrics,
progress, checkpoint records and its result to the store, batched, and without depending on it.

Nothing is written to the store per call. A task's own processes append each report to the
attempt's **journal** first (``attempts/N/reports``, one JSON line each, on the computer that runs
the part), and a flush replays the journal's new lines into the store in one transaction that
also records how far it reached (``report_journal.replayed``, bytes): each line reaches the store
exactly once, whichever process replays it and however long the store was away (:func:`replay`).
A flush that finds the store unreachable leaves the lines in the journal and tries again a second
later; the worker replays what is left when the task's process has ended. The worker's own
reporter of a task's output lines keeps them in memory instead: the output files are their
journal, with ``attempt.log_offsets``, and a failed flush puts them back.

A flush happens when ``max_items`` reports wait, when ``flush_every`` seconds have passed since the
last one (checked on each call and by :meth:`Reporter.maybe_flush`, which a background thread
started by :meth:`Reporter.start` calls), or on :meth:`Reporter.flush` / :meth:`Reporter.close`.
The idea is rq's and TensorBoard's ``SummaryWriter``: cheap calls, periodic flushes, a final flush
on exit; the journal is a write-ahead log's.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.dag.rows import insert_ignore
from mlcomp.db import Attempt, Checkpoint, LogLine, Metric, ReportJournal, SnapshotBlob, Task, utcnow
from mlcomp.db.outage import Outage
from mlcomp.worker.carry import blob, is_carried, prune

__all__ = ["Reporter", "LEVELS", "JOURNAL", "replay"]

log = logging.getLogger(__name__)

LEVELS = ("debug", "info", "warning", "error")
STREAMS = ("stdout", "stderr", "system")
JOURNAL = "reports"
"""The journal's file name in an attempt's folder (:class:`~mlcomp.worker.process.AttemptFiles`)."""
RETRY_EVERY = 1.0
"""Seconds between flushes while the store is unreachable."""


class Reporter:
    """Buffers a task's reports and writes them in batches.

    Args:
        sessionmaker: the store's sessionmaker; each flush is one ``sessionmaker.begin()``.
        task_id: the task the reports belong to.
        attempt: the attempt number stamped on every row (so a resumed run keeps its history apart).
        journal: the attempt's journal file (:data:`JOURNAL`) where each report is appended
            before it reaches the store (a task's own processes); None keeps them in memory.
        computer: the computer whose journal it is (the key of its ``report_journal`` row).
        flush_every: seconds between flushes while entries wait.
        max_items: a flush happens at once when this many entries wait.
        clock: a monotonic clock in seconds (injected by tests).
        carry_from: the task's folder when the content of its full checkpoints is to be stored
            too (rank 0 of a task spread over computers: :mod:`mlcomp.worker.carry`); None: only
            their records.
        outage: where a failed flush says the store is unreachable (:mod:`mlcomp.db.outage`;
            a worker's reporters share its own, so it says so once); default: one of its own.

    Thread-safe: the worker's pipe readers and a flushing thread share one Reporter, and the
    processes of one attempt on one computer (the child, and the process rank 0 of a distributed
    run reports from) share its journal, whose flushes a file lock serialises.
    """

    def __init__(
        self,
        sessionmaker: sessionmaker[Session],
        task_id: int,
        attempt: int = 1,
        *,
        journal: str | Path | None = None,
        computer: str = "",
        flush_every: float = 0.2,
        max_items: int = 100,
        clock: Callable[[], float] = time.monotonic,
        carry_from: str | Path | None = None,
        outage: Outage | None = None,
    ):
        self.sessionmaker = sessionmaker
        self.task_id = task_id
        self.attempt = attempt
        self.journal = None if journal is None else Path(journal)
        self.computer = computer
        self.flush_every = flush_every
        self.max_items = max_items
        self.clock = clock
        self.outage = outage or Outage(f"task {task_id}'s reports")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._logs: list[dict] = []
        self._metrics: list[dict] = []
        self._checkpoints: list[dict] = []
        self._blobs: list[dict] = []
        self.carry_from = None if carry_from is None else Path(carry_from)
        self._progress: dict | None = None
        self._offsets: dict | None = None
        self._journaled = 0  # journal lines appended since this reporter's last replay
        self._fd: int | None = None
        self._last_flush = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine = None  # owned by a Reporter from connect()

    @classmethod
    def connect(cls, db_url: str, task_id: int, attempt: int = 1, **kwargs) -> "Reporter":
        """A Reporter on a store of its own (an engine on ``db_url``, disposed by :meth:`close`):
        for a process an executor starts itself (rank 0 of a distributed run)."""
        from mlcomp.db import make_engine, make_sessionmaker

        engine = make_engine(db_url, connections=2, idle_release=5.0)  # a lab runs hundreds of these
        reporter = cls(make_sessionmaker(engine), task_id, attempt, **kwargs)
        reporter._engine = engine
        return reporter

    @classmethod
    def from_env(cls, sessionmaker: sessionmaker[Session], env=None, **kwargs) -> "Reporter":
        """The Reporter of the task whose child this process is (``MLCOMP_TASK_ID``,
        ``MLCOMP_ATTEMPT``, ``MLCOMP_COMPUTER``, set by the worker).

        Raises:
            KeyError: ``MLCOMP_TASK_ID`` is not set (not running under a worker).
        """
        env = os.environ if env is None else env
        kwargs.setdefault("computer", env.get("MLCOMP_COMPUTER", ""))
        return cls(sessionmaker, int(env["MLCOMP_TASK_ID"]), int(env.get("MLCOMP_ATTEMPT", "1")), **kwargs)

    # -- reports ------------------------------------------------------------------------------
    def log(self, text: str, level: str = "info", stream: str = "system") -> None:
        """Adds one log line. ``level`` is one of :data:`LEVELS`; ``stream`` is ``stdout``,
        ``stderr`` (lines the process printed) or ``system`` (lines mlcomp wrote about the task).

        Raises:
            ValueError: an unknown level or stream (a bug in the caller).
        """
        if level not in LEVELS or stream not in STREAMS:
            raise ValueError(f"log level must be one of {LEVELS} and stream one of {STREAMS}, "
                             f"got {level!r}/{stream!r}")
        self._add("log", self._logs, dict(level=level, stream=stream, time=utcnow(), text=text))

    def output(self, lines: list[tuple[str, str]], offsets: dict[str, int]) -> None:
        """Adds the lines a task's process wrote (``(stream, text)`` pairs, stream ``stdout`` or
        ``stderr``) together with ``offsets``: how many bytes of each output file those lines
        cover. The offsets are written in the same transaction as the lines (into the attempt's
        ``log_offsets``), so a worker that restarts follows the files from exactly there."""
        now = utcnow()
        rows = [dict(task_id=self.task_id, attempt=self.attempt, level="info", stream=stream, time=now, text=text)
                for stream, text in lines]
        with self._lock:
            self._logs.extend(rows)
            self._offsets = dict(offsets)
        self._maybe_full()

    def metric(self, name: str, value: float, *, loader: str | None = None, stage: str | None = None,
               epoch: int | None = None, step: int, kind: str = "epoch") -> None:
        """Adds one metric value. ``step`` is the epoch number (``kind='epoch'``) or the global
        batch step (``kind='batch'``); ``value`` is converted with ``float()`` (a 0-d tensor works)."""
        self._add("metric", self._metrics, dict(name=name, loader=loader, stage=stage, epoch=epoch, step=int(step),
                                                kind=kind, value=float(value), time=utcnow()))

    def progress(self, progress: dict[str, Any]) -> None:
        """Replaces the task's progress (``{stage, epoch, epochs, batch, batches, eta}``); only the
        latest value waiting is written."""
        if self.journal is not None:
            self._append({"entry": "progress", "progress": progress})
        else:
            with self._lock:
                self._progress = dict(progress)
        self.maybe_flush()

    def result(self, result: Any) -> None:
        """Records the task's result (what its executor returned: JSON-able), as
        ``Task.result``."""
        if self.journal is not None:
            self._append({"entry": "result", "result": result})
            self.flush()
        else:
            with self.sessionmaker.begin() as session:
                session.execute(update(Task).where(Task.id == self.task_id).values(result=result))

    def checkpoint(self, path: str, stage: str | None = None, epoch: int | None = None,
                   metric: float | None = None, size: int = 0) -> None:
        """Records a checkpoint file: ``path`` relative to the task's folder, ``size`` in bytes;
        with ``carry_from`` a full checkpoint's content is stored too (read when the record
        reaches the store: the file is replaced only by a rename)."""
        row = dict(path=str(path), stage=stage, epoch=epoch, metric=None if metric is None else float(metric),
                   size=int(size), created=utcnow(), sha256=None)
        carried = self.carry_from is not None and is_carried(str(path))
        if self.journal is not None:
            self._append({"entry": "checkpoint", **row, "carry": str(self.carry_from) if carried else None})
            self._maybe_full()
            return
        if carried:
            content = blob((self.carry_from / path).read_bytes())
            row.update(sha256=content["sha256"], size=content["size"])
            with self._lock:
                self._blobs.append(content)
        self._add("checkpoint", self._checkpoints, row)

    # -- the journal --------------------------------------------------------------------------
    def _append(self, entry: dict) -> None:
        """Appends one entry to the journal as one line, in one ``write`` (appends of whole lines
        by the processes sharing the journal do not interleave)."""
        line = (json.dumps(entry, default=_encode, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)
            self._journaled += 1

    # -- flushing -----------------------------------------------------------------------------
    def _add(self, kind: str, buffer: list, row: dict) -> None:
        if self.journal is not None:
            self._append({"entry": kind, **row})
        else:
            with self._lock:
                buffer.append(dict(task_id=self.task_id, attempt=self.attempt, **row))
        self._maybe_full()

    def _maybe_full(self) -> None:
        if self.pending() >= self.max_items and not self.outage.down:
            self.flush()
        else:
            self.maybe_flush()

    def pending(self) -> int:
        """How many entries wait to be written (progress counts as one)."""
        with self._lock:
            return (len(self._logs) + len(self._metrics) + len(self._checkpoints) + self._journaled
                    + (self._progress is not None) + (self._offsets is not None))

    def maybe_flush(self) -> bool:
        """Flushes if entries wait and ``flush_every`` seconds passed since the last flush (a
        second while the store is unreachable); returns whether it wrote."""
        every = RETRY_EVERY if self.outage.down else self.flush_every
        if self.clock() - self._last_flush < every or not self.pending():
            return False
        return self.flush()

    def flush(self) -> bool:
        """Writes every waiting entry in one transaction (bulk inserts, a few updates; for a gang's
        rank 0 also the full checkpoints' contents, the superseded ones dropped). Returns False,
        the entries kept, when the store could not be reached (:mod:`mlcomp.db.outage`).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: any other failure of the transaction.
        """
        with self._write_lock:
            self._last_flush = self.clock()
            try:
                if self.journal is not None:
                    self._replay()
                else:
                    self._write_buffers()
            except Exception as e:
                if not self.outage.failed(e):
                    raise
                return False
            self.outage.ok()
            return True

    def _replay(self) -> None:
        with self._lock:
            journaled, self._journaled = self._journaled, 0
        if self._fd is None and not self.journal.exists():
            return
        try:
            with open(self.journal, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_EX)  # one replay at a time per journal, across processes
                with self.sessionmaker.begin() as session:
                    replay(session, self.journal, self.task_id, self.attempt, self.computer)
        except BaseException:
            with self._lock:
                self._journaled += journaled
            raise

    def _write_buffers(self) -> None:
        with self._lock:
            logs, self._logs = self._logs, []
            metrics, self._metrics = self._metrics, []
            checkpoints, self._checkpoints = self._checkpoints, []
            blobs, self._blobs = self._blobs, []
            progress, self._progress = self._progress, None
            offsets, self._offsets = self._offsets, None
        if not (logs or metrics or checkpoints or progress is not None or offsets is not None):
            return
        try:
            with self.sessionmaker.begin() as session:
                _write(session, self.task_id, logs, metrics, checkpoints, blobs, progress)
                if offsets is not None:
                    session.execute(update(Attempt).where(Attempt.task_id == self.task_id,
                                                          Attempt.number == self.attempt).values(log_offsets=offsets))
        except BaseException:  # put them back in front of what came meanwhile: nothing is lost
            with self._lock:
                self._logs[:0], self._metrics[:0], self._checkpoints[:0], self._blobs[:0] = (
                    logs, metrics, checkpoints, blobs)
                self._progress = self._progress if self._progress is not None else progress
                self._offsets = self._offsets if self._offsets is not None else offsets
            raise

    def start(self) -> "Reporter":
        """Starts a daemon thread that flushes every ``flush_every`` seconds until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"reporter-{self.task_id}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every):
            try:
                self.maybe_flush()
            except Exception:  # not the store's absence (that is retried): a bug, logged
                log.exception("task %s: writing its reports failed", self.task_id)

    def close(self) -> None:
        """Stops the flushing thread (if any) and writes what waits (and disposes the engine of a
        Reporter from :meth:`connect`). With a journal, what the store could not take now stays
        there for the worker to replay."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.flush()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._engine is not None:
                self._engine.dispose()

    def __enter__(self) -> "Reporter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _write(session: Session, task_id: int, logs: list[dict], metrics: list[dict], checkpoints: list[dict],
           blobs: list[dict], progress: dict | None, result: Any = None, has_result: bool = False) -> None:
    """Writes one batch of a task's reports (rows carrying ``task_id`` and ``attempt``)."""
    if blobs:  # before the checkpoint rows that name them
        insert_ignore(session, SnapshotBlob, blobs, ["sha256"])
    for model, rows in ((LogLine, logs), (Metric, metrics), (Checkpoint, checkpoints)):
        if rows:
            session.execute(insert(model), rows)
    if blobs:  # only the latest content of each full checkpoint is kept
        prune(session, task_id)
    values = {"progress": progress} if progress is not None else {}
    if has_result:
        values["result"] = result
    if values:
        session.execute(update(Task).where(Task.id == task_id).values(**values))


def replay(session: Session, journal: Path, task_id: int, attempt: int, computer: str) -> int:
    """Writes into the store the complete lines of ``journal`` (an attempt's :data:`JOURNAL` on
    ``computer``) that it does not hold yet, and how far it now holds them, in ``session``'s
    transaction; returns how many entries were written. The caller serialises replays of one
    journal (a file lock, or the end of every process that writes it). A line that is not valid
    JSON (cut by a full disk) is skipped with a warning.
    """
    if not journal.exists():  # a task that reported nothing (a bash task's child has no reporter)
        return 0
    row = session.get(ReportJournal, (task_id, attempt, computer), with_for_update=True)
    start = row.replayed if row is not None else 0
    try:
        with open(journal, "rb") as file:
            file.seek(start)
            data = file.read()
    except FileNotFoundError:
        return 0
    end = data.rfind(b"\n") + 1
    if not end:
        return 0
    batch = _Batch(task_id, attempt)
    for line in data[:end].splitlines():
        try:
            batch.add(json.loads(line))
        except (ValueError, KeyError, OSError) as e:
            log.warning("task %s: journal %s: a line skipped (%s)", task_id, journal, e)
    _write(session, task_id, batch.logs, batch.metrics, batch.checkpoints, batch.blobs, batch.progress,
           batch.result, batch.has_result)
    if row is None:
        session.add(ReportJournal(task_id=task_id, attempt=attempt, computer=computer, replayed=start + end))
    else:
        row.replayed = start + end
    return batch.count


class _Batch:
    """The rows of a run of journal lines."""

    def __init__(self, task_id: int, attempt: int):
        self.stamp = {"task_id": task_id, "attempt": attempt}
        self.logs, self.metrics, self.checkpoints, self.blobs = [], [], [], []
        self.progress = self.result = None
        self.has_result = False
        self.count = 0

    def add(self, entry: dict) -> None:
        kind = entry.pop("entry")
        if kind == "progress":
            self.progress = entry["progress"]
        elif kind == "result":
            self.result, self.has_result = entry["result"], True
        elif kind == "checkpoint":
            carry = entry.pop("carry")
            entry["created"] = _time(entry["created"])
            if carry is not None:
                content = blob((Path(carry) / entry["path"]).read_bytes())
                entry.update(sha256=content["sha256"], size=content["size"])
                self.blobs.append(content)
            self.checkpoints.append({**self.stamp, **entry})
        else:
            entry["time"] = _time(entry["time"])
            (self.logs if kind == "log" else self.metrics).append({**self.stamp, **entry})
        self.count += 1


def _encode(value: Any) -> Any:
    """JSON for what reports carry besides plain values: datetimes (ISO 8601), numbers of NumPy
    or torch (``float``/``int``)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a report value of type {type(value).__name__} is not JSON")


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
