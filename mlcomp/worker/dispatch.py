"""The dispatcher of a server whose workers may run elsewhere: placements on an in-process worker
go to it directly; the others go to their computer's Celery queue when a broker is configured, or
are left in the store, where that computer's worker finds them (its monitor starts the queued
tasks placed on it)."""
from __future__ import annotations

from typing import Iterable

__all__ = ["ServerDispatcher"]


class ServerDispatcher:
    """Routes ``dispatch(task_id, computer)`` (the supervisor's Dispatcher protocol).

    Args:
        local: in-process workers (objects with ``name`` and ``submit(task_id)``).
        remote: a dispatcher for other computers (``CeleryDispatcher``), or None: their workers
            read the store.
    """

    def __init__(self, local: Iterable = (), remote=None):
        self.local = {w.name: w for w in local}
        self.remote = remote

    def dispatch(self, task_id: int, computer: str) -> None:
        """Hands task ``task_id`` to ``computer``'s worker (see the module docstring)."""
        if computer in self.local:
            self.local[computer].submit(task_id)
        elif self.remote is not None:
            self.remote.dispatch(task_id, computer)
