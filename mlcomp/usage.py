"""GPU-hours per project: how many GPU-hours each project's tasks held, bucket by bucket, over
the last day (hourly) or the last week (daily), as Slurm's ``sreport`` accounts a cluster's
use by account.

An attempt holds its GPUs from ``Attempt.started`` to its end, ``Attempt.finished`` (stamped by
:mod:`mlcomp.lifecycle` when the attempt ends finished or paused), or now while it is active
(queued, in progress, stopping). Its GPUs are ``Attempt.gpus`` on one computer, or every part of
a gang (:func:`mlcomp.gang.holdings`), whose placement record only the task's current attempt
keeps. Each attempt is clipped to the window. :func:`attempts_held` reads them, for this module
and for the supervisor's fair share (:mod:`mlcomp.supervisor.fairshare`).

Both the CLI (``mlcomp queue --usage``) and the UI (the queue page's plot) show it, so it lives
here and not in ``ui/``: the CLI must not import Flask.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Iterator, NamedTuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mlcomp.db import Attempt, Dag, Project, Task, as_utc
from mlcomp.gang import holdings
from mlcomp.lifecycle import ACTIVE

__all__ = ["WINDOWS", "Usage", "Held", "attempts_held", "gpu_hours", "window_start"]

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
    for held in attempts_held(session, start, now):
        hours = projects.setdefault(held.project, [0.0] * count)
        first = max(held.start, start)
        last = min(held.end or now, now)
        for i in range(int((first - start).total_seconds() // bucket), count):
            low = start + dt.timedelta(seconds=i * bucket)
            overlap = (min(last, low + dt.timedelta(seconds=bucket)) - max(first, low)).total_seconds()
            if overlap <= 0:
                break
            hours[i] += held.gpus * overlap / 3600
    return Usage(window, start, now, bucket, dict(sorted(projects.items())))


class Held(NamedTuple):
    """One attempt's hold on GPUs: ``gpus`` GPUs (every part of a gang counted) of ``project``
    from ``start`` to ``end`` (timezone-aware UTC; ``end`` None while the attempt is active)."""

    attempt: int
    project: str
    start: dt.datetime
    end: dt.datetime | None
    gpus: int


def attempts_held(session: Session, since: dt.datetime | None, now: dt.datetime) -> Iterator[Held]:
    """The attempts that held GPUs at some time after ``since`` (None: ever) and before ``now``:
    started before ``now`` and active or ended after ``since`` (attempts without GPUs left out)."""
    ended = Attempt.finished.is_not(None) if since is None else Attempt.finished > since
    rows = session.execute(
        select(Attempt.id, Project.name, Attempt.number, Attempt.computer, Attempt.gpus, Attempt.started,
               Attempt.finished, Task.attempt, Task.placement)
        .join(Task, Task.id == Attempt.task_id).join(Dag, Dag.id == Task.dag_id)
        .join(Project, Project.id == Dag.project_id)
        .where(Attempt.started.is_not(None), Attempt.started < now, or_(Attempt.status.in_(ACTIVE), ended)))
    for row in rows:
        placement = row.placement if row.number == row.attempt else None
        gpus = sum(len(part.gpus) for part in holdings(row.computer, row.gpus, placement))
        if gpus:
            end = as_utc(row.finished)
            yield Held(row.id, row.name, as_utc(row.started), end, gpus)
