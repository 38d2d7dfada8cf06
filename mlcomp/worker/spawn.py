"""Starting a task's child on this computer, or following one already started: its code folder
written from the DAG's snapshot, its executor's command, the rank group of a gang's part, the
process in its own session, handed to the :class:`~mlcomp.worker.follow.Follower`.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from executors import get_executor
from mlcomp import gang
from mlcomp.dag import SnapshotCache, materialize
from mlcomp.db import Attempt, Task, TaskStatus, as_utc, utcnow
from mlcomp.db.outage import Outage
from mlcomp.lifecycle import retry_or_fail, set_task_status
from mlcomp.worker import carry, disk, gang_part

from mlcomp.worker.context import fetches_carried, task_context
from mlcomp.worker.follow import Follower
from mlcomp.worker.launch import LaunchSpec, link_project_folders
from mlcomp.worker.process import AttemptFiles, OnExit, TaskProcess, ensure_folder
from mlcomp.worker.report import Reporter

__all__ = ["Launcher"]

log = logging.getLogger(__name__)


class Launcher:
    """Starts and adopts the children of computer ``name``'s tasks.

    Args:
        settings: :class:`mlcomp.settings.Settings` (``tasks_dir``).
        store: the store the children's reporters write to.
        name: the computer's name.
        ports: its inclusive range of rendezvous ports (a gang's rank 0 here).
        follower: where each child is followed.
        on_exit: what the output pump calls with the children that ended.
        outage: the worker's, for its reporters.
    """

    def __init__(self, settings, store: sessionmaker[Session], name: str, ports: tuple[int, int],
                 follower: Follower, on_exit: OnExit, outage: Outage):
        self.settings = settings
        self.store = store
        self.name = name
        self.ports = ports
        self.follower = follower
        self.on_exit = on_exit
        self.outage = outage
        self._snapshots = SnapshotCache()

    def spawn(self, session: Session, task: Task, files: AttemptFiles, part: gang.Part) -> TaskProcess | None:
        """Prepares the code folder and starts ``task``'s child for ``part`` of it (the whole
        task unless it is a gang; rank 0's part chooses the gang's rendezvous port first) and
        follows it; on failure fails (or retries) the task with the reason and returns None."""
        try:
            process = self._start(session, task, files, part)
        except Exception as e:  # a task that cannot start fails; the worker goes on
            log.exception("worker %s: task %s cannot start", self.name, task.id)
            reason = f"cannot start on {self.name}: {type(e).__name__}: {e}"
            if disk.is_no_space(e):  # the task's folder, or the store's snapshot files, are on a full disk
                reason = f"cannot start on {self.name}: {disk.no_space(files.folder.parent) or disk.NO_SPACE}: {e}"
            if part.first_rank > 0:
                retry_or_fail(session, task, reason)  # the whole group: its other ranks wait in vain
            else:
                set_task_status(session, task, TaskStatus.failed, reason)
            return None
        self._watch(task, process, self.follower.clock())
        return process

    def _start(self, session: Session, task: Task, files: AttemptFiles, part: gang.Part) -> TaskProcess:
        group = gang_part.rank_group(session, task, part, self.name, self.ports)
        context = task_context(task, self.settings, computer=self.name, group=group)
        if not context.code_dir.exists():
            _materialize(session, task.dag_id, context.code_dir,
                         self._snapshots.files(session, task.dag_id, task.dag.created))
            link_project_folders(context.code_dir, self.settings, task.dag.project.name)
        executor = get_executor(task.type, expdir=context.code_dir)
        if fetches_carried(context, executor):  # where the last attempt ran matters not
            carry.fetch(session, task.id, context.folder)
        spec = LaunchSpec.for_task(task, self.settings, executor.command(context), part, group)
        return TaskProcess.spawn(spec.argv, spec.cwd, spec.env, files, self.reporter(task), self.on_exit)

    def adopt(self, session: Session, task: Task, files: AttemptFiles) -> TaskProcess:
        """Follows the child of ``task``'s attempt that another worker (or this one before a
        restart) started, with its GPUs kept, from the log offsets stored with its lines."""
        offsets = session.scalar(select(Attempt.log_offsets)
                                 .where(Attempt.task_id == task.id, Attempt.number == task.attempt))
        process = TaskProcess.adopt(files, self.reporter(task), self.on_exit, offsets)
        started = task.started or utcnow()
        self._watch(task, process, self.follower.clock() - (utcnow() - as_utc(started)).total_seconds())
        log.info("worker %s: task %s: %s child %s adopted", self.name, task.id,
                 "ended" if process.gone else "running", process.pid)
        return process

    def reporter(self, task: Task) -> Reporter:
        """The reporter of ``task``'s current attempt's output."""
        return Reporter(self.store, task.id, task.attempt, outage=self.outage)

    def _watch(self, task: Task, process: TaskProcess, started: float) -> None:
        self.follower.watch(task.id, task.attempt, task.timeout, process, started)


def _materialize(session: Session, dag_id: int, dest: Path, files: list[tuple[str, bytes]]) -> None:
    """Writes the DAG's code snapshot (``files``: ``(path, content)`` pairs) to ``dest`` through a
    temporary folder, so a failed copy leaves no half-written code folder behind."""
    partial = dest.with_name(dest.name + ".partial")
    ensure_folder(dest.parent)
    try:
        partial.mkdir()
    except FileExistsError:  # left by a copy that failed
        shutil.rmtree(partial)
        partial.mkdir()
    materialize(session, dag_id, partial, files)
    partial.rename(dest)
