"""What the store-backed commands share: settings from the environment, the store, writer
transactions, and following a DAG's tasks until they end."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
import time
from typing import Callable, Iterator

import click
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.db import Task, TaskStatus, immediate, open_store
from mlcomp.db.outage import Outage, retrying
from mlcomp.lifecycle import ACTIVE, counted_status
from mlcomp.names import shown
from mlcomp.settings import Settings

__all__ = ["Services", "pass_services", "follow_dags", "table"]


class Services:
    """Settings and the store, opened on first use (``mlcomp --help`` touches no database)."""

    def __init__(self):
        self.settings = Settings.from_env()
        self._store: sessionmaker | None = None

    @property
    def store(self) -> sessionmaker:
        """The migrated store of ``settings.db_url``; its connections close with the command."""
        if self._store is None:
            self._store = open_store(self.settings)
            context = click.get_current_context(silent=True)
            if context is not None:
                context.find_root().call_on_close(self._store.kw["bind"].dispose)
        return self._store

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A writer transaction (``BEGIN IMMEDIATE`` on SQLite), committed at the end."""
        with self.store.begin() as session:
            immediate(session)
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction."""
        with self.store.begin() as session:
            yield session


pass_services = click.make_pass_decorator(Services, ensure=True)


def table(rows: list[list], header: list[str]) -> str:
    """Rows as left-aligned text columns under ``header``; a cell's controls (a newline) and bidi
    characters (U+202E) are shown escaped (``\\n``, ``\\u202e``: :func:`mlcomp.names.shown`), so a
    name cannot break or reorder the table."""
    cells = [[shown(str(c)) for c in header]] + [["" if c is None else shown(str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _describe(task_id: int, name: str, status: TaskStatus, reason: str | None, preempted_by: int | None) -> str:
    """A status line; a task paused by a preemption says so and that it resumes."""
    line = f"task {task_id} {name!r}: {status.value}"
    if status is TaskStatus.paused and preempted_by is not None:
        reason = f"{reason or f'preempted by task {preempted_by}'}; resumes once placed again"
    return f"{line} ({reason})" if reason else line


def _describe_waits(changed: dict[int, tuple[str, str]]) -> list[str]:
    """One line per distinct waiting reason among ``changed`` (task id → (name, reason)): the first
    task's id and name and how many more wait for the same reason (a grid's cells share one)."""
    by_reason: dict[str, list[tuple[int, str]]] = {}
    for task_id, (name, reason) in changed.items():
        by_reason.setdefault(reason, []).append((task_id, name))
    lines = []
    for reason, tasks in by_reason.items():
        (task_id, name), more = tasks[0], len(tasks) - 1
        others = f" and {more} more" if more else ""
        lines.append(f"task {task_id} {name!r}{others}: waits: {reason}")
    return lines


def _describe_epoch(task_id: int, name: str, progress: dict) -> str:
    line = f"task {task_id} {name!r}: stage {progress.get('stage')} epoch {progress.get('epoch')}"
    if progress.get("epochs"):
        line += f"/{progress['epochs']}"
    eta = progress.get("eta")
    return line + (f", ETA {eta:.0f} s" if isinstance(eta, (int, float)) else "")


FULL_READ_EVERY = 1.0
"""Seconds between the follower's reads of every task of its DAGs; between them it reads only
the tasks that changed (see :func:`follow_dags`)."""

_RECENT = dt.timedelta(seconds=0.5)  # how far back a partial read looks before the newest change seen


class _Printed:
    """What a follower printed so far, so each line is printed once: every task's status, the
    stage and epoch it runs, and the reason it waits; and the tasks paused by a preemption."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.seen: dict[int, TaskStatus] = {}
        self.preempted: set[int] = set()
        self.epochs: dict[int, tuple] = {}
        self.waits: dict[int, str | None] = {}

    def show(self, rows) -> None:
        """Prints what ``rows`` (id, name, status, reason, progress, updated, waiting_reason,
        preempted_by) changed: status lines, epoch lines, then one line per new waiting reason."""
        new_waits: dict[int, tuple[str, str]] = {}
        for task_id, name, status, reason, progress, _, waiting_reason, preempted_by in rows:
            if self.seen.get(task_id, TaskStatus.not_ran) is not status:
                self.echo(_describe(task_id, name, status, reason, preempted_by))
            self.seen[task_id] = status
            if preempted_by is None:
                self.preempted.discard(task_id)
            else:
                self.preempted.add(task_id)
            waiting_reason = waiting_reason if status is TaskStatus.not_ran else None
            if waiting_reason and self.waits.get(task_id) != waiting_reason:
                new_waits[task_id] = (name, waiting_reason)
            self.waits[task_id] = waiting_reason
            position = (progress.get("stage"), progress.get("epoch")) if isinstance(progress, dict) else None
            if status is TaskStatus.in_progress and position and position[1] is not None \
                    and self.epochs.get(task_id) != position:
                self.epochs[task_id] = position
                self.echo(_describe_epoch(task_id, name, progress))
        for line in _describe_waits(new_waits):
            self.echo(line)

    def statuses(self) -> dict[int, TaskStatus]:
        """Every task's status as :func:`counted_status` counts it: a task paused by a preemption
        is ``queued`` (it waits to resume), not ended."""
        return {task_id: counted_status(status, task_id in self.preempted) for task_id, status in self.seen.items()}


def _read(store: sessionmaker, stmt) -> list:
    with store.begin() as session:
        return session.execute(stmt).all()


def follow_dags(store: sessionmaker, dag_ids: list[int], echo: Callable[[str], None],
                changed: threading.Event | None = None, poll: float = 0.2) -> bool:
    """Prints a line per task status change of the DAGs ``dag_ids``, a line each time the reason a
    ready task waits for placement changes (the supervisor's ``waiting_reason``, e.g. "no computer
    has room for 1 GPU, …"), and a line per epoch a running task starts (its stage, epoch and
    ETA), until every task has ended. While the store is unreachable it says so once and keeps
    reading for up to :data:`mlcomp.db.outage.RETRY_FOR` seconds. A task paused by a preemption
    has not ended: it waits to be placed again and resumes.

    A read costs what changed, not the DAGs' size (a 10,000-cell grid is followed without reading
    10,000 rows per change): between full reads (every :data:`FULL_READ_EVERY` seconds) only the
    tasks stamped ``updated`` since shortly before the newest change seen, and those seen active,
    are read. Full reads catch a change whose writer's clock lags, and the end is decided on one.

    Args:
        changed: set by whoever changes a status in this process (the embedded worker), to
            print at once instead of at the next poll.
        poll: seconds between reads when nothing signals a change.

    Returns:
        True when every task succeeded (search trials that ended pruned count as succeeded).
    """
    printed = _Printed(echo)
    outage = Outage("dag submit --wait")
    newest, last_full = None, None
    while True:
        if changed is not None:
            changed.clear()
        full = last_full is None or time.monotonic() - last_full >= FULL_READ_EVERY
        stmt = select(Task.id, Task.name, Task.status, Task.reason, Task.progress, Task.updated,
                      Task.waiting_reason, Task.preempted_by).where(Task.dag_id.in_(dag_ids))
        if full:
            last_full = time.monotonic()
        else:
            active = [task_id for task_id, status in printed.statuses().items() if status in ACTIVE]
            recent = [] if newest is None else [Task.updated >= newest - _RECENT]
            stmt = stmt.where(or_(*recent, Task.status.in_(ACTIVE), Task.id.in_(active)))
        rows = retrying(functools.partial(_read, store, stmt.order_by(Task.updated, Task.id)), outage)
        stamps = [stamp for stamp in (newest, *(row.updated for row in rows)) if stamp is not None]
        newest = max(stamps, default=None)
        printed.show(rows)
        statuses = printed.statuses().values()
        # a paused search trial waits for its search, which ends it (pruned: stopped early, not a failure)
        if all(status.finished or status is TaskStatus.paused for status in statuses):
            if full:
                return all(status in (TaskStatus.success, TaskStatus.pruned) for status in statuses)
            last_full = None  # decided on a full read, at once
            continue
        if changed is not None:
            changed.wait(poll)
        else:
            time.sleep(poll)
