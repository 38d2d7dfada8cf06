"""``mlcomp computer``: the machines with a worker."""
from __future__ import annotations

import datetime as dt

import click
from sqlalchemy import func, select

from mlcomp.cli.common import Services, pass_services, table
from mlcomp.db import Computer, Task, as_utc, utcnow
from mlcomp.lifecycle import ACTIVE

__all__ = ["computer"]


@click.group()
def computer():
    """List the computers that run tasks."""


def _age(heartbeat: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if heartbeat is None else (now - as_utc(heartbeat)).total_seconds()


@computer.command("list")
@pass_services
def computer_list(app: Services):
    """Lists computers: GPUs, CPUs, memory (GB), last heartbeat and running tasks."""
    now = utcnow()
    with app.read() as session:
        computers = session.scalars(select(Computer).order_by(Computer.name)).all()
        running = dict(session.execute(select(Task.computer, func.count()).where(Task.status.in_(ACTIVE))
                                       .group_by(Task.computer)).all())
    rows = []
    for c in computers:
        age = _age(c.heartbeat, now)
        alive = age is not None and age <= app.settings.heartbeat_ttl
        gpus = ",".join(str(g["index"] if isinstance(g, dict) else g) for g in c.gpus or []) or "-"
        rows.append([c.name, c.address, gpus, c.cpu, f"{c.memory:g}",
                     "never" if age is None else f"{age:.0f} s ago", "alive" if alive else "dead",
                     running.get(c.name, 0)])
    click.echo(table(rows, ["name", "address", "gpus", "cpu", "memory", "heartbeat", "state", "tasks"]))
