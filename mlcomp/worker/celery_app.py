"""The multi-machine transport: Celery on Redis, one queue per computer.

The supervisor commits a placement, then :class:`CeleryDispatcher` sends the task id to the queue
of the computer it was placed on (``mlcomp.<computer>``); ``mlcomp worker`` on that computer
consumes its queue with :func:`consume` and hands each id to the same
:meth:`mlcomp.worker.Worker.submit` the single-machine server calls directly. A message carries
only the task id: the store stays the source of truth, so a duplicate or late message is
harmless (``submit`` starts only a task queued on its computer and not yet running), and a lost
one is made up for by the worker's monitor, which also starts queued tasks it finds in the store.
"""
from __future__ import annotations

import logging
from celery import Celery

from mlcomp.errors import ConfigError

__all__ = ["RUN_TASK", "queue_name", "make_celery", "bind_worker", "CeleryDispatcher", "consume"]

log = logging.getLogger(__name__)

RUN_TASK = "mlcomp.run_task"
"""The Celery task name; its single argument is the mlcomp task id."""


def queue_name(computer: str) -> str:
    """The Celery queue of ``computer``'s worker."""
    return f"mlcomp.{computer}"


def make_celery(settings, *, key_prefix: str | None = None) -> Celery:
    """A Celery app on ``settings.broker_url``: no result backend (the store holds results), one
    message at a time per worker, messages acknowledged on receipt (a task's life is tracked in
    the store, not by redelivery).

    Args:
        key_prefix: prefix of every Redis key the app uses (kombu's ``global_keyprefix``), so
            several installations (or tests) share one Redis.

    Raises:
        ConfigError: ``settings.broker_url`` is not set.
    """
    if not settings.broker_url:
        raise ConfigError("broker_url is not set (MLCOMP_BROKER_URL or broker_url in config.yml); "
                          "the Celery transport needs a Redis URL such as redis://host:6379/0")
    app = Celery("mlcomp", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_create_missing_queues=True,
        broker_transport_options={"global_keyprefix": key_prefix} if key_prefix else {},
    )
    return app


def bind_worker(app: Celery, worker) -> None:
    """Registers :data:`RUN_TASK` on ``app`` so that consuming it calls ``worker.submit(task_id)``."""

    @app.task(name=RUN_TASK, ignore_result=True)
    def run_task(task_id: int) -> bool:
        started = worker.submit(int(task_id))
        log.info("celery: task %s %s", task_id, "started" if started else "not started (not queued here)")
        return started


class CeleryDispatcher:
    """Sends each placement to its computer's Celery queue (the supervisor's Dispatcher protocol).

    Args:
        app: from :func:`make_celery`.
    """

    def __init__(self, app: Celery):
        self.app = app

    def dispatch(self, task_id: int, computer: str) -> None:
        """Sends task ``task_id`` to the queue of ``computer``.

        Raises:
            kombu.exceptions.OperationalError: the broker cannot be reached (the supervisor puts
                the task back to not_ran).
        """
        self.app.send_task(RUN_TASK, args=[task_id], queue=queue_name(computer), ignore_result=True)


def consume(worker, app: Celery, **options) -> None:
    """Consumes ``worker``'s queue in this (main) thread until a signal ends it (Celery's own
    warm shutdown on SIGTERM/SIGINT), with the ``solo`` pool: ``submit`` only starts a child
    and returns, so one consumer thread is enough. ``options`` go to Celery's ``Worker``."""
    bind_worker(app, worker)
    options = {"pool": "solo", "concurrency": 1, "without_gossip": True, "without_mingle": True,
               "queues": [queue_name(worker.name)], "hostname": f"mlcomp@{worker.name}", **options}
    app.Worker(**options).start()
