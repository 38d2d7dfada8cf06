"""When the store is away: which errors mean "the database cannot be reached for now", and one
clear line per component while it is away.

A PostgreSQL restart or fail-over, a network cut, or a SQLite file on a full disk make every
statement fail for a while. mlcomp's processes ride such an outage out instead of failing tasks:
the code that talks to the store catches :func:`transient` errors, tells its :class:`Outage`
(which logs the first failure as one line, "the database is unreachable since …, retrying", and
the recovery as another) and tries again later. Everything a task reports meanwhile waits in the
attempt's files (:mod:`mlcomp.worker.report`), and the supervisor judges a computer's silence only
against the time the store was reachable (:mod:`mlcomp.supervisor.supervisor`).
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

__all__ = ["transient", "Outage", "retrying", "RETRY_FOR"]

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_FOR = 600.0
"""Seconds a caller that cannot go on without the store (:func:`retrying`: a task's child
reading its task at start) keeps trying before it gives up."""


def transient(error: BaseException) -> bool:
    """Whether ``error`` says the store cannot be reached (or is busy) for now, so the same work
    may succeed later: a refused or dropped connection, a server shutting down or restarting, a
    pool that gave no connection in time, a deadlock or serialisation failure, a SQLite file that
    is locked or whose disk is full."""
    if isinstance(error, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def _short(error: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's statement and link."""
    origin = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(origin).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


class Outage:
    """What one component (``who``: "worker gpu-3", "supervisor", "task 12's reporter") knows of
    the store's reachability.

    :meth:`failed` is told of each failed write or read: a :func:`transient` error starts (or
    continues) an outage, logged once as a warning; :meth:`ok` is told of each success and logs the
    end of an outage with its length. Thread-safe.

    Attributes:
        since: the wall-clock time (epoch seconds) of the first failure of the current outage,
            None while the store is reachable.
        last: the last outage that ended, ``(since, back)`` in epoch seconds, None if none was
            seen.
    """

    def __init__(self, who: str, clock: Callable[[], float] = time.time):
        self.who = who
        self.clock = clock
        self.since: float | None = None
        self.last: tuple[float, float] | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the last attempt failed for a transient reason."""
        return self.since is not None

    def failed(self, error: BaseException) -> bool:
        """Notes a failure; True when it is :func:`transient` (the caller retries later), False
        for any other error (the caller lets it propagate)."""
        if not transient(error):
            return False
        with self._lock:
            first = self.since is None
            if first:
                self.since = self.clock()
        if first:
            log.warning("%s: the database is unreachable since %s (%s), retrying", self.who,
                        _stamp(self.since), _short(error))
        return True

    def ok(self) -> None:
        """Notes a success; ends the current outage, if any, with one line."""
        with self._lock:
            since, self.since = self.since, None
            if since is not None:
                self.last = (since, self.clock())
        if since is not None:
            log.warning("%s: the database is reachable again after %.1f s", self.who, self.last[1] - since)


    def run(self, work: Callable[[], object], failure: str) -> bool:
        """Runs ``work()`` for a loop that must go on (a tick, a heartbeat): notes its success
        or failure; a failure that is not :func:`transient` is logged with its traceback as
        ``failure`` (e.g. "worker w: heartbeat failed"). Returns whether it succeeded."""
        try:
            work()
        except Exception as e:
            if not self.failed(e):
                log.exception(failure)
            return False
        self.ok()
        return True


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def retrying(work: Callable[[], T], outage: Outage, *, retry_for: float | None = None, pause: float = 1.0,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Runs ``work()`` until it succeeds, retrying after ``pause`` seconds (doubling up to 10 s)
    while it raises :func:`transient` errors, for at most ``retry_for`` seconds (default
    :data:`RETRY_FOR`).

    Raises:
        Exception: the error of the last try once ``retry_for`` seconds have passed, or at once
            any error that is not transient.
    """
    limit = RETRY_FOR if retry_for is None else retry_for
    started = time.monotonic()
    while True:
        try:
            result = work()
        except Exception as e:
            if not outage.failed(e) or time.monotonic() - started >= limit:
                raise
            sleep(pause)
            pause = min(pause * 2, 10.0)
        else:
            outage.ok()
            return result
