"""MLComp's pipes: named templates of tasks, registered by a pipe file and started later as DAGs.

A pipe file is a DAG file with ``info: {type: pipe}`` and ``pipes:`` in place of ``executors:``
(MLComp's ``examples/digit-recognizer/pipe.yml``)::

    info: {name: digits_pipes, project: examples, type: pipe, expdir: .}
    pipes:
      test:                                  # a pipe: tasks as under executors
        infer: {type: infer, dataset: {...}}

Submitting it (``mlcomp dag submit``) validates every pipe as a DAG of its own, with the same
checks and errors as a DAG file, then stores each one (:class:`~mlcomp.db.Pipe`: the file's text,
the validated task plans, the expdir's snapshot in :class:`~mlcomp.db.PipeFile`); a pipe
registered again under the same project and name is replaced. Nothing runs. :func:`start_pipe`
writes a DAG from a stored pipe without reading the user's files again (MLComp's "start pipe",
which :mod:`mlcomp.model_registry` calls for a model). As MLComp's "start pipe" added
``model_id`` and ``model_name`` to every executor of the pipe, they are added to the config of
each task whose executor keeps its keys as written (the default :meth:`Executor.validate`, as an
executor written against MLComp's API has); an executor that checks its keys gets the model
through ``TaskContext.model`` instead.
"""
from __future__ import annotations

import dataclasses

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from executors.base import Executor
from executors.registry import get_executor
from mlcomp.dag.rows import insert_ignore
from mlcomp.dag.snapshot import FileEntry, store
from mlcomp.dag.spec import DagSpec, TaskSpec
from mlcomp.dag.submit import MAX_DAG_NAME, DagPlan, TaskPlan, plan, write_tasks
from mlcomp.db import Dag, Pipe, PipeFile, Project, SnapshotFile, utcnow
from mlcomp.errors import DagError, NotFoundError
from mlcomp.kinds import is_composite

__all__ = ["register_pipes", "start_pipe", "get_pipe"]

_TUPLES = ("path", "depends", "grid_path")  # TaskSpec fields that JSON turns into lists
_FIELDS = {field.name for field in dataclasses.fields(TaskSpec)}
_OPEN = "open_keys"
"""Key of a stored task plan: True when its executor keeps any key (MLComp's model keys go in)."""


def register_pipes(session: Session, settings, spec: DagSpec, entries: list[FileEntry]) -> list[Pipe]:
    """Validates every pipe of the pipe file ``spec`` as a DAG (:func:`mlcomp.dag.submit.plan`),
    then writes them with the snapshot ``entries`` of its expdir; returns the pipes, flushed.
    Does not commit.

    Raises:
        DagError: a pipe's task is refused (unknown type, a key its executor rejects, a bad
            grid), as for a DAG file: ``FILE:LINE:`` first; nothing has been written.
    """
    plans = {name: _plan_pipe(spec, settings, name, tasks) for name, tasks in spec.pipes.items()}
    insert_ignore(session, Project, [{"name": spec.project}], ["name"])
    project_id = session.scalar(select(Project.id).where(Project.name == spec.project))
    store(session, [], entries)  # the blobs only; the pipes name them below
    pipes = []
    for name, tasks in plans.items():
        pipe = session.scalar(select(Pipe).where(Pipe.project_id == project_id, Pipe.name == name))
        if pipe is None:
            pipe = Pipe(project_id=project_id, name=name)
            session.add(pipe)
        pipe.config, pipe.tasks, pipe.source, pipe.updated = spec.text, tasks, str(spec.file.resolve()), utcnow()
        session.flush()
        session.execute(delete(PipeFile).where(PipeFile.pipe_id == pipe.id))
        if entries:
            session.execute(insert(PipeFile), [{"pipe_id": pipe.id, "path": e.path, "sha256": e.sha256}
                                               for e in entries])
        pipes.append(pipe)
    return pipes


def _plan_pipe(spec: DagSpec, settings, name: str, tasks: dict[str, TaskSpec]) -> list[dict]:
    """The validated task plans of pipe ``name`` as JSON-able dicts, each marked :data:`_OPEN`
    when its executor keeps any key."""
    (dag_plan,) = plan(dataclasses.replace(spec, name=name, tasks=tasks, pipes={}), settings)

    def row(task: TaskPlan) -> dict:
        validate = None if is_composite(task.type) else getattr(get_executor(task.type, spec.expdir).validate,
                                                                "__func__", None)  # a parent has no executor
        return {**dataclasses.asdict(task), "children": [row(child) for child in task.children],
                _OPEN: validate is Executor.validate.__func__}
    return [row(task) for task in dag_plan.tasks]


def _task_plan(row: dict, extra: dict) -> TaskPlan:
    """A :class:`TaskPlan` back from its stored dict (keys of fields since removed are dropped),
    with ``extra`` added to the config when the executor keeps any key."""
    spec = {key: value for key, value in row["spec"].items() if key in _FIELDS}
    spec.update({key: tuple(spec[key]) for key in _TUPLES if key in spec})
    config = {**row["config"], **extra} if row.get(_OPEN) else row["config"]
    return TaskPlan(name=row["name"], type=row["type"], spec=TaskSpec(**spec), config=config,
                    cell=row["cell"], children=[_task_plan(child, extra) for child in row["children"]])


def get_pipe(session: Session, project_id: int, name: str) -> Pipe:
    """Pipe ``name`` of project ``project_id``.

    Raises:
        NotFoundError: no such pipe; the message lists the project's pipes.
    """
    pipe = session.scalar(select(Pipe).where(Pipe.project_id == project_id, Pipe.name == name))
    if pipe is None:
        names = session.scalars(select(Pipe.name).where(Pipe.project_id == project_id).order_by(Pipe.name)).all()
        raise NotFoundError(f"pipe {name!r} does not exist in this project; its pipes: {', '.join(names) or 'none'} "
                            f"(register them with mlcomp dag submit PIPE_FILE)")
    return pipe


def start_pipe(session: Session, pipe: Pipe, dag_name: str, extra: dict | None = None) -> Dag:
    """Writes a DAG named ``dag_name`` from ``pipe``: its tasks as validated at registration and
    its snapshot; returns the DAG, flushed. Does not commit.

    Args:
        extra: keys added to the config of each task whose executor keeps any key (MLComp's
            ``model_id`` and ``model_name``).

    Raises:
        DagError: ``dag_name`` is longer than the store allows.
    """
    if len(dag_name) > MAX_DAG_NAME:
        raise DagError(f"DAG name {dag_name!r} is longer than {MAX_DAG_NAME} characters")
    dag = Dag(name=dag_name, project_id=pipe.project_id, config=pipe.config, source=pipe.source)
    session.add(dag)
    session.flush()
    files = select(literal(dag.id), PipeFile.path, PipeFile.sha256).where(PipeFile.pipe_id == pipe.id)
    session.execute(insert(SnapshotFile).from_select(["dag_id", "path", "sha256"], files))
    tasks = [_task_plan(row, extra or {}) for row in pipe.tasks]
    write_tasks(session, dag, DagPlan(name=dag_name, cell=None, tasks=tasks))
    return dag
