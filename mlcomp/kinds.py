"""The kinds of task that run no process of their own: the composite kinds, defined once.

A task row's ``type`` is a string column: an executor's type name (``bash``, ``train``, …) or one
of the :class:`TaskKind` values below. A composite task is the parent of child tasks that do run:
a grid search's cells or an adaptive search's trials. The supervisor drives each kind through its
driver (:mod:`mlcomp.search.drivers`); the executor registry (:mod:`executors.registry`) keeps
these names for them, so no executor can take one.

This module imports nothing of the project, so every package (``executors`` included) may use it.
"""
from __future__ import annotations

import enum

__all__ = ["TaskKind", "COMPOSITE_KINDS", "is_composite"]


class TaskKind(str, enum.Enum):
    """A composite task kind. Its value is the string stored in ``task.type`` and written as
    ``type:`` in a DAG file, so a member compares equal to that string, formats and hashes as it
    (``f"{TaskKind.GRID}"`` is ``grid_search``; a set of the strings holds the member)."""

    GRID = "grid_search"
    """The parent of a grid's cells (``grid:`` on a task, or ``type: grid_search``)."""
    SEARCH = "search"
    """The parent of an adaptive search's trials (a ``search:`` block on a train task)."""

    __hash__ = str.__hash__  # hashes as its value, as it compares (Enum hashes the member's name)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


COMPOSITE_KINDS: frozenset[str] = frozenset(kind.value for kind in TaskKind)
"""The ``task.type`` strings of every composite kind."""


def is_composite(type_name: object) -> bool:
    """True when ``type_name`` (a ``task.type`` string, or None) names a composite kind: a task
    that runs no process and whose status the supervisor derives from its children."""
    return type_name in COMPOSITE_KINDS
