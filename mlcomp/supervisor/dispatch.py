"""How the supervisor hands an assigned task to the worker of its computer: one path.

The store is the source of truth: the supervisor commits the assignment (status queued,
``computer``, ``gpus``) before it hands it over, and every worker claims a task through one
function, :meth:`mlcomp.worker.Worker.submit`, which starts it only while it is queued on its
computer and not yet watched there. :class:`HandOver` calls it directly for a worker in the same
process (one box), sends the task id to the computer's Celery queue when a broker is configured
(many machines: ``mlcomp.worker.celery_app.CeleryDispatcher``), and otherwise leaves the
assignment in the store, where that computer's worker finds it on its next monitor pass. A lost
message, a duplicate one or a worker restart all end in the same claim.
"""
from __future__ import annotations

import logging
from typing import Iterable, Protocol, runtime_checkable

__all__ = ["Dispatcher", "HandOver", "RecordingDispatcher"]

log = logging.getLogger(__name__)


@runtime_checkable
class Dispatcher(Protocol):
    """Sends a committed assignment to the computer that will run it."""

    def dispatch(self, task_id: int, computer: str) -> None:
        """Hands task ``task_id`` (already queued on ``computer``) to that computer's worker.

        Raises:
            Exception: the task could not be handed over; the supervisor puts it back to not_ran.
        """


class _Claimer(Protocol):
    name: str

    def submit(self, task_id: int) -> bool:
        """Claims task ``task_id`` on this computer."""


class HandOver:
    """The supervisor's :class:`Dispatcher`: in-process workers by name, else ``remote``, else
    the store.

    Args:
        local: workers in this process (objects with ``name`` and ``submit(task_id)``).
        remote: a dispatcher for the other computers (``CeleryDispatcher``), or None: their
            workers read the store.
    """

    def __init__(self, local: Iterable[_Claimer] = (), remote: Dispatcher | None = None):
        self.local = {w.name: w for w in local}
        self.remote = remote

    def dispatch(self, task_id: int, computer: str) -> None:
        """Hands task ``task_id`` to ``computer``'s worker (see the module docstring).

        Raises:
            Exception: from ``remote`` (the broker cannot be reached).
        """
        if computer in self.local:
            self.local[computer].submit(task_id)
        elif self.remote is not None:
            self.remote.dispatch(task_id, computer)


class RecordingDispatcher:
    """Records ``(task_id, computer)`` pairs instead of running anything: for tests and dry runs
    (workers reading the store still claim the tasks)."""

    def __init__(self):
        self.calls: list[tuple[int, str]] = []

    def dispatch(self, task_id: int, computer: str) -> None:
        """Records the call."""
        self.calls.append((task_id, computer))
