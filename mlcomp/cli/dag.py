"""``mlcomp dag``: submit, list, show, stop and resume DAGs, and set their priority."""
from __future__ import annotations

import json
import threading

import click
from sqlalchemy import func, select

from mlcomp import control
from mlcomp.cli.common import Services, follow_dags, pass_services, table
from mlcomp.cli.worker import gpus_callback, sigterm_interrupts
from mlcomp.db import Dag, Project, Task, TaskDependency, utcnow
from mlcomp.lifecycle import counted_status, rollup_status
from mlcomp.kinds import TaskKind
from mlcomp.search.board import leaderboard

__all__ = ["dag", "dag_json", "wake_and_wait"]


@click.group()
def dag():
    """Submit and manage DAGs."""


@dag.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the tasks until they end; exit 0 only if all succeeded.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a value of FILE by dotted path, e.g. executors.train.gpu=2 (repeatable).")
@click.option("--gpus", callback=gpus_callback, metavar="0,1,…",
              help="With --wait and no server running: GPU indices the embedded worker declares.")
@pass_services
def dag_submit(app: Services, file, wait, sets, gpus):
    """Submits the DAG in FILE and prints its id (one per line for a DAG-level grid; with --wait,
    "DAG <id> submitted", then the tasks' status changes and epochs).

    With --wait and no `mlcomp server` answering (for MLCOMP_ROOT on this machine, or through
    the broker), a supervisor and a local worker run in this process until the DAG ends.
    """
    from mlcomp.dag.submit import prepare

    prepared = prepare(app.settings, file, sets)  # parsed and checked before SQLite's write lock is taken
    with app.write() as session:
        ids = [d.id for d in control.submit_dag(session, app.settings, prepared)]
    if not ids:  # a pipe file (mlcomp.dag.pipe): registered, nothing runs
        click.echo(f"{file}: pipes registered; see them with mlcomp model pipes")
        return
    for dag_id in ids:  # the bare ids for scripts; a sentence when a person follows the run
        click.echo(f"DAG {dag_id} submitted" if wait else dag_id)
    wake_and_wait(app, ids, wait, gpus)


def wake_and_wait(app: Services, ids: list[int], wait: bool, gpus: list[int] | None) -> None:
    """Wakes the server; with ``wait`` follows the DAGs and exits 1 unless every task succeeded.

    When no server serves the store (no supervisor's heartbeat row is fresh), a supervisor and a local worker
    run here for these DAGs only, placing them on every live computer; SIGINT or SIGTERM then
    stops their running tasks (SIGTERM, grace, SIGKILL) and exits 1 ("Aborted!")."""
    control.wake(app.settings)
    served = _supervised(app)
    if not wait:
        if not served:  # on stderr: stdout keeps only the ids, for scripts
            click.echo(f"note: no mlcomp server serves {app.settings.root}; the tasks wait until one runs "
                       f"(mlcomp server), or follow them here with --wait", err=True)
        return
    if served:
        ok = follow_dags(app.store, ids, click.echo)
    else:
        from mlcomp.supervisor.embedded import run_local

        changed = threading.Event()  # SIGTERM, like Ctrl-C, stops this process's tasks before it exits
        with sigterm_interrupts(), run_local(app.settings, gpus, sessionmaker=app.store, on_change=changed.set,
                                             dag_ids=ids):
            ok = follow_dags(app.store, ids, click.echo, changed)
    _print_results(app, ids)
    if not ok:
        raise click.exceptions.Exit(1)


def _supervised(app: Services) -> bool:
    """Whether a server's supervisor, on any machine, serves the store (its heartbeat row)."""
    from mlcomp.supervisor.supervisor import serving

    with app.read() as session:
        return serving(session, app.settings, utcnow())


def _print_results(app: Services, ids: list[int]) -> None:
    """After ``--wait``: each grid search's best cell, the ``metrics`` of each task's result
    (an infer task's test accuracy) and the files it names (``result["paths"]``: data files,
    best checkpoints, predictions, traced models)."""
    with app.store.begin() as session:
        for t in session.scalars(select(Task).where(Task.dag_id.in_(ids)).order_by(Task.id)):
            result = t.result if isinstance(t.result, dict) else {}
            if result.get("best_task_id") is not None and result.get("metric") is not None:  # a bash grid has none
                click.echo(f"task {t.id} {t.name!r}: best cell is task {result['best_task_id']} "
                           f"{result.get('best_params')} with {result.get('metric')}={result.get('best_value')}")
            metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
            if metrics:
                click.echo(f"task {t.id} {t.name!r}: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                                   f"{k}={v}" for k, v in metrics.items()))
            paths = result.get("paths") if isinstance(result.get("paths"), dict) else {}
            for label, path in paths.items():
                click.echo(f"task {t.id} {t.name!r}: {label}: {path}")


@dag.command("list")
@click.option("--limit", default=20, show_default=True, help="How many of the latest DAGs to show.")
@pass_services
def dag_list(app: Services, limit):
    """Lists the latest DAGs with their derived status and task count."""
    with app.read() as session:
        dags = session.execute(select(Dag.id, Dag.name, Project.name, Dag.created).join(Project)
                               .order_by(Dag.id.desc()).limit(limit)).all()
        ids = [d[0] for d in dags]
        statuses: dict[int, list] = {i: [] for i in ids}
        preempted = Task.preempted_by.is_not(None)
        for dag_id, status, paused_for, count in session.execute(
                select(Task.dag_id, Task.status, preempted, func.count()).where(Task.dag_id.in_(ids))
                .group_by(Task.dag_id, Task.status, preempted)):
            statuses[dag_id] += [counted_status(status, paused_for)] * count
    rows = [[i, name, project, rollup_status(statuses[i]).value, len(statuses[i]),
             created.strftime("%Y-%m-%d %H:%M:%S")] for i, name, project, created in dags]
    click.echo(table(rows, ["id", "name", "project", "status", "tasks", "created"]))


def dag_json(session, dag_id: int) -> dict:
    """A DAG and its tasks as the JSON document of ``mlcomp dag show --json``.

    Raises:
        NotFoundError: no such DAG.
    """
    dag_row = control.get_dag(session, dag_id)
    tasks = session.scalars(select(Task).where(Task.dag_id == dag_id).order_by(Task.id)).all()
    names = {t.id: t.name for t in tasks}
    depends: dict[int, list[str]] = {t.id: [] for t in tasks}
    for task_id, depend_id in session.execute(
            select(TaskDependency.task_id, TaskDependency.depend_id)
            .where(TaskDependency.task_id.in_(list(names))).order_by(TaskDependency.depend_id)):
        depends[task_id].append(names[depend_id])
    return {
        "id": dag_row.id, "name": dag_row.name, "status": rollup_status(counted_status(t.status, t.preempted_by is not None) for t in tasks).value,
        "tasks": [{
            "id": t.id, "name": t.name, "type": t.type, "status": t.status.value, "attempt": t.attempt,
            "computer": t.computer, "gpus": list(t.gpus or []), "depends": depends[t.id],
            "parent": names.get(t.parent_id), "waiting_reason": t.waiting_reason, "result": t.result,
            **({"trials": leaderboard(session, t)} if t.type == TaskKind.SEARCH else {}),
        } for t in tasks],
    }


@dag.command("show")
@click.argument("dag_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the DAG as JSON.")
@pass_services
def dag_show(app: Services, dag_id, as_json):
    """Shows DAG ID and its tasks."""
    with app.read() as session:
        doc = dag_json(session, dag_id)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"dag {doc['id']} {doc['name']!r}: {doc['status']}")
    rows = [[t["id"], t["name"], t["type"], t["status"], t["attempt"], t["computer"],
             ",".join(map(str, t["gpus"])), ",".join(t["depends"]), t["waiting_reason"]] for t in doc["tasks"]]
    click.echo(table(rows, ["id", "name", "type", "status", "attempt", "computer", "gpus", "depends", "waiting"]))
    for t in doc["tasks"]:
        if "trials" in t:  # a search: its trials, best first
            click.echo(f"\nsearch {t['name']!r}: {len(t['trials'])} trials, best first")
            rows = [[r["number"], r["task_id"], r["status"], r["rung"], r["epochs"],
                     None if r["value"] is None else f"{r['value']:.4f}",
                     " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()),
                     "*" if r["best"] else ""] for r in t["trials"]]
            click.echo(table(rows, ["trial", "task", "status", "rung", "epochs", t["trials"][0]["metric"] if t["trials"]
                                    else "metric", "params", "best"]))


@dag.command("stop")
@click.argument("dag_id", metavar="ID", type=int)
@pass_services
def dag_stop(app: Services, dag_id):
    """Stops every task of DAG ID that has not ended."""
    with app.write() as session:
        count = len(control.stop_dag(session, dag_id))
    control.wake(app.settings)
    click.echo(f"dag {dag_id}: stop requested for {count} task(s)")


@dag.command("priority", context_settings={"ignore_unknown_options": True})  # N may be negative: -5
@click.argument("dag_id", metavar="ID", type=int)
@click.argument("priority", metavar="N", type=int)
@pass_services
def dag_priority(app: Services, dag_id, priority):
    """Sets priority N on the tasks of DAG ID that have not finished (waiting, queued, running,
    paused); higher runs first, and may preempt running tasks of lower priority."""
    with app.write() as session:
        count = len(control.set_dag_priority(session, dag_id, priority))
    control.wake(app.settings)
    click.echo(f"dag {dag_id}: priority {priority} set on {count} task(s)")


@dag.command("resume")
@click.argument("dag_id", metavar="ID", type=int)
@click.option("--wait", is_flag=True, help="Follow the tasks until they end, as `dag submit --wait`.")
@click.option("--gpus", callback=gpus_callback, metavar="0,1,…",
              help="With --wait and no server running: GPU indices the embedded worker declares.")
@pass_services
def dag_resume(app: Services, dag_id, wait, gpus):
    """Resumes the failed, stopped and skipped tasks of DAG ID; what succeeded does not run again."""
    with app.write() as session:
        count = len(control.resume_dag(session, dag_id))
    click.echo(f"dag {dag_id}: {count} task(s) resumed")
    wake_and_wait(app, [dag_id], wait, gpus)
