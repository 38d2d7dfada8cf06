"""The queue: the waiting tasks in the order the supervisor will try them, each with why it waits
(``mlcomp queue``, the UI's queue page). It runs the tick's own :func:`~mlcomp.supervisor.fairshare.plan`
on the live computers' free resources, reading only."""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from sqlalchemy.orm import Session

from mlcomp.settings import Settings
from mlcomp.supervisor.allocate import FreePool, describe_request, free_resources
from mlcomp.supervisor.fairshare import FairShare, Standing, plan
from mlcomp.supervisor.ready import classify
from mlcomp.supervisor.supervisor import active_tasks, alive_computers

__all__ = ["QueueEntry", "queue"]


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    """One waiting task in the queue (:func:`queue`).

    Attributes:
        position: 1-based place in the order the supervisor tries the tasks.
        request: the task's request in words (:func:`~mlcomp.supervisor.allocate.describe_request`).
        reason: why it waits (the reason the next tick writes, or its grid search's ``parallel``
            limit), or None when the next tick places it.
    """

    position: int
    task_id: int
    task: str
    dag_id: int
    dag: str
    project: str
    priority: int
    request: str
    status: str
    reason: str | None


_VIEWS: dict[tuple[str, float], FairShare] = {}  # the usage :func:`queue` keeps, by store and half-life
_VIEWS_LOCK = threading.Lock()


def _viewed_standing(session: Session, settings: Settings, now: dt.datetime) -> Standing:
    """:meth:`FairShare.standing` through this process's :class:`FairShare` of the store, so
    that showing the queue again reads only the attempts that ended since."""
    with _VIEWS_LOCK:
        key = (settings.db_url, float(settings.fairshare_half_life))
        return _VIEWS.setdefault(key, FairShare(settings)).standing(session, now)


def queue(session: Session, settings: Settings, now: dt.datetime) -> list[QueueEntry]:
    """The waiting tasks of every DAG (not run and ready, or paused by preemption) in the order
    a supervisor of every DAG will try them at ``now``, each with why it waits: the decisions of
    :func:`plan` on the live computers' free resources (reads only), then the grid cells held
    back by their grid search's ``parallel`` limit, in priority order."""
    found = classify(session)
    alive = [c for c in alive_computers(session, settings, now) if c.dag_ids is None]  # a worker of every DAG
    pool = FreePool(free_resources(alive, [t for t in active_tasks(session) if t.computer is not None]))
    decisions = plan(found.ready, _viewed_standing(session, settings, now), settings, pool)
    waiting = [(d.row, d.where if isinstance(d.where, str) else None) for d in decisions] + found.held
    return [QueueEntry(position=i, task_id=row.id, task=row.name, dag_id=row.dag_id, dag=row.dag, project=row.project,
                       priority=row.priority, request=describe_request(row), status=row.status.value, reason=reason)
            for i, (row, reason) in enumerate(waiting, 1)]
