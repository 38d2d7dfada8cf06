"""Named models and running them through pipes (MLComp's "model add" and "start pipe").

``add_model`` gives a trained run's checkpoint a name within its project: the checkpoint is copied
to ``settings.models_dir / project / <name>_weight.pth`` (MLComp's models folder and its name for a
model's weights; MLComp's ``<name>.pth`` was a traced model, which is not made here), so a later
attempt of the run cannot change the model. ``start_model`` writes a DAG from one of the project's pipes
(:mod:`mlcomp.dag.pipe`) and records it as a :class:`~mlcomp.db.ModelRun`, so the tasks of that DAG
that build on a model (``infer``, ``trace``, an executor's ``model_checkpoint``) take this one
(:func:`mlcomp.worker.lookup.registered_model`). The CLI (``mlcomp model``) and the UI share these
functions; like :mod:`mlcomp.control`, they take the caller's session and never commit.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlcomp.dag.pipe import get_pipe, start_pipe
from mlcomp.db import Dag, Model, ModelRun, Pipe, Project, Task
from mlcomp.errors import ConfigError, NotFoundError, StateError
from mlcomp.worker.lookup import task_folder, task_logdir, train_run

__all__ = ["add_model", "find_model", "start_model", "list_models", "list_pipes", "NAME"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A model's name: also its checkpoint's file name, so letters, digits, ``._-``, at most 100."""


def add_model(session: Session, settings, name: str, task_id: int, which: str = "best") -> Model:
    """Registers checkpoint ``which`` of task ``task_id`` (a train task, or a grid search's best
    cell, or a search's best trial) as model ``name`` of the task's project; returns it, flushed.

    Args:
        which: ``best``, ``last``, a file name in the run's checkpoints folder, or a path inside
            its logdir or the ``checkpoint_dirs`` setting's folders
            (:func:`mlcomp.runner.checkpoint.resolve_checkpoint`).

    Raises:
        ConfigError: a bad name; the checkpoint does not exist or lies outside those folders.
        NotFoundError: no task ``task_id``.
        ExecutorError: the task is not a succeeded train run (or grid search, search of them).
        StateError: the project already has a model of this name.
    """
    from mlcomp.runner.checkpoint import resolve_checkpoint  # torch: only for this command

    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"model name {name!r}: allowed: letters, digits, '.', '_' and '-', at most 100 "
                          f"characters, starting with a letter or digit")
    task = session.get(Task, task_id)
    if task is None:
        raise NotFoundError(f"task {task_id} does not exist")
    project = task.dag.project
    if session.scalar(select(Model.id).where(Model.project_id == project.id, Model.name == name)) is not None:
        raise StateError(f"project {project.name!r} already has a model {name!r}")
    run = train_run(session, task)
    source = resolve_checkpoint(task_logdir(settings, run.id), which, base=task_folder(settings, run.id),
                                allowed_dirs=getattr(settings, "checkpoint_dirs", ()))
    target = _copy(source, Path(settings.models_dir) / project.name / f"{name}_weight.pth")
    model = Model(project_id=project.id, name=name, task_id=run.id, which=str(which), checkpoint=str(target))
    session.add(model)
    session.flush()
    return model


def _copy(source: Path, target: Path) -> Path:
    """Copies ``source`` to ``target`` through a temporary file and a rename, so a reader never
    sees a partial checkpoint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def find_model(session: Session, name: str, project: str | None = None) -> Model:
    """Model ``name`` (of ``project`` when given).

    Raises:
        NotFoundError: no such model.
        ConfigError: several projects have a model of this name and no ``project`` chooses.
    """
    query = select(Model).join(Project, Project.id == Model.project_id).where(Model.name == name)
    models = session.scalars(query.where(Project.name == project) if project else query).all()
    if not models:
        raise NotFoundError(f"model {name!r} does not exist" + (f" in project {project!r}" if project else ""))
    if len(models) > 1:
        raise ConfigError(f"model {name!r} exists in projects {', '.join(sorted(m.project.name for m in models))}: "
                          f"say which (--project)")
    return models[0]


def start_model(session: Session, name: str, pipe: str, project: str | None = None) -> Dag:
    """Writes a DAG of the model's project from its pipe ``pipe`` whose tasks take model ``name``
    (MLComp's "start pipe"), named ``"<pipe> <model>"``; returns it, flushed. Tasks whose
    executor keeps any key also get MLComp's ``model_id`` and ``model_name``
    (:func:`mlcomp.dag.pipe.start_pipe`). The caller wakes the supervisors after its commit
    (:func:`mlcomp.control.wake`).

    Raises:
        NotFoundError: no such model, or its project has no such pipe.
        ConfigError: the model's name is ambiguous (see :func:`find_model`).
    """
    model = find_model(session, name, project)
    found = get_pipe(session, model.project_id, pipe)
    extra = {"model_id": model.id, "model_name": model.name}
    dag = start_pipe(session, found, f"{found.name} {model.name}", extra)
    session.add(ModelRun(dag_id=dag.id, model_id=model.id, pipe_id=found.id))
    session.flush()
    return dag


def list_models(session: Session, project: str | None = None) -> list[dict]:
    """Every model (of ``project`` when given), newest first: ``{id, name, project, task_id,
    task, which, checkpoint, created (a datetime), runs, pipes}``, ``runs`` counting the DAGs
    started for it and ``pipes`` naming those of its project it can run through."""
    runs = select(ModelRun.model_id, func.count().label("runs")).group_by(ModelRun.model_id).subquery()
    query = (select(Model, Project.name, Task.name, func.coalesce(runs.c.runs, 0))
             .join(Project, Project.id == Model.project_id).join(Task, Task.id == Model.task_id)
             .outerjoin(runs, runs.c.model_id == Model.id).order_by(Model.id.desc()))
    rows = session.execute(query.where(Project.name == project) if project else query).all()
    pipes: dict[int, list[str]] = {}
    for project_id, pipe in session.execute(select(Pipe.project_id, Pipe.name).order_by(Pipe.name)):
        pipes.setdefault(project_id, []).append(pipe)
    return [{"id": m.id, "name": m.name, "project": project_name, "task_id": m.task_id, "task": task_name,
             "which": m.which, "checkpoint": m.checkpoint, "created": m.created, "runs": count,
             "pipes": pipes.get(m.project_id, [])} for m, project_name, task_name, count in rows]


def list_pipes(session: Session, project: str | None = None) -> list[dict]:
    """Every registered pipe (of ``project`` when given), by project and name: ``{id, name,
    project, tasks (names, in order), source, updated (a datetime)}``."""
    query = select(Pipe, Project.name).join(Project, Project.id == Pipe.project_id).order_by(Project.name, Pipe.name)
    rows = session.execute(query.where(Project.name == project) if project else query).all()
    return [{"id": p.id, "name": p.name, "project": project_name, "tasks": [t["name"] for t in p.tasks],
             "source": p.source, "updated": p.updated} for p, project_name in rows]
