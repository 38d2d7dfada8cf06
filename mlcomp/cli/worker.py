"""``mlcomp worker``: run the tasks placed on this computer (one per GPU machine)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import click

from mlcomp.db import make_engine, make_sessionmaker, open_store
from mlcomp.errors import ConfigError
from mlcomp.settings import Settings

__all__ = ["worker", "gpus_option", "gpus_callback", "interruptible", "sigterm_interrupts"]


def gpus_callback(ctx, param, value):
    """Click callback of ``--gpus``: ``"0,1"`` → ``[0, 1]``, absent → None (detect).

    Raises:
        click.BadParameter: an item is not a non-negative integer, or an index repeats
            (:func:`mlcomp.worker.gpus.parse_gpus`).
    """
    from mlcomp.worker.gpus import parse_gpus

    try:
        return parse_gpus(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


gpus_option = click.option(
    "--gpus", callback=gpus_callback, metavar="0,1,…",
    help="Declare these GPU indices instead of detecting them (NVML, then torch).")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, like SIGINT, so that ``kill`` unwinds
    the caller's ``with``/``finally`` clauses (stopping its worker's tasks) instead of ending
    the process on the spot. The previous handlers come back afterwards."""

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, like SIGINT (:func:`sigterm_interrupts`),
    and both end the block quietly: the caller's ``finally`` clauses shut things down cleanly."""
    with sigterm_interrupts():
        try:
            yield
        except KeyboardInterrupt:
            pass


def ports_callback(ctx, param, value):
    """Click callback of ``--ports``: ``"29500-29599"`` → ``(29500, 29599)``.

    Raises:
        click.BadParameter: not a range FIRST-LAST of ports (:func:`mlcomp.gang.parse_ports`).
    """
    from mlcomp.gang import PORTS, parse_ports

    try:
        return PORTS if value is None else parse_ports(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("worker")
@click.option("--name", metavar="NAME", help="The computer's name (default: the host name).")
@gpus_option
@click.option("--cpus", type=click.IntRange(min=1), metavar="N",
              help="Declare this many CPUs for tasks to ask for (default: the machine's count).")
@click.option("--address", metavar="HOST",
              help="Where the other computers reach this one: the rendezvous of distributed tasks whose "
                   "rank 0 runs here (default: this machine's primary address).")
@click.option("--ports", callback=ports_callback, metavar="FIRST-LAST",
              help="Rendezvous ports for distributed tasks whose rank 0 runs here (default 29500-29599).")
def worker(name, gpus, cpus, address, ports):
    """Registers this computer and runs the tasks the supervisor places on it.

    Tasks arrive as messages on this computer's channel (Redis with MLCOMP_BROKER_URL, else
    PostgreSQL's LISTEN/NOTIFY, else a local socket), and the worker claims them in the database,
    which it also reads every few seconds for a message lost on the way. Stops on SIGINT/SIGTERM;
    its running tasks go on, and the next worker of this computer takes them back.
    """
    from mlcomp.bus import SUPERVISOR, Bus
    from mlcomp.worker import Worker

    settings = Settings.from_env()
    bus = Bus.of(settings)
    # a task's end wakes the supervisors, which place what it made ready
    # one connection for the work and one for the heartbeat, each closed when idle for a second:
    # a lab of 100 computers stays within PostgreSQL's default max_connections (100), an idle
    # computer holds none between its beats, and a beat never waits behind a long transaction
    store = open_store(settings, connections=1, idle_release=1.0)
    beats = make_sessionmaker(make_engine(settings.db_url, connections=1, idle_release=1.0))
    the_worker = Worker(settings, store, name=name, gpus=gpus, cpus=cpus, bus=bus, beats=beats,
                        on_end=lambda: bus.publish(SUPERVISOR), address=address, ports=ports)
    with interruptible():
        try:
            the_worker.start()
            click.echo(f"mlcomp worker {the_worker.name}: {len(the_worker.gpus)} GPU(s); "
                       f"tasks through {type(bus.backend).__name__[1:]}")
            threading.Event().wait()
        finally:
            the_worker.shutdown(stop_tasks=False)
    click.echo(f"mlcomp worker {the_worker.name}: stopped")
