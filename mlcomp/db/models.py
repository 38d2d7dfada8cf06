"""The store's tables: SQLAlchemy 2 typed declarative models.

The database is the source of truth for DAGs, tasks, computers, logs, metrics, checkpoints and
code snapshots. Times are timezone-aware UTC; resources are counts (GPUs, CPUs) and gigabytes
(memory); GPU indices are the computer's physical indices.
"""
from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "TaskStatus",
    "FINISHED",
    "Project",
    "Dag",
    "Task",
    "TaskDependency",
    "Attempt",
    "Computer",
    "Supervisor",
    "SupervisorLease",
    "UiSession",
    "LogLine",
    "Metric",
    "Checkpoint",
    "SnapshotBlob",
    "SnapshotFile",
    "SearchTrial",
    "SearchRung",
    "Pipe",
    "PipeFile",
    "Model",
    "ModelRun",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time read from the store, timezone-aware UTC: SQLite gives back naive datetimes of the
    UTC times written; None stays None."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class TaskStatus(str, enum.Enum):
    """A task's life cycle (DESIGN §4). Only ``mlcomp.db.status.set_task_status`` changes it."""

    not_ran = "not_ran"
    queued = "queued"
    in_progress = "in_progress"
    stopping = "stopping"
    success = "success"
    failed = "failed"
    stopped = "stopped"
    skipped = "skipped"
    paused = "paused"  # a search trial at a rung: checkpointed, no process, may be promoted
    pruned = "pruned"  # a search trial stopped early for good by its scheduler

    @property
    def finished(self) -> bool:
        """True for the statuses a task ends in."""
        return self in FINISHED


FINISHED = frozenset({TaskStatus.success, TaskStatus.failed, TaskStatus.stopped, TaskStatus.skipped,
                      TaskStatus.pruned})

intpk = Annotated[int, mapped_column(primary_key=True)]
timestamp = Annotated[dt.datetime, mapped_column(DateTime(timezone=True), default=utcnow)]
opt_timestamp = Annotated[dt.datetime | None, mapped_column(DateTime(timezone=True))]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (Alembic ``naming.rst``)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    """A named group of DAGs; its data folder is ``settings.data_dir / name``."""

    __tablename__ = "project"
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[timestamp]
    dags: Mapped[list["Dag"]] = relationship(back_populates="project")

    def __repr__(self):
        return f"Project(id={self.id}, name={self.name!r})"


class Dag(Base):
    """One submitted pipeline: its YAML text, its code snapshot and its tasks."""

    __tablename__ = "dag"
    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    config: Mapped[str] = mapped_column(Text)  # the submitted YAML, as written
    source: Mapped[str | None] = mapped_column(String(1000))  # the file it came from
    grid_cell: Mapped[dict[str, Any] | None]  # values of a DAG-level grid cell
    tags: Mapped[list[Any] | None]  # labels set in the UI, e.g. ["baseline", "lr-sweep"]
    note: Mapped[str | None] = mapped_column(Text)  # free text set in the UI
    created: Mapped[timestamp]
    project: Mapped[Project] = relationship(back_populates="dags")
    tasks: Mapped[list["Task"]] = relationship(back_populates="dag", order_by="Task.id")
    files: Mapped[list["SnapshotFile"]] = relationship(back_populates="dag")

    def __repr__(self):
        return f"Dag(id={self.id}, name={self.name!r})"


class Task(Base):
    """One unit of work of a DAG, run by an executor of ``type`` on an allocated computer.

    ``gpu_min``/``gpu_max`` are the requested GPU count (an int request has min == max), ``cpu`` a
    CPU count, ``memory`` gigabytes. ``gpus`` are the allocated physical GPU indices on
    ``computer``. ``parent_id`` links a grid cell to its ``grid_search`` task (and a distributed
    rank to its task). ``attempt`` counts from 1; resume starts attempt + 1.
    """

    __tablename__ = "task"
    id: Mapped[intpk]
    dag_id: Mapped[int] = mapped_column(ForeignKey("dag.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    type: Mapped[str] = mapped_column(String(100))
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, native_enum=False, length=20), default=TaskStatus.not_ran, index=True
    )
    attempt: Mapped[int] = mapped_column(default=1)
    priority: Mapped[int] = mapped_column(default=0)
    executor_config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # executor-specific keys
    grid_cell: Mapped[dict[str, Any] | None]  # this cell's parameter values
    gpu_min: Mapped[int] = mapped_column(default=0)
    gpu_max: Mapped[int] = mapped_column(default=0)
    cpu: Mapped[int] = mapped_column(default=1)
    memory: Mapped[float] = mapped_column(Float, default=0.0)
    distr: Mapped[bool] = mapped_column(default=False)
    single_node: Mapped[bool] = mapped_column(default=True)
    computer_pin: Mapped[str | None] = mapped_column(String(200))
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    retries: Mapped[int] = mapped_column(default=0)
    timeout: Mapped[float | None] = mapped_column(Float)  # seconds
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("task.id"), index=True)
    computer: Mapped[str | None] = mapped_column(ForeignKey("computer.name"), index=True)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    pid: Mapped[int | None]
    created: Mapped[timestamp]
    queued: Mapped[opt_timestamp]
    started: Mapped[opt_timestamp]
    finished: Mapped[opt_timestamp]
    updated: Mapped[opt_timestamp]
    reason: Mapped[str | None] = mapped_column(Text)  # why it is in its status
    waiting_reason: Mapped[str | None] = mapped_column(Text)  # why a ready task waits
    progress: Mapped[dict[str, Any] | None]  # {stage, epoch, epochs, batch, batches, eta}
    result: Mapped[dict[str, Any] | None]
    resume_from: Mapped[str | None] = mapped_column(String(1000))  # checkpoint for the next attempt
    # a gang's parts on several computers (mlcomp.gang); None is SQL NULL, so "IS NOT NULL" finds gangs
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # may the supervisor pause it for a task of higher priority (train and catalyst by default)
    preemptible: Mapped[bool] = mapped_column(default=False)
    # the task it is pausing or paused for (stopping → paused); None once it runs again
    preempted_by: Mapped[int | None] = mapped_column(ForeignKey("task.id"))

    dag: Mapped[Dag] = relationship(back_populates="tasks")
    parent: Mapped["Task | None"] = relationship(remote_side="Task.id", back_populates="children",
                                                 foreign_keys="Task.parent_id")
    children: Mapped[list["Task"]] = relationship(back_populates="parent", foreign_keys="Task.parent_id")
    attempts: Mapped[list["Attempt"]] = relationship(back_populates="task", order_by="Attempt.number")

    __table_args__ = (UniqueConstraint("dag_id", "name"),)

    def __repr__(self):
        return f"Task(id={self.id}, name={self.name!r}, status={self.status.value})"


class TaskDependency(Base):
    """``task_id`` waits for ``depend_id``."""

    __tablename__ = "task_dependency"
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), primary_key=True)
    depend_id: Mapped[int] = mapped_column(ForeignKey("task.id"), primary_key=True, index=True)


class Attempt(Base):
    """One run of a task: where it ran, when, and how it ended."""

    __tablename__ = "attempt"
    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    number: Mapped[int]
    status: Mapped[TaskStatus] = mapped_column(Enum(TaskStatus, native_enum=False, length=20))
    computer: Mapped[str | None] = mapped_column(String(200))
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    started: Mapped[opt_timestamp]
    finished: Mapped[opt_timestamp]
    reason: Mapped[str | None] = mapped_column(Text)
    resume_from: Mapped[str | None] = mapped_column(String(1000))
    log_offsets: Mapped[dict[str, Any] | None]  # bytes of stdout/stderr read into log_line rows
    task: Mapped[Task] = relationship(back_populates="attempts")

    __table_args__ = (UniqueConstraint("task_id", "number"),)


class Preemption(Base):
    """One preemption of ``task_id`` (in its attempt ``attempt``) for the higher-priority task
    ``by_task_id``: when the supervisor asked it to pause (``requested``), when its process ended
    paused (``paused``) and when it was placed again (``resumed``); times in UTC."""

    __tablename__ = "preemption"
    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    attempt: Mapped[int]
    by_task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    requested: Mapped[timestamp]
    paused: Mapped[opt_timestamp]
    resumed: Mapped[opt_timestamp]


class ReportJournal(Base):
    """How far an attempt's report journal (``attempts/N/reports`` on ``computer``: the log lines,
    metrics, progress, checkpoint records and result its processes reported) has been replayed
    into the store, in bytes; written in the same transaction as the rows it covers, so each entry
    reaches the store exactly once (:mod:`mlcomp.worker.report`)."""

    __tablename__ = "report_journal"
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(primary_key=True)
    computer: Mapped[str] = mapped_column(String(200), primary_key=True)
    replayed: Mapped[int] = mapped_column(BigInteger, default=0)


class Supervisor(Base):
    """A running supervisor: ``id`` is unique per process, ``heartbeat`` is refreshed every
    ``heartbeat_ttl / 3`` seconds, so a process sharing the store knows whether one serves it."""

    __tablename__ = "supervisor"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SupervisorLease(Base):
    """Which supervisor of every DAG is the active one (:mod:`mlcomp.supervisor.lease`): one row,
    ``name`` ``"supervisor"``; ``holder`` is a :class:`Supervisor` id (NULL: released),
    ``expires`` when the lease lapses unless its holder renews it, and ``process`` names the
    holder's process on its machine (boot id, PID namespace, pid, start time; NULL off Linux), so
    a server restarted there takes over at once from a killed one."""

    __tablename__ = "supervisor_lease"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    process: Mapped[str | None] = mapped_column(String(200))


class UiSession(Base):
    """A browser logged in to the UI (:mod:`ui.auth`): ``id`` is the random session id its signed
    cookie carries; logging out deletes the row, so a copy of the cookie no longer logs anybody in.
    Rows older than the UI's session lifetime are refused and deleted at the next login."""

    __tablename__ = "ui_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[timestamp]


class Computer(Base):
    """A machine with a worker. ``gpus`` is ``[{"index": int, "memory": bytes, "name": str}]``."""

    __tablename__ = "computer"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(200))  # where other computers reach it
    ports: Mapped[list[Any] | None]  # [first, last]: its rendezvous port range for distributed ranks
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    cpu: Mapped[int] = mapped_column(default=1)
    memory: Mapped[float] = mapped_column(Float, default=0.0)  # gigabytes
    heartbeat: Mapped[opt_timestamp]
    usage: Mapped[dict[str, Any] | None]  # latest {cpu, memory, gpus: [...]} from the worker
    dag_ids: Mapped[list[Any] | None]  # None: a worker of every DAG; else only these (dag submit --wait)
    created: Mapped[timestamp]

    def __repr__(self):
        return f"Computer(name={self.name!r}, gpus={len(self.gpus)})"


class LogLine(Base):
    """One line a task printed (``stream`` is ``stdout``/``stderr``) or the system logged."""

    __tablename__ = "log_line"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    attempt: Mapped[int] = mapped_column(default=1)
    level: Mapped[str] = mapped_column(String(10), default="info")
    stream: Mapped[str] = mapped_column(String(10), default="stdout")
    time: Mapped[timestamp]
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_log_line_task_id_id", "task_id", "id"),)


class Metric(Base):
    """One metric value. ``step`` is the epoch number (``kind='epoch'``) or the global batch step
    (``kind='batch'``); it continues across attempts so a resumed series has no gap."""

    __tablename__ = "metric"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    attempt: Mapped[int] = mapped_column(default=1)
    name: Mapped[str] = mapped_column(String(200))
    loader: Mapped[str | None] = mapped_column(String(100))
    stage: Mapped[str | None] = mapped_column(String(100))
    epoch: Mapped[int | None]
    step: Mapped[int]
    kind: Mapped[str] = mapped_column(String(10), default="epoch")
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[timestamp]

    # the second index covers the UI's series reads (ui.series): a loader's points in step order
    # with their values, so SQLite answers from the index without visiting the table
    __table_args__ = (Index("ix_metric_task_id_name_kind_step", "task_id", "name", "kind", "step"),
                      Index("ix_metric_series", "task_id", "name", "kind", "loader", "step", "value"))


class ResourceSample(Base):
    """One resource reading of a computer, a GPU or a task's processes, written by the worker with
    each heartbeat (:mod:`mlcomp.worker.resources`) and rolled up for retention.

    - ``task_id`` NULL, ``gpu`` NULL: the whole computer (CPU % of all cores, RAM used);
    - ``gpu`` set: that GPU (utilization %, memory used), ``task_id`` the task holding it, if any;
    - ``task_id`` set, ``gpu`` NULL: the task's process tree (CPU % summed over its processes, RSS).

    ``time`` is Unix seconds (an integer, so buckets are an integer division in any database);
    ``resolution`` 0 is a raw sample, 60 or 600 the mean over the bucket starting at ``time``.
    ``memory`` is in bytes.
    """

    __tablename__ = "resource_sample"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    computer: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("task.id"))
    gpu: Mapped[int | None]
    resolution: Mapped[int] = mapped_column(default=0)
    time: Mapped[int] = mapped_column(BigInteger)
    utilization: Mapped[float | None] = mapped_column(Float)
    memory: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_resource_sample_computer", "computer", "resolution", "time"),
                      Index("ix_resource_sample_task", "task_id", "resolution", "time"))


class Checkpoint(Base):
    """A checkpoint file a task wrote; ``path`` is relative to the task's folder, ``size`` bytes;
    ``sha256`` names its content in ``snapshot_blob`` when it was put in the store (the full
    checkpoint a gang resumes from, for computers that do not share a filesystem)."""

    __tablename__ = "checkpoint"
    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    path: Mapped[str] = mapped_column(String(1000))
    stage: Mapped[str | None] = mapped_column(String(100))
    epoch: Mapped[int | None]
    metric: Mapped[float | None] = mapped_column(Float)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))  # its content in snapshot_blob, when stored
    created: Mapped[timestamp]


class SnapshotBlob(Base):
    """A file's content, stored once however many DAGs use it (content-addressed by SHA-256)."""

    __tablename__ = "snapshot_blob"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class SnapshotFile(Base):
    """A path of a DAG's expdir snapshot, pointing at its content."""

    __tablename__ = "snapshot_file"
    dag_id: Mapped[int] = mapped_column(ForeignKey("dag.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("snapshot_blob.sha256"), index=True)
    dag: Mapped[Dag] = relationship(back_populates="files")


class SearchTrial(Base):
    """A trial of an adaptive search (``mlcomp.search``): its task, its number in sampling order,
    the sampled ``params``, Optuna's ``system_attrs`` for it, the rung index ``target`` its
    current attempt trains to, and ``prune`` once its scheduler decided to stop it."""

    __tablename__ = "search_trial"
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    number: Mapped[int]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    system_attrs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target: Mapped[int] = mapped_column(default=0)
    prune: Mapped[bool] = mapped_column(default=False)
    created: Mapped[timestamp]

    __table_args__ = (UniqueConstraint("search_id", "number"),)


class SearchRung(Base):
    """Trial ``task_id`` of search ``search_id`` reached rung ``rung`` (an index) after ``epoch``
    epochs with the scheduler's metric at ``value``."""

    __tablename__ = "search_rung"
    id: Mapped[intpk]
    search_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    rung: Mapped[int]
    epoch: Mapped[int]
    value: Mapped[float | None] = mapped_column(Float)
    created: Mapped[timestamp]

    __table_args__ = (UniqueConstraint("task_id", "rung"),)


class Pipe(Base):
    """A named template of tasks registered by a ``type: pipe`` DAG file (MLComp's pipes), run
    later for a registered :class:`Model` (``mlcomp model start``).

    ``config`` is the pipe file's YAML as written; ``tasks`` the pipe's tasks as validated at
    registration (:mod:`mlcomp.dag.pipe`), so a start writes rows without the user's files;
    ``files`` the snapshot of the file's expdir. Registering the same name again replaces it.
    """

    __tablename__ = "pipe"
    id: Mapped[intpk]
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[str] = mapped_column(Text)
    tasks: Mapped[list[Any]] = mapped_column(default=list)
    source: Mapped[str | None] = mapped_column(String(1000))  # the file it came from
    created: Mapped[timestamp]
    updated: Mapped[timestamp]
    project: Mapped[Project] = relationship()

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class PipeFile(Base):
    """A path of a pipe's expdir snapshot, pointing at its content (as :class:`SnapshotFile`)."""

    __tablename__ = "pipe_file"
    pipe_id: Mapped[int] = mapped_column(ForeignKey("pipe.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("snapshot_blob.sha256"), index=True)


class Model(Base):
    """A trained model given a name (MLComp's "model add"): the train run ``task_id`` it came
    from (whose ``logdir/config.yml`` rebuilds it) and a copy of the chosen checkpoint at
    ``checkpoint`` (``settings.models_dir / project / <name>_weight.pth``), so later attempts of the
    run do not change it; ``which`` is the checkpoint that was chosen (``best``, ``last``, …)."""

    __tablename__ = "model"
    id: Mapped[intpk]
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    name: Mapped[str] = mapped_column(String(100))
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    which: Mapped[str] = mapped_column(String(1000))
    checkpoint: Mapped[str] = mapped_column(String(1000))
    created: Mapped[timestamp]
    project: Mapped[Project] = relationship()

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class ModelRun(Base):
    """DAG ``dag_id`` was started from pipe ``pipe_id`` for model ``model_id``: its tasks that
    build on a model take this one (:func:`mlcomp.worker.lookup.resolve_model`)."""

    __tablename__ = "model_run"
    dag_id: Mapped[int] = mapped_column(ForeignKey("dag.id"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id"), index=True)
    pipe_id: Mapped[int] = mapped_column(ForeignKey("pipe.id"), index=True)
