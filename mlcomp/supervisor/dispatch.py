"""How the supervisor hands an assigned task to the worker of its computer.

The supervisor commits the assignment (status queued, ``computer``, ``gpus``) before it
dispatches, so a worker always reads a placed task. :class:`LocalDispatcher` calls a worker in the
same process (the single-machine default); ``mlcomp.worker.celery_app.CeleryDispatcher`` sends to
the computer's Celery queue when several machines share a broker.
"""
from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

__all__ = ["Dispatcher", "LocalDispatcher", "RecordingDispatcher"]

log = logging.getLogger(__name__)


@runtime_checkable
class Dispatcher(Protocol):
    """Sends a committed assignment to the computer that will run it.

    A dispatcher may have a ``computers`` attribute: the names it can reach (the supervisor then
    places tasks only there); without it, or when it is None, every alive computer is reachable.
    """

    def dispatch(self, task_id: int, computer: str) -> None:
        """Hands task ``task_id`` (already queued on ``computer``) to that computer's worker.

        Raises:
            Exception: the task could not be handed over; the supervisor puts it back to not_ran.
        """


class _Submitter(Protocol):
    name: str

    def submit(self, task_id: int) -> None:
        """Starts task ``task_id`` on this computer."""


class LocalDispatcher:
    """Dispatches to in-process workers by computer name (``worker.submit(task_id)``).

    Args:
        *workers: objects with ``name`` and ``submit(task_id)`` (``mlcomp.worker.Worker``).

    Raises (from :meth:`dispatch`):
        LookupError: no local worker runs the computer named.
    """

    def __init__(self, *workers: _Submitter):
        self.workers = {w.name: w for w in workers}

    @property
    def computers(self) -> set[str]:
        """The computers of the local workers: the only ones tasks are placed on."""
        return set(self.workers)

    def dispatch(self, task_id: int, computer: str) -> None:
        """Calls ``submit(task_id)`` on the local worker of ``computer``."""
        worker = self.workers.get(computer)
        if worker is None:
            raise LookupError(f"no local worker for computer {computer!r} (local: {', '.join(self.workers)})")
        worker.submit(task_id)


class RecordingDispatcher:
    """Records ``(task_id, computer)`` pairs instead of running anything: for tests, dry runs and
    a supervisor whose workers poll the store."""

    def __init__(self):
        self.calls: list[tuple[int, str]] = []

    def dispatch(self, task_id: int, computer: str) -> None:
        """Records the call."""
        self.calls.append((task_id, computer))
