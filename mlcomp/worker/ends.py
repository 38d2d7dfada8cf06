"""How a worker records the end of a task's child: its outcome (:func:`mlcomp.worker.launch.outcome`),
what its journal holds that the store does not, the checkpoints a preempted task resumes from
elsewhere, and for a gang the end of one computer's part (:class:`mlcomp.gang.PlacementRecord`).
"""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mlcomp import gang
from mlcomp.db import Task, TaskStatus
from mlcomp.db.outage import transient
from mlcomp.lifecycle import retry_or_fail, set_task_status
from mlcomp.worker import carry
from mlcomp.worker.follow import Run
from mlcomp.worker.launch import outcome
from mlcomp.worker.process import TaskProcess
from mlcomp.worker.report import JOURNAL, replay

__all__ = ["record_ends", "finish", "end_part", "keep_checkpoints", "pid_of"]

log = logging.getLogger(__name__)


def record_ends(session: Session, name: str, tasks_dir: Path, ends: list[tuple[TaskProcess, int | None]],
                runs: dict[int, Run | None]) -> dict[int, Task]:
    """In the writer transaction ``session``: replays what each ended child's journal holds that
    the store does not, then records each end of computer ``name``'s children (``runs``: the run
    of each one's task, None when it was not followed); returns the tasks read (their rows locked).
    An end whose task is no longer that attempt's child here is logged and left as it is."""
    tasks = {task.id: task for task in session.scalars(
        select(Task).where(Task.id.in_(runs)).order_by(Task.id).with_for_update())}
    for process, returncode in ends:
        task = tasks.get(process.reporter.task_id)
        if task is not None:
            replay(session, process.files.path(JOURNAL), task.id, process.reporter.attempt, name)
        if task is None or task.status not in (TaskStatus.in_progress, TaskStatus.stopping) or \
                task.attempt != process.reporter.attempt or pid_of(name, task) != process.pid:
            log.warning("worker %s: task %s exited but is %s now; left as it is", name,
                        process.reporter.task_id, "gone" if task is None else task.status.value)
        else:
            finish(session, name, tasks_dir, task, runs[task.id], returncode)
    return tasks


def pid_of(name: str, task: Task) -> int | None:
    """The recorder pid of computer ``name``'s part of ``task`` (:func:`mlcomp.gang.part_pid`)."""
    part = gang.part_of(name, task.computer, task.gpus, task.placement)
    return None if part is None else gang.part_pid(part, task.pid, task.placement)


def finish(session: Session, name: str, tasks_dir: Path, task: Task, run: Run | None, returncode: int | None) -> None:
    """Records the end of computer ``name``'s part of ``task`` (``returncode`` None: no exit
    recorded). Rank 0's part ends the task; the end of another part of a gang changes it only
    when that part failed: the whole group fails (or is retried), and the workers of the other
    parts kill theirs."""
    result = outcome(returncode, stop_requested=task.status is TaskStatus.stopping,
                     timed_out=task.timeout if run is not None and run.timed_out else None,
                     last_error=run.process.reason.value if run is not None else None,
                     no_space=run.process.no_space if run is not None else None,
                     preempted_by=task.preempted_by)
    log.info("worker %s: task %s %s (%s)", name, task.id, result.status.value, result.reason)
    if not task.placement and result.status is TaskStatus.paused and task.preempted_by is not None:
        keep_checkpoints(session, name, tasks_dir, task)  # placed again by the supervisor, maybe on another computer
    end_part(session, name, task, result.status, result.reason)


def keep_checkpoints(session: Session, name: str, tasks_dir: Path, task: Task) -> None:
    """Stores the checkpoints a resume of ``task`` (on one computer) reads, for a later attempt
    on another computer (:func:`mlcomp.worker.carry.keep`), in a savepoint: a file that cannot
    be read or stored is logged, and the end is recorded all the same (that attempt then
    resumes only where the task's folder has the file)."""
    try:
        with session.begin_nested():
            stored = carry.keep(session, task.id, Path(tasks_dir) / str(task.id))
    except (OSError, SQLAlchemyError) as e:
        if transient(e):
            raise
        log.warning("worker %s: task %s: its checkpoints could not be stored for another computer: %s",
                    name, task.id, e)
        return
    if stored:
        log.info("worker %s: task %s: %s stored for its next attempt", name, task.id, ", ".join(stored))


def end_part(session: Session, name: str, task: Task, status: TaskStatus, reason: str) -> None:
    """Records that computer ``name``'s part of ``task`` ended with ``status``. A failure fails
    (or retries) the task, the whole group of a gang, whose other workers then kill their
    parts; otherwise a task on one computer takes the status, and a gang takes rank 0's once
    every part has ended (each is noted in its placement record's ``ended``)."""
    if status is TaskStatus.failed:
        retry_or_fail(session, task, f"ranks on {name}: {reason}" if task.placement else reason)
        return
    if not task.placement:
        set_task_status(session, task, status, reason)
        return
    placed = gang.PlacementRecord.from_json(task.placement).with_ended(name, status.value, reason)
    task.placement = placed.to_json()
    if placed.all_ended():
        final, why = placed.ended[placed.parts[0].computer]
        set_task_status(session, task, TaskStatus(final), f"{why} (all {len(placed.parts)} computers' ranks ended)")
