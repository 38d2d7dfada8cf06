"""What the store-backed commands share: settings from the environment, the store, writer
transactions, and following a DAG's tasks until they end."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

import click
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.db import Task, TaskStatus, immediate, open_store
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
    """Rows as left-aligned text columns under ``header``."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _describe(task_id: int, name: str, status: TaskStatus, reason: str | None) -> str:
    line = f"task {task_id} {name!r}: {status.value}"
    return f"{line} ({reason})" if reason else line


def follow_dags(store: sessionmaker, dag_ids: list[int], echo: Callable[[str], None],
                changed: threading.Event | None = None, poll: float = 0.2) -> bool:
    """Prints a line per task status change of the DAGs ``dag_ids`` until every task has ended.

    Args:
        changed: set by whoever changes a status in this process (the embedded worker), to
            print at once instead of at the next poll.
        poll: seconds between reads when nothing signals a change.

    Returns:
        True when every task succeeded.
    """
    seen: dict[int, TaskStatus] = {}
    while True:
        if changed is not None:
            changed.clear()
        with store.begin() as session:
            rows = session.execute(select(Task.id, Task.name, Task.status, Task.reason)
                                   .where(Task.dag_id.in_(dag_ids)).order_by(Task.updated, Task.id)).all()
        for task_id, name, status, reason in rows:
            if seen.get(task_id, TaskStatus.not_ran) is not status:
                seen[task_id] = status
                echo(_describe(task_id, name, status, reason))
        if all(status.finished for _, _, status, _ in rows):
            return all(status is TaskStatus.success for _, _, status, _ in rows)
        if changed is not None:
            changed.wait(poll)
        else:
            time.sleep(poll)
