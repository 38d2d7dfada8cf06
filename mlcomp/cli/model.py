"""``mlcomp model``: name a trained run's checkpoint, list models and pipes, run a model through a
pipe (MLComp's "model add" and "start pipe"; see :mod:`mlcomp.model_registry`)."""
from __future__ import annotations

import click

from mlcomp import model_registry
from mlcomp.cli.common import Services, pass_services, table
from mlcomp.cli.dag import wake_and_wait
from mlcomp.cli.worker import gpus_callback

__all__ = ["model"]


@click.group()
def model():
    """Register models and run them through pipes."""


@model.command("add")
@click.argument("name")
@click.option("--task", "task_id", type=int, required=True,
              help="The train task (or grid search, search: its best run) whose checkpoint becomes the model.")
@click.option("--which", default="best", show_default=True, metavar="best|last|FILE|PATH",
              help="Which checkpoint of the run: best, last, a file name in its checkpoints folder, or a path.")
@pass_services
def model_add(app: Services, name, task_id, which):
    """Registers checkpoint WHICH of task ID as model NAME of the task's project."""
    with app.write() as session:
        added = model_registry.add_model(session, app.settings, name, task_id, which)
        line = f"model {added.name!r} (id {added.id}): task {added.task_id}, {added.checkpoint}"
    click.echo(line)


@model.command("list")
@click.option("--project", help="Only this project's models.")
@pass_services
def model_list(app: Services, project):
    """Lists the models, newest first, with the pipes each can run through."""
    with app.read() as session:
        rows = model_registry.list_models(session, project)
    click.echo(table([[m["id"], m["name"], m["project"], f"{m['task_id']} {m['task']}", m["which"], m["runs"],
                       ",".join(m["pipes"]), m["created"].strftime("%Y-%m-%d %H:%M:%S")] for m in rows],
                     ["id", "name", "project", "task", "which", "runs", "pipes", "created"]))


@model.command("pipes")
@click.option("--project", help="Only this project's pipes.")
@pass_services
def model_pipes(app: Services, project):
    """Lists the pipes registered by pipe files (mlcomp dag submit PIPE_FILE)."""
    with app.read() as session:
        rows = model_registry.list_pipes(session, project)
    click.echo(table([[p["id"], p["name"], p["project"], ",".join(p["tasks"]), p["source"]] for p in rows],
                     ["id", "name", "project", "tasks", "source"]))


@model.command("start")
@click.argument("name")
@click.option("--pipe", required=True, help="The pipe of the model's project to run the model through.")
@click.option("--project", help="The model's project, when several have a model NAME.")
@click.option("--wait", is_flag=True, help="Follow the tasks until they end, as `dag submit --wait`.")
@click.option("--gpus", callback=gpus_callback, metavar="0,1,…",
              help="With --wait and no server running: GPU indices the embedded worker declares.")
@pass_services
def model_start(app: Services, name, pipe, project, wait, gpus):
    """Starts a DAG from PIPE whose tasks use model NAME; prints its id ("DAG <id> submitted"
    with --wait)."""
    with app.write() as session:
        dag_id = model_registry.start_model(session, name, pipe, project).id
    click.echo(f"DAG {dag_id} submitted" if wait else dag_id)
    wake_and_wait(app, [dag_id], wait, gpus)
