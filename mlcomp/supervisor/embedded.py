"""A supervisor and a local worker in this process: what ``mlcomp server`` runs on one machine and
what ``mlcomp dag submit --wait`` runs when no server serves the root."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Collection, Iterator

from sqlalchemy.orm import sessionmaker as SessionMaker

from mlcomp.db import open_store
from mlcomp.settings import Settings
from mlcomp.supervisor.dispatch import LocalDispatcher
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
              interval: float = 1.0, listen: bool = True,
              dag_ids: Collection[int] | None = None) -> Iterator[LocalRun]:
    """Runs a supervisor and a registered local worker until the block ends, then shuts both down
    (the worker first, so its tasks end as the worker decides on shutdown).

    Args:
        settings: mlcomp settings; the store is ``settings.db_url`` unless ``sessionmaker`` is given.
        gpus: GPU indices the worker declares (default: the ones it detects).
        name: the computer's name (default: the worker's, the host name).
        on_change: called after each task status change the worker makes, besides waking the
            supervisor (``submit --wait`` uses it to print changes as they happen).
        interval: the supervisor's fallback tick interval in seconds.
        listen: listen on the root's wake socket so other processes (the CLI) can wake it and
            know that a server runs (``mlcomp server``); ``dag submit --wait`` does not listen.
        dag_ids: run only these DAGs' tasks (``dag submit --wait``), so two waits side by side,
            or a wait beside a server, never run or stop each other's tasks.
    """
    from mlcomp.worker import Worker  # the worker imports the executors: only when running

    store = sessionmaker or open_store(settings)
    supervisor: Supervisor | None = None

    def changed():
        if supervisor is not None:
            supervisor.wake()
        if on_change is not None:
            on_change()

    worker = Worker(settings, store, name=name, gpus=gpus, on_change=changed)
    supervisor = Supervisor(settings, store, LocalDispatcher(worker), interval=interval, dag_ids=dag_ids)
    worker.start()  # registers the computer first, so the supervisor's first tick sees it
    try:
        supervisor.start(listen=listen)
        yield LocalRun(store, supervisor, worker)
    finally:
        supervisor.shutdown()
        worker.shutdown()
