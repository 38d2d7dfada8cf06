"""The :class:`~executors.base.TaskContext` of a task, with everything its executor needs resolved
from the store in advance: resources, the project's data folder, the model it builds on, the
checkpoint it resumes from."""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

from sqlalchemy.orm import Session, joinedload

from executors.base import LOGDIR, Executor, TaskContext
from mlcomp import gang
from mlcomp.checkpoint_names import LAST
from mlcomp.db import Dag, Task
from mlcomp.worker.lookup import resolve_model
from mlcomp.worker.report import Reporter

__all__ = ["task_context", "resolve_inputs", "resolve_resume", "fetches_carried", "data_dir_of", "WITH_PROJECT"]

log = logging.getLogger(__name__)

WITH_PROJECT = [joinedload(Task.dag, innerjoin=True).load_only(Dag.id, Dag.name, Dag.project_id, Dag.created)
                .joinedload(Dag.project, innerjoin=True)]
"""Load options reading a task with its DAG (not the DAG file's text, which can be large) and
project (the data folder) in one query."""


def task_context(task: Task, settings, reporter=None, computer: str | None = None,
                 group: dict | None = None) -> TaskContext:
    """The context of ``task`` (a row loaded with its DAG and project) under ``settings``:
    identity, folders, resources, config, grid cell, resume choice, environment, data folder.
    For a gang (:mod:`mlcomp.gang`), ``gpus`` are those of ``computer``'s part and ``group`` the
    rank group it joins."""
    folder = Path(settings.tasks_dir) / str(task.id)
    part = gang.part_of(computer, task.computer, task.gpus, task.placement) if computer else None
    gpus = list(part.gpus) if part is not None else list(task.gpus or [])
    return TaskContext(
        task_id=task.id, attempt=task.attempt, dag_id=task.dag_id, name=task.name, group=group,
        folder=folder, code_dir=folder / "code", gpus=gpus, cpu=max(1, int(task.cpu or 1)),
        distr=bool(task.distr), config=dict(task.executor_config or {}), grid_cell=task.grid_cell,
        settings=settings, resume_from=task.resume_from, reporter=reporter, env=dict(task.env or {}),
        data_dir=data_dir_of(task, settings),
    )


def data_dir_of(task: Task, settings) -> Path:
    """The data folder of ``task``'s project, ``settings.data_dir / project``, unless the task's
    ``env`` sets ``MLCOMP_DATA_DIR`` (which the child gets either way)."""
    return Path((task.env or {}).get("MLCOMP_DATA_DIR") or Path(settings.data_dir) / task.dag.project.name)


def resolve_inputs(session: Session, context: TaskContext, executor: type[Executor]) -> TaskContext:
    """``context`` made ready to run in the task's child: the data folder created, the model its
    executor builds on resolved (:meth:`~executors.base.Executor.model_checkpoint`), the
    checkpoint a resumable executor continues from (:func:`resolve_resume`), and a reporter
    factory for the processes the executor starts itself (one that also stores the content of
    full checkpoints for a task spread over computers: :mod:`mlcomp.worker.carry`).

    Raises:
        ExecutorError: the model asked for has no train run to come from.
        ConfigError: its checkpoint, or the resume checkpoint asked for, does not exist or lies
            outside the allowed folders.
    """
    context.data_dir.mkdir(parents=True, exist_ok=True)
    which = executor.model_checkpoint(context.config)
    model = None if which is None else resolve_model(session, context.settings, context.task_id, which)
    resume = resolve_resume(context) if executor.resumable else None
    options = {"carry_from": context.folder} if context.group is not None else {}  # a gang's full checkpoints
    if context.reporter is not None and context.reporter.journal is not None:  # the same journal
        options.update(journal=context.reporter.journal, computer=context.reporter.computer)
    opener = functools.partial(Reporter.connect, context.settings.db_url, context.task_id, context.attempt, **options)
    return dataclasses.replace(context, model=model, resume=resume, open_reporter=opener)


def fetches_carried(context: TaskContext, executor: type[Executor]) -> bool:
    """Whether the worker writes the checkpoints the store carries for the task of ``context``
    (:func:`mlcomp.worker.carry.fetch`) into its folder before this attempt's child starts: a
    later attempt of a gang, and a later attempt of a resumable executor that resumes from
    "last" (the attempt it continues may have paused for a preemption on another computer)."""
    if context.attempt <= 1:
        return False
    return context.group is not None or (executor.resumable and (context.resume_from or LAST) == LAST)


def resolve_resume(context: TaskContext) -> Path | None:
    """The checkpoint an attempt of the task of ``context`` continues from, or None for a fresh
    start: ``context.resume_from`` (``"last"`` by default from the second attempt on) through
    :func:`mlcomp.runner.checkpoint.resolve_checkpoint`, confined to the task's logdir and the
    ``checkpoint_dirs`` setting's folders, a path relative to the task folder. A missing
    ``last_full.pth`` starts afresh (the run stopped before its first checkpoint).

    Raises:
        ConfigError: ``best_full.pth`` or the given file does not exist, or lies outside.
    """
    from mlcomp.runner.checkpoint import resolve_checkpoint  # torch: only for a task that resumes

    choice = context.resume_from or (LAST if context.attempt > 1 else None)
    if choice is None:
        return None
    path = resolve_checkpoint(context.folder / LOGDIR, choice, full=True,
                              allowed_dirs=getattr(context.settings, "checkpoint_dirs", ()),
                              base=context.folder, missing_ok=choice == LAST)
    if path is None:
        log.warning("task %s: no last_full.pth yet; attempt %s starts afresh", context.task_id, context.attempt)
    return path
