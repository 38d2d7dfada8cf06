"""The Reporter: how a task (its child process, or the worker on its behalf) writes logs, metrics,
progress and checkpoint records to the store, batched.

Nothing is written per call: entries are buffered and written in one short transaction when
``max_items`` are waiting, when ``flush_every`` seconds have passed since the last write (checked on
each call and by :meth:`Reporter.maybe_flush`, which a background thread started by
:meth:`Reporter.start` calls), or on :meth:`Reporter.flush` / :meth:`Reporter.close`. The idea is
rq's and TensorBoard's ``SummaryWriter``: cheap calls, periodic flushes, a final flush on exit.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.dag.rows import insert_ignore
from mlcomp.db import Attempt, Checkpoint, LogLine, Metric, SnapshotBlob, Task, utcnow
from mlcomp.worker.carry import blob, is_carried, prune

__all__ = ["Reporter", "LEVELS"]

LEVELS = ("debug", "info", "warning", "error")
STREAMS = ("stdout", "stderr", "system")


class Reporter:
    """Buffers a task's reports and writes them in batches.

    Args:
        sessionmaker: the store's sessionmaker; each flush is one ``sessionmaker.begin()``.
        task_id: the task the reports belong to.
        attempt: the attempt number stamped on every row (so a resumed run keeps its history apart).
        flush_every: seconds between flushes while entries wait.
        max_items: a flush happens at once when this many entries wait.
        clock: a monotonic clock in seconds (injected by tests).
        carry_from: the task's folder when the content of its full checkpoints is to be stored
            too (rank 0 of a task spread over computers: :mod:`mlcomp.worker.carry`); None: only
            their records.

    Thread-safe: the worker's pipe readers and a flushing thread share one Reporter.
    """

    def __init__(
        self,
        sessionmaker: sessionmaker[Session],
        task_id: int,
        attempt: int = 1,
        *,
        flush_every: float = 0.2,
        max_items: int = 100,
        clock: Callable[[], float] = time.monotonic,
        carry_from: str | Path | None = None,
    ):
        self.sessionmaker = sessionmaker
        self.task_id = task_id
        self.attempt = attempt
        self.flush_every = flush_every
        self.max_items = max_items
        self.clock = clock
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._logs: list[dict] = []
        self._metrics: list[dict] = []
        self._checkpoints: list[dict] = []
        self._blobs: list[dict] = []
        self.carry_from = None if carry_from is None else Path(carry_from)
        self._progress: dict | None = None
        self._offsets: dict | None = None
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
        ``MLCOMP_ATTEMPT``, set by the worker).

        Raises:
            KeyError: ``MLCOMP_TASK_ID`` is not set (not running under a worker).
        """
        env = os.environ if env is None else env
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
        row = dict(task_id=self.task_id, attempt=self.attempt, level=level, stream=stream,
                   time=utcnow(), text=text)
        self._add(self._logs, row)

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
            full = len(self._logs) + len(self._metrics) + len(self._checkpoints) >= self.max_items
        if full:
            self.flush()
        else:
            self.maybe_flush()

    def metric(self, name: str, value: float, *, loader: str | None = None, stage: str | None = None,
               epoch: int | None = None, step: int, kind: str = "epoch") -> None:
        """Adds one metric value. ``step`` is the epoch number (``kind='epoch'``) or the global
        batch step (``kind='batch'``); ``value`` is converted with ``float()`` (a 0-d tensor works)."""
        row = dict(task_id=self.task_id, attempt=self.attempt, name=name, loader=loader, stage=stage,
                   epoch=epoch, step=int(step), kind=kind, value=float(value), time=utcnow())
        self._add(self._metrics, row)

    def progress(self, progress: dict[str, Any]) -> None:
        """Replaces the task's progress (``{stage, epoch, epochs, batch, batches, eta}``); only the
        latest value waiting is written."""
        with self._lock:
            self._progress = dict(progress)
        self.maybe_flush()

    def checkpoint(self, path: str, stage: str | None = None, epoch: int | None = None,
                   metric: float | None = None, size: int = 0) -> None:
        """Records a checkpoint file: ``path`` relative to the task's folder, ``size`` in bytes;
        with ``carry_from`` a full checkpoint's content is stored too (read now: it was just
        written, and is replaced only by a rename)."""
        row = dict(task_id=self.task_id, attempt=self.attempt, path=str(path), stage=stage, epoch=epoch,
                   metric=None if metric is None else float(metric), size=int(size), created=utcnow(), sha256=None)
        if self.carry_from is not None and is_carried(str(path)):
            content = blob((self.carry_from / path).read_bytes())
            row.update(sha256=content["sha256"], size=content["size"])
            with self._lock:
                self._blobs.append(content)
        self._add(self._checkpoints, row)

    # -- flushing -----------------------------------------------------------------------------
    def _add(self, buffer: list, row: dict) -> None:
        with self._lock:
            buffer.append(row)
            full = len(self._logs) + len(self._metrics) + len(self._checkpoints) >= self.max_items
        if full:
            self.flush()
        else:
            self.maybe_flush()

    def pending(self) -> int:
        """How many entries wait to be written (progress counts as one)."""
        with self._lock:
            return (len(self._logs) + len(self._metrics) + len(self._checkpoints)
                    + (self._progress is not None) + (self._offsets is not None))

    def maybe_flush(self) -> bool:
        """Flushes if entries wait and ``flush_every`` seconds passed since the last flush;
        returns whether it wrote."""
        if self.clock() - self._last_flush < self.flush_every or not self.pending():
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Writes every waiting entry in one transaction (bulk inserts, a few updates; for a gang's
        rank 0 also the full checkpoints' contents, the superseded ones dropped)."""
        with self._write_lock:
            with self._lock:
                logs, self._logs = self._logs, []
                metrics, self._metrics = self._metrics, []
                checkpoints, self._checkpoints = self._checkpoints, []
                blobs, self._blobs = self._blobs, []
                progress, self._progress = self._progress, None
                offsets, self._offsets = self._offsets, None
                self._last_flush = self.clock()
            if not (logs or metrics or checkpoints or progress is not None or offsets is not None):
                return
            with self.sessionmaker.begin() as session:
                if blobs:  # before the checkpoint rows that name them
                    insert_ignore(session, SnapshotBlob, blobs, ["sha256"])
                for model, rows in ((LogLine, logs), (Metric, metrics), (Checkpoint, checkpoints)):
                    if rows:
                        session.execute(insert(model), rows)
                if blobs:  # only the latest content of each full checkpoint is kept
                    prune(session, self.task_id)
                if progress is not None:
                    session.execute(update(Task).where(Task.id == self.task_id).values(progress=progress))
                if offsets is not None:
                    session.execute(update(Attempt).where(Attempt.task_id == self.task_id,
                                                          Attempt.number == self.attempt).values(log_offsets=offsets))

    def start(self) -> "Reporter":
        """Starts a daemon thread that flushes every ``flush_every`` seconds until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"reporter-{self.task_id}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every):
            self.maybe_flush()

    def close(self) -> None:
        """Stops the flushing thread (if any) and writes what waits (and disposes the engine of a
        Reporter from :meth:`connect`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> "Reporter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
