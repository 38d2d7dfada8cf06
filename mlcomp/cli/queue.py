"""``mlcomp queue``: the waiting tasks in the order they will run, and each project's GPU-hours."""
from __future__ import annotations

import dataclasses
import json

import click

from mlcomp.cli.common import Services, pass_services, table
from mlcomp.db import utcnow
from mlcomp.supervisor.queue import queue as waiting
from mlcomp.usage import WINDOWS, gpu_hours

__all__ = ["queue"]

COLUMNS = ["position", "task_id", "task", "dag", "project", "priority", "request", "reason"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the queue (and the usage) as JSON.")
@click.option("--usage", is_flag=True, help="Also print each project's GPU-hours over the last day and week.")
@pass_services
def queue(app: Services, as_json, usage):
    """Lists the waiting tasks in the order the supervisor will run them: position, task id and
    name, DAG, project, priority, request and why each waits."""
    now = utcnow()
    with app.read() as session:
        entries = [dataclasses.asdict(e) for e in waiting(session, app.settings, now)]
        hours = {w: gpu_hours(session, now, w).as_dict() for w in WINDOWS} if usage else None
    if as_json:
        click.echo(json.dumps({"queue": entries, **({"usage": hours} if usage else {})}, indent=2))
        return
    click.echo(table([[e[c] for c in COLUMNS] for e in entries], COLUMNS) if entries else "No task waits.")
    if usage:
        click.echo("\n" + _usage_table(hours))


def _usage_table(hours: dict) -> str:
    """Each project's GPU-hours over each window of ``hours`` (window → Usage as a dict)."""
    projects = sorted({p for h in hours.values() for p in h["total"]})
    if not projects:
        return "No GPU was held in the last week."
    rows = [[p, *(f"{hours[w]['total'].get(p, 0.0):.2f}" for w in WINDOWS)] for p in projects]
    return "GPU-hours\n" + table(rows, ["project", *(f"last {w}" for w in WINDOWS)])
