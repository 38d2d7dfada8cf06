"""``mlcomp task``: stop, resume and read the logs of one task."""
from __future__ import annotations

import time
from pathlib import Path

import click
from sqlalchemy import select

from mlcomp import control
from mlcomp.cli.common import Services, pass_services
from mlcomp.db import LogLine, Task

__all__ = ["task"]


@click.group()
def task():
    """Stop, resume and read the logs of tasks."""


@task.command("stop")
@click.argument("task_id", metavar="ID", type=int)
@pass_services
def task_stop(app: Services, task_id):
    """Stops task ID (a running task gets SIGTERM, then SIGKILL after the grace period)."""
    with app.write() as session:
        status = control.stop_task(session, task_id).status
    control.wake(app.settings)
    click.echo(f"task {task_id}: {status.value}")


@task.command("resume")
@click.argument("task_id", metavar="ID", type=int)
@click.option("--from", "from_", metavar="best|last|PATH",
              help="Checkpoint the new attempt continues from: last (last_full.pth), best "
                   "(best_full.pth), or a file relative to this folder, inside the task's logdir or "
                   "a folder of the checkpoint_dirs setting (default: the task's own choice, at first last).")
@pass_services
def task_resume(app: Services, task_id, from_):
    """Starts a new attempt of the failed, stopped or skipped task ID."""
    from_ = control.resume_from(app.settings, task_id, from_, base=Path.cwd())
    with app.write() as session:
        resumed = control.resume_task(session, task_id, from_)
        attempt = resumed.attempt
    control.wake(app.settings)
    click.echo(f"task {task_id}: attempt {attempt} waiting to run")


def _lines(app: Services, task_id: int, after: int) -> tuple[list[LogLine], dict[int, str], bool]:
    """The next lines of the task and its children (grid cells, ranks), the prefix of each
    source's lines, and whether the task has ended."""
    with app.read() as session:
        finished = control.get_task(session, task_id).status.finished
        prefixes = {task_id: "", **{i: f"[{name}] " for i, name in session.execute(
            select(Task.id, Task.name).where(Task.parent_id == task_id))}}
        lines = session.scalars(select(LogLine).where(LogLine.task_id.in_(prefixes), LogLine.id > after)
                                .order_by(LogLine.id).limit(1000)).all()
    return list(lines), prefixes, finished


@task.command("logs")
@click.argument("task_id", metavar="ID", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the task ends.")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between reads with --follow.")
@pass_services
def task_logs(app: Services, task_id, follow, poll):
    """Prints the log of task ID (every attempt, oldest first); a grid search's log includes its
    cells' lines, each prefixed with ``[cell name]``."""
    cursor = 0
    while True:
        lines, prefixes, finished = _lines(app, task_id, cursor)
        for line in lines:
            click.echo(prefixes[line.task_id] + line.text, err=line.stream == "stderr")
        cursor = lines[-1].id if lines else cursor
        if len(lines) == 1000:
            continue
        if not follow or finished:
            return
        time.sleep(poll)
