"""Submission: a DAG file → Project, Dag, Task, TaskDependency and snapshot rows, all or nothing.

Everything that can be wrong with the file (YAML, service keys, dependencies, executor types and
keys, grids, snapshot size) is checked before the first row is written, so a rejected file leaves
the database as it was; the caller frames the transaction (``with sessionmaker.begin()``).

A task with a ``grid`` becomes a ``grid_search`` parent (:attr:`mlcomp.kinds.TaskKind.GRID`;
``executor_config``: ``template`` — the task's type and executor keys —, ``parallel`` and ``cells``,
checked by :func:`mlcomp.search.rollup.grid_config`; no resources, no process) and one
child per cell (``parent_id`` set, ``grid_cell`` the cell's values, named ``"{task} {cell}"``),
each child validated by the template's executor with the cell applied. Children depend on the
template's dependencies; the tasks that depend on the grid depend on the parent. A DAG-level grid
makes one DAG per cell, named ``"{name} {cell}"``. A pipe file registers its pipes instead
(:func:`mlcomp.dag.pipe.register_pipes`) and makes no DAG.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from executors.base import SubmitContext
from executors.registry import get_executor
from mlcomp.dag.rows import insert_ignore
from mlcomp.dag.snapshot import FileEntry, collect, own_paths, store
from mlcomp.dag.spec import DagSpec, TaskSpec, load_spec
from mlcomp.db import Dag, Project, Task, TaskDependency
from mlcomp.errors import DagError, ExecutorError
from mlcomp.kinds import TaskKind
from mlcomp.names import control_character
from mlcomp.search.grid import MAX_CELLS, Cell, expand_grid
from mlcomp.search.rollup import grid_config

__all__ = ["submit", "prepare", "Prepared", "plan", "write_tasks", "TaskPlan", "DagPlan"]

MAX_DAG_NAME = 200
MAX_TASK_NAME = 300


@dataclasses.dataclass
class TaskPlan:
    """A task row to write: its name, type, executor_config, grid cell and grid children."""

    name: str
    type: str
    spec: TaskSpec
    config: dict
    cell: dict | None = None
    children: list["TaskPlan"] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DagPlan:
    """A DAG row to write: its name, DAG-level grid cell and tasks in file order."""

    name: str
    cell: dict | None
    tasks: list[TaskPlan]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A DAG file read, validated and expanded, with its snapshot's files collected: all that
    :func:`submit` does before it writes, done without the store (see :func:`prepare`)."""

    spec: DagSpec
    sets: tuple[str, ...]
    plans: list[DagPlan]
    entries: list[FileEntry]


def prepare(settings, path: str | Path, sets: Iterable[str] = ()) -> Prepared:
    """Parses, validates and expands the DAG file ``path`` and collects its snapshot, touching no
    database: a writer calls it before its transaction (and SQLite's write lock) begins, then
    passes the result to :func:`submit`. A pipe file's pipes are validated when registered.

    Args:
        settings: as for :func:`submit`.
        sets: ``KEY=VALUE`` overrides by dotted path (``executors.train.gpu=2``).

    Raises:
        DagError: anything wrong with the file, its ``--set`` items, executors, grids or snapshot;
            the message starts with ``FILE:LINE:``.
    """
    sets = tuple(sets)
    spec = load_spec(path, sets)
    plans = [] if spec.pipes else plan(spec, settings)
    return Prepared(spec, sets, plans, _collect(spec, settings))


def submit(session: Session, settings, path: str | Path | Prepared, sets: Iterable[str] = ()) -> list[Dag]:
    """Parses, validates and expands the DAG file ``path`` and writes it; returns the new DAGs
    (one, or one per DAG-level grid cell), flushed so their ids are set; for a pipe file, registers
    its pipes and returns none. Does not commit.

    Args:
        settings: :class:`mlcomp.settings.Settings` (``snapshot_max_mb``, ``grid_max_cells``), or
            ``None`` for the defaults.
        path: the DAG file, or what :func:`prepare` made of it (``sets`` are then ignored), so a
            writer's transaction holds its lock only while the rows are written.
        sets: ``KEY=VALUE`` overrides by dotted path (``executors.train.gpu=2``).

    Raises:
        DagError: anything wrong with the file, its executors, grids or snapshot; the message
            starts with ``FILE:LINE:`` and nothing has been written.
    """
    prepared = path if isinstance(path, Prepared) else prepare(settings, path, sets)
    spec = prepared.spec
    if spec.pipes:
        from mlcomp.dag.pipe import register_pipes

        register_pipes(session, settings, spec, prepared.entries)
        return []
    return _write(session, spec, prepared.plans, prepared.entries, prepared.sets)


def plan(spec: DagSpec, settings=None) -> list[DagPlan]:
    """The DAGs and tasks ``spec`` expands to, every task validated by its executor.

    Raises:
        DagError: an unknown executor type, a key its executor rejects, a malformed grid, a name
            that is too long or taken twice.
    """
    limit = getattr(settings, "grid_max_cells", None) or MAX_CELLS
    dag_cells: list[Cell | None] = expand_grid(spec.grid, spec.expdir, _grid_error(spec, ("grid",)), limit) or [None]
    grids = {name: expand_grid(task.grid, spec.expdir, _grid_error(spec, task.grid_path), limit)
             for name, task in spec.tasks.items() if task.grid is not None}
    total = len(dag_cells) * max(1, sum(map(len, grids.values())))
    if total > limit:
        path = ("grid",) if spec.grid is not None else spec.tasks[next(iter(grids))].grid_path
        raise spec.error(path, f"the DAG's grids make {total} cells ({len(dag_cells)} DAG cells × "
                               f"{sum(map(len, grids.values()))} task cells); allowed: at most {limit} "
                               f"(setting grid_max_cells)")
    plans = []
    for dag_cell in dag_cells:
        name = spec.name if dag_cell is None else f"{spec.name} {dag_cell.name}"
        if len(name) > MAX_DAG_NAME:
            raise spec.error(("grid",), f"DAG name {name!r} is longer than {MAX_DAG_NAME} characters")
        if control_character(name):
            raise spec.error(("grid",), f"DAG name {name!r} has the control character {control_character(name)}; "
                                        f"allowed: grid values without control characters")
        cell = dict(dag_cell.values) if dag_cell else None
        tasks = [_plan_task(spec, settings, task, name, cell, grids.get(task.name)) for task in spec.tasks.values()]
        _unique_names(spec, tasks)
        plans.append(DagPlan(name=name, cell=cell, tasks=tasks))
    return plans


def _plan_task(spec: DagSpec, settings, task: TaskSpec, dag_name: str, dag_cell: dict | None,
               cells: list[Cell] | None) -> TaskPlan:
    try:
        cls = get_executor(task.type, spec.expdir)
    except ExecutorError as e:
        raise spec.error(task.path + ("type",), f"task {task.name!r}, key 'type': {e}") from None
    if task.preemptible is None:  # a resumable executor (train, catalyst) continues from its checkpoint
        task = dataclasses.replace(task, preemptible=cls.resumable)

    def context(name: str, cell: dict | None) -> SubmitContext:
        return SubmitContext(file=spec.file, expdir=spec.expdir, dag=dag_name, task=name, path=task.path,
                             line_of=spec.lines, grid_cell=cell, settings=settings, env=task.env)

    def validated(name: str, cell: dict | None) -> dict:
        ctx = context(name, cell)
        params = cls.apply_cell(task.params, cell, ctx) if cell else dict(task.params)
        try:
            return cls.validate(params, ctx)
        except ExecutorError as e:
            raise ctx.error(None, str(e)) from None

    if task.search is not None:  # a composite search task; the supervisor adds its trials (mlcomp.search)
        from mlcomp.search.submit import search_config

        ctx = context(task.name, dag_cell)
        return TaskPlan(task.name, TaskKind.SEARCH.value, task,
                        search_config(task, lambda: validated(task.name, dag_cell), ctx), dag_cell)
    if cells is None:
        return TaskPlan(task.name, task.type, task, validated(task.name, dag_cell), dag_cell)
    children = []
    for cell in cells:
        name, values = f"{task.name} {cell.name}", {**(dag_cell or {}), **cell.values}
        if len(name) > MAX_TASK_NAME:
            raise spec.error(task.grid_path, f"task {task.name!r}, key 'grid': cell name {name!r} is longer "
                                             f"than {MAX_TASK_NAME} characters")
        if control_character(name):
            raise spec.error(task.grid_path, f"task {task.name!r}, key 'grid': cell name {name!r} has the control "
                                             f"character {control_character(name)}; allowed: grid values without "
                                             f"control characters")
        children.append(TaskPlan(name, task.type, task, validated(name, values), values))
    template = {"type": task.type, **task.params}
    config = grid_config({"template": template, "parallel": task.parallel, "cells": len(cells)},
                         context(task.name, dag_cell).error)
    return TaskPlan(task.name, TaskKind.GRID.value, task, config, dag_cell, children)


def _grid_error(spec: DagSpec, path: tuple):
    task = f"task {path[1]!r}, " if path[0] == "executors" else ""

    def error(sub: Any, message: str) -> DagError:
        return spec.error(path + tuple(sub), f"{task}key {'.'.join(map(str, path[2:] or path))!r}: {message}")
    return error


def _unique_names(spec: DagSpec, tasks: list[TaskPlan]) -> None:
    seen = set()
    for task in tasks:
        for item in [task, *task.children]:
            if item.name in seen:
                raise spec.error(task.spec.path, f"task {task.name!r}: the name {item.name!r} is used twice "
                                                 f"(a grid cell's name collides with a task)")
            seen.add(item.name)


def _collect(spec: DagSpec, settings) -> list[FileEntry]:
    limit = getattr(settings, "snapshot_max_mb", None) or 50.0
    try:
        return collect(spec.expdir, limit, own_paths(settings) if settings is not None else ())
    except DagError as e:
        raise spec.error(("info", "expdir"), f"key 'info.expdir': {e}") from None


def _write(session: Session, spec: DagSpec, plans: list[DagPlan], entries: list[FileEntry],
           sets: tuple[str, ...]) -> list[Dag]:
    insert_ignore(session, Project, [{"name": spec.project}], ["name"])
    project_id = session.scalar(select(Project.id).where(Project.name == spec.project))
    config = spec.text + "".join(f"\n# --set {item}" for item in sets)
    dags = [Dag(name=p.name, project_id=project_id, config=config, source=str(spec.file.resolve()),
                grid_cell=p.cell) for p in plans]
    session.add_all(dags)
    session.flush()
    store(session, [dag.id for dag in dags], entries)
    for dag, dag_plan in zip(dags, plans):
        write_tasks(session, dag, dag_plan)
    return dags


def write_tasks(session: Session, dag: Dag, dag_plan: DagPlan) -> None:
    """Writes the tasks of ``dag_plan`` into ``dag`` (flushed). Bulk inserts (SQLAlchemy's ORM
    bulk INSERT with RETURNING): ids come back in file order, then one bulk UPDATE links the grid
    cells to their parents."""
    items = [item for task in dag_plan.tasks for item in [task, *task.children]]
    ids = session.scalars(insert(Task).returning(Task.id, sort_by_parameter_order=True),
                          [_task_values(dag.id, item) for item in items]).all()
    id_of = {item.name: id_ for item, id_ in zip(items, ids)}
    parents = [{"id": id_of[child.name], "parent_id": id_of[task.name]}
               for task in dag_plan.tasks for child in task.children]
    if parents:
        session.execute(update(Task), parents)
    links = [{"task_id": id_of[item.name], "depend_id": id_of[dep]}
             for task in dag_plan.tasks for item in [task, *task.children] for dep in task.spec.depends]
    if links:
        session.execute(insert(TaskDependency), links)


def _task_values(dag_id: int, task: TaskPlan) -> dict:
    """The column values of a task row (the same keys for every row, so inserts batch)."""
    spec = task.spec
    values = dict(dag_id=dag_id, name=task.name, type=task.type, priority=spec.priority,
                  executor_config=task.config, grid_cell=task.cell, gpu_min=spec.gpu_min, gpu_max=spec.gpu_max,
                  cpu=spec.cpu, memory=spec.memory, distr=spec.distr, single_node=spec.single_node,
                  computer_pin=spec.computer, env=dict(spec.env), retries=spec.retries, timeout=spec.timeout,
                  preemptible=bool(spec.preemptible))
    if task.children or task.type == TaskKind.SEARCH:  # rolled up from its cells/trials, never run, no resources
        values.update(gpu_min=0, gpu_max=0, cpu=0, memory=0.0, distr=False, single_node=True, computer_pin=None,
                      env={}, retries=0, timeout=None, preemptible=False)
    return values
