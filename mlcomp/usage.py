"""GPU-hours per project: how many GPU-hours each project's tasks held, bucket by bucket, over
the last day (hourly) or the last week (daily), as Slurm's ``sreport`` accounts a cluster's
use by account.

An attempt holds its GPUs from ``Attempt.started`` to its end: ``Attempt.finished``; else, for
an attempt that ended paused, when its preemption paused it (:class:`mlcomp.db.Preemption`) or,
for the task's current attempt, when the task last changed (``Task.updated``: a search trial
paused at a rung); else now, while it is active (queued, in progress, stopping). Its GPUs are
``Attempt.gpus`` on one computer, or every part of a gang (:func:`mlcomp.gang.holdings`), whose
placement record only the task's current attempt keeps. Each attempt is clipped to the window.

Both the CLI (``mlcomp queue --usage``) and the UI (the queue page's plot) show it, so it lives
here and not in ``ui/``: the CLI must not import Flask.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Iterator

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mlcomp.db import Attempt, Dag, Preemption, Project, Task, TaskStatus
from mlcomp.gang import holdings
from mlcomp.lifecycle import ACTIVE

__all__ = ["WINDOWS", "Usage", "gpu_hours", "window_start"]

WINDOWS = {"day": (3600, 24), "week": (86400, 7)}
"""Window name → (bucket length in seconds, number of buckets): the last 24 clock hours and the
last 7 UTC days, the current bucket counted up to now."""


@dataclasses.dataclass(frozen=True)
class Usage:
    """GPU-hours per project in consecutive buckets of ``bucket`` seconds from ``start`` to
    ``end`` (now; the last bucket is the current one, so far)."""

    window: str
    start: dt.datetime
    end: dt.datetime
    bucket: int
    projects: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ISO-8601 times, each bucket's start, GPU-hours per project and bucket and
        each project's total."""
        starts = [self.start + dt.timedelta(seconds=i * self.bucket) for i in range(WINDOWS[self.window][1])]
        return {"window": self.window, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "bucket": self.bucket, "buckets": [s.isoformat() for s in starts],
                "projects": self.projects, "total": {p: sum(h) for p, h in self.projects.items()}}


def window_start(now: dt.datetime, bucket: int, count: int) -> dt.datetime:
    """The start of the first of ``count`` buckets of ``bucket`` seconds, aligned on UTC
    multiples of ``bucket`` (clock hours, days), the last one holding ``now``."""
    seconds = now.timestamp() // bucket * bucket - (count - 1) * bucket
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def gpu_hours(session: Session, now: dt.datetime, window: str = "day") -> Usage:
    """GPU-hours each project held in each bucket of ``window`` (see the module docstring).

    Args:
        now: the window's end, timezone-aware UTC.
        window: a key of :data:`WINDOWS`.

    Raises:
        ValueError: ``window`` is not one of :data:`WINDOWS`.
    """
    if window not in WINDOWS:
        raise ValueError(f"window {window!r}: expected one of {', '.join(WINDOWS)}")
    bucket, count = WINDOWS[window]
    start = window_start(now, bucket, count)
    projects: dict[str, list[float]] = {}
    for project, began, ended, gpus in _held(session, start, now):
        hours = projects.setdefault(project, [0.0] * count)
        first = max(began, start)
        last = min(ended, now)
        for i in range(int((first - start).total_seconds() // bucket), count):
            low = start + dt.timedelta(seconds=i * bucket)
            overlap = (min(last, low + dt.timedelta(seconds=bucket)) - max(first, low)).total_seconds()
            if overlap <= 0:
                break
            hours[i] += gpus * overlap / 3600
    return Usage(window, start, now, bucket, dict(sorted(projects.items())))


def _held(session: Session, since: dt.datetime, now: dt.datetime) -> Iterator[tuple[str, dt.datetime, dt.datetime, int]]:
    """(project, start, end, GPU count) of each attempt that held GPUs between ``since`` and ``now``."""
    paused = (select(func.min(Preemption.paused))
              .where(Preemption.task_id == Attempt.task_id, Preemption.attempt == Attempt.number)
              .scalar_subquery())
    rows = session.execute(
        select(Project.name, Attempt.number, Attempt.status, Attempt.computer, Attempt.gpus, Attempt.started,
               Attempt.finished, paused.label("paused"), Task.attempt, Task.status.label("task_status"),
               Task.updated, Task.placement)
        .join(Task, Task.id == Attempt.task_id).join(Dag, Dag.id == Task.dag_id).join(Project)
        .where(Attempt.started.is_not(None), Attempt.started < now,
               or_(Attempt.finished.is_(None), Attempt.finished > since)))
    for row in rows:
        current = row.number == row.attempt
        gpus = sum(len(part.gpus) for part in holdings(row.computer, row.gpus, row.placement if current else None))
        end = _end(row, current, now)
        if gpus and end is not None:
            yield row.name, _utc(row.started), end, gpus


def _end(row, current: bool, now: dt.datetime) -> dt.datetime | None:
    """When the attempt of ``row`` let its GPUs go (now while it holds them), None when unknown."""
    if row.finished is not None:
        return _utc(row.finished)
    if row.status in ACTIVE:
        return now
    if row.paused is not None:
        return _utc(row.paused)
    if current and row.task_status is TaskStatus.paused and row.updated is not None:
        return _utc(row.updated)
    return None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)  # SQLite gives back naive UTC
