"""``mlcomp worker``: run the tasks placed on this computer (one per GPU machine)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import click

from mlcomp.db import open_store
from mlcomp.errors import ConfigError
from mlcomp.settings import Settings

__all__ = ["worker", "gpus_option", "interruptible"]


def _parse_gpus(ctx, param, value):
    from mlcomp.worker.gpus import parse_gpus

    try:
        return parse_gpus(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


gpus_option = click.option(
    "--gpus", callback=_parse_gpus, metavar="0,1,…",
    help="Declare these GPU indices instead of detecting them (NVML, then torch).")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, like SIGINT, and both end the block
    quietly: the caller's ``finally`` clauses shut things down cleanly. The previous handlers come
    back afterwards."""

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("worker")
@click.option("--name", metavar="NAME", help="The computer's name (default: the host name).")
@gpus_option
def worker(name, gpus):
    """Registers this computer and runs the tasks the supervisor places on it.

    With MLCOMP_BROKER_URL set, tasks arrive through this computer's Celery queue; without it the
    worker takes the tasks placed on it from the shared database. Stops on SIGINT/SIGTERM after
    stopping its running tasks.
    """
    from mlcomp.control import wake
    from mlcomp.worker import Worker, consume, make_celery

    settings = Settings.from_env()
    # a task's end wakes the server's supervisor (socket on this machine, Redis across machines)
    the_worker = Worker(settings, open_store(settings), name=name, gpus=gpus, on_end=lambda: wake(settings))
    with interruptible():
        try:
            the_worker.start()
            transport = "Celery queue" if settings.broker_url else "database"
            click.echo(f"mlcomp worker {the_worker.name}: {len(the_worker.gpus)} GPU(s); "
                       f"tasks from its {transport}")
            if settings.broker_url:
                consume(the_worker, make_celery(settings))  # Celery's warm shutdown on signals
            else:
                threading.Event().wait()
        finally:
            the_worker.shutdown()
    click.echo(f"mlcomp worker {the_worker.name}: stopped")
