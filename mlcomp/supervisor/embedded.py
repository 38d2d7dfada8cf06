"""A supervisor and a local worker in this process: what ``mlcomp server`` runs on one machine and
what ``mlcomp dag submit --wait`` runs when no server serves the root."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Collection, Iterator

from sqlalchemy.orm import sessionmaker as SessionMaker

from mlcomp.db import open_store
from mlcomp.settings import Settings
from mlcomp.supervisor.supervisor import Supervisor

__all__ = ["LocalRun", "run_local"]


@dataclasses.dataclass
class LocalRun:
    """What :func:`run_local` started: the store, the supervisor and the worker."""

    sessionmaker: SessionMaker
    supervisor: Supervisor
    worker: object


@contextlib.contextmanager
def run_local(settings: Settings, gpus: list[int] | None = None, *, name: str | None = None,
              sessionmaker: SessionMaker | None = None, on_change: Callable[[], None] | None = None,
              interval: float = 1.0, dag_ids: Collection[int] | None = None,
              keep_tasks: bool = False) -> Iterator[LocalRun]:
    """Runs a supervisor and a registered local worker until the block ends, then shuts both down
    (the worker first, so its tasks end as the worker decides on shutdown).

    Args:
        settings: mlcomp settings; the store is ``settings.db_url`` unless ``sessionmaker`` is given.
        gpus: GPU indices the worker declares (default: the ones it detects).
        name: the computer's name (default: the worker's, the host name).
        on_change: called after each task status change the worker makes (``submit --wait``
            uses it to print changes as they happen). When a task ends, the supervisor ticks at
            once in the worker's thread that recorded the end, so its dependents start without
            waiting for another thread or an interval.
        interval: the supervisor's fallback tick interval in seconds.
        dag_ids: place and claim only these DAGs' tasks (``dag submit --wait``), so two waits
            side by side never run or stop each other's tasks; they are placed on every live
            computer whose worker claims them.
        keep_tasks: leave the running tasks running at the end (``mlcomp server``: the next
            server takes them back); by default they are stopped (``dag submit --wait``).
    """
    from mlcomp.worker import Worker  # the worker imports the executors: only when running

    store = sessionmaker or open_store(settings)
    supervisor: Supervisor | None = None

    def ended():
        if supervisor is not None:
            supervisor.wake(inline=True)

    worker = Worker(settings, store, name=name, gpus=gpus, on_change=on_change, on_end=ended, dag_ids=dag_ids)
    supervisor = Supervisor(settings, store, interval=interval, dag_ids=dag_ids)
    worker.start()  # registers the computer first, so the supervisor's first tick sees it
    try:
        supervisor.start()
        yield LocalRun(store, supervisor, worker)
    finally:
        supervisor.shutdown()
        worker.shutdown(stop_tasks=not keep_tasks)

