"""The drivers of the composite task kinds: what the supervisor's tick calls for each, without
branching on a type name.

A composite task (:class:`mlcomp.kinds.TaskKind`) runs no process: once ready the supervisor moves
it to ``in_progress`` and its children (a grid's cells, a search's trials) run as ordinary tasks.
Each tick then calls every driver of :data:`DRIVERS`, in order, with the ids of the active tasks
of its kind; the driver moves them along in the tick's transaction:

* :attr:`~mlcomp.kinds.TaskKind.GRID` — :func:`mlcomp.search.rollup.rollup_grid_parents`: a parent
  ends when every cell has ended;
* :attr:`~mlcomp.kinds.TaskKind.SEARCH` — :func:`mlcomp.search.step.advance_searches`: rungs,
  promotions, pruning, new trials and the search's end.

Drivers take the caller's session and never commit.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable, Collection, Iterable

from sqlalchemy.orm import Session

from mlcomp.kinds import TaskKind
from mlcomp.search.rollup import rollup_grid_parents
from mlcomp.search.step import advance_searches

__all__ = ["CompositeDriver", "DRIVERS", "advance_all"]


@dataclasses.dataclass(frozen=True)
class CompositeDriver:
    """How the supervisor moves the running parents of one composite kind along.

    Attributes:
        kind: the kind driven (the ``task.type`` of its parents).
        step: ``step(session, now, task_ids)`` → how many parents changed; ``task_ids`` are the
            active (``in_progress`` or ``stopping``) parents of ``kind`` the tick read; the step
            itself reads those that are still active.
    """

    kind: TaskKind
    step: Callable[[Session, dt.datetime, Collection[int] | None], int]

    def advance(self, session: Session, now: dt.datetime, task_ids: Collection[int]) -> int:
        """Moves the active parents ``task_ids`` of this kind along (``now``: an aware UTC
        datetime, the tick's time); returns how many changed status. Does not commit; an empty
        ``task_ids`` reads nothing."""
        return self.step(session, now, task_ids)


DRIVERS: dict[TaskKind, CompositeDriver] = {
    TaskKind.GRID: CompositeDriver(TaskKind.GRID, rollup_grid_parents),
    TaskKind.SEARCH: CompositeDriver(TaskKind.SEARCH, advance_searches),
}
"""The driver of each composite kind, in the order a tick calls them (every kind has one)."""


def advance_all(session: Session, now: dt.datetime, active: Iterable) -> int:
    """Calls each driver of :data:`DRIVERS`, in order, with the ids of the rows of ``active`` (the
    tick's active tasks: anything with ``id`` and ``type``) of its kind; returns how many parents
    changed status in all. Does not commit."""
    by_kind: dict[str, list[int]] = {kind.value: [] for kind in DRIVERS}
    for row in active:
        if row.type in by_kind:
            by_kind[row.type].append(row.id)
    return sum(driver.advance(session, now, by_kind[kind.value]) for kind, driver in DRIVERS.items())
