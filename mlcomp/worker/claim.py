"""The claim: how a worker takes the tasks the store has active on its computer. Every hand-over
ends here: the supervisor's message, the monitor's read of the store, a worker's start after a
restart. The store's row decides, in one writer transaction with the row locked: a queued task
whose attempt never started is started, one whose attempt has a child already is adopted (or gets
the outcome it recorded), one said to run with no trace is failed or retried.
"""
from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp import gang
from mlcomp.bus import Bus
from mlcomp.db import Task, TaskStatus, immediate
from mlcomp.lifecycle import ACTIVE, retry_or_fail, set_status_many, set_task_status
from mlcomp.worker import gang_part
from mlcomp.worker.context import WITH_PROJECT
from mlcomp.worker.follow import Follower
from mlcomp.worker.process import AttemptFiles, TaskProcess
from mlcomp.worker.spawn import Launcher

__all__ = ["Claimer", "claim_query"]

log = logging.getLogger(__name__)


def claim_query(task_ids: list[int]):
    """The tasks ``task_ids`` with their DAG and project, locked, by id (a batch claim's read)."""
    return (select(Task).where(Task.id.in_(task_ids)).order_by(Task.id)
            .with_for_update(of=Task).options(*WITH_PROJECT))


class Claimer:
    """Claims computer ``name``'s tasks for its worker.

    Args:
        settings: :class:`mlcomp.settings.Settings` (``tasks_dir``).
        store: the store.
        name: the computer's name.
        dag_ids: the DAGs whose tasks it claims (None: every DAG's).
        follower: the children followed here, and the launches under way.
        launcher: starts and adopts children.
        bus: where the other computers of a gang are told that rank 0's ranks started.
        on_end: called after a task ended here without a child (a failed start, a vanished one).
        on_change: called after every status change a claim made.
    """

    def __init__(self, settings, store: sessionmaker[Session], name: str, dag_ids: frozenset[int] | None,
                 follower: Follower, launcher: Launcher, bus: Bus, on_end: Callable[[], None],
                 on_change: Callable[[], None]):
        self.settings = settings
        self.store = store
        self.name = name
        self.dag_ids = dag_ids
        self.follower = follower
        self.launcher = launcher
        self.bus = bus
        self.on_end = on_end
        self.on_change = on_change

    def submit(self, task_id: int) -> bool:
        """Claims task ``task_id`` if the store has it active on this computer and no child of it
        is watched here yet; returns whether it now runs here. Safe to call twice or from
        several threads."""
        with self.follower.launching([task_id]) as mine:
            return bool(mine) and self._claim(task_id)

    def claim(self, task_ids: list[int]) -> list[int]:
        """Claims several tasks at once (a wave placed on this computer); returns the ids that now
        run here. The queued tasks of this computer whose attempt has not started and that are
        not gangs start in ONE writer transaction (their rows locked, read in one query, marked
        in_progress with two statements: :func:`mlcomp.lifecycle.set_status_many`); any other
        active one goes through :meth:`submit` (adoption, a gang's part). Safe beside
        :meth:`submit` and from several threads."""
        with self.follower.launching(task_ids) as mine:
            started, rest = self._start_many(mine)
        return started + [task_id for task_id in rest if self.submit(task_id)]

    def _start_many(self, task_ids: list[int]) -> tuple[list[int], list[int]]:
        """Starts the plain queued tasks of ``task_ids`` in one transaction (see :meth:`claim`);
        returns their ids and those of the active tasks of this computer left to :meth:`submit`."""
        if not task_ids:
            return [], []
        spawned, rest, failed = [], [], False
        try:
            with self.store.begin() as session:
                immediate(session)
                for task in session.scalars(claim_query(task_ids)).unique().all():
                    part = self._claimable(task)
                    if part is None:
                        continue
                    files = AttemptFiles.of(self.settings.tasks_dir, task.id, task.attempt)
                    if task.placement or task.status is not TaskStatus.queued or files.started():
                        rest.append(task.id)
                        continue
                    process = self.launcher.spawn(session, task, files, part)
                    if process is None:
                        failed = True
                        continue
                    task.pid = process.pid
                    spawned.append((task, process))
                set_status_many(session, [task for task, _ in spawned], TaskStatus.in_progress,
                                {task.id: f"running on {self.name} as pid {task.pid}" for task, _ in spawned})
        except BaseException:
            for task, _ in spawned:
                self.follower.abandon(task.id)
            raise
        for _, process in spawned:
            process.start()
        if failed:
            self.on_end()
        if spawned or failed:
            self.on_change()
        return [task.id for task, _ in spawned], rest

    def _claimable(self, task: Task) -> gang.Part | None:
        """This computer's part of ``task`` when the store has it active here and this worker
        serves its DAG, else None."""
        part = gang.part_of(self.name, task.computer, task.gpus, task.placement)
        if part is None or task.status not in ACTIVE or (self.dag_ids is not None and task.dag_id not in self.dag_ids):
            return None
        return part

    def _claim(self, task_id: int) -> bool:
        """In ONE writer transaction (the row locked, so a stop request cannot slip in between):
        a queued task whose attempt never started is started; a task whose attempt has a child
        already (a launch whose commit was lost, or a worker restart) is adopted: a live child is
        followed from the stored log offsets, an ended one gets the outcome it recorded. The
        output is followed once the status is committed. Of a gang, each computer claims its own
        part: rank 0's as a whole task, the others once rank 0's runs
        (:func:`mlcomp.worker.gang_part.may_start`), their pids kept in the placement record."""
        try:
            with self.store.begin() as session:
                immediate(session)
                task = session.get(Task, task_id, with_for_update={"of": Task}, options=WITH_PROJECT)
                part = None if task is None else self._claimable(task)
                files = None if part is None else AttemptFiles.of(self.settings.tasks_dir, task.id, task.attempt)
                if part is None or not self._may_take(session, task, part, files):
                    return False
                process = self._take(session, task, part, files)
        except BaseException:
            self.follower.abandon(task_id)
            raise
        if process is not None:
            process.start()
            if part.first_rank == 0:
                gang_part.tell(self.bus, self.name, task.computer, task.placement, [task.id])  # their parts may start now
        else:
            self.on_end()
        self.on_change()
        return process is not None

    def _may_take(self, session: Session, task: Task, part: gang.Part, files: AttemptFiles) -> bool:
        """Whether this worker is to take ``part`` of ``task`` now: not when another worker of this
        computer follows its child, nor a gang's part that may not start yet
        (:func:`mlcomp.worker.gang_part.may_start`)."""
        if files.started() and files.watched_elsewhere():
            return False
        return part.first_rank == 0 or gang_part.may_start(session, task, files, self.name)

    def _take(self, session: Session, task: Task, part: gang.Part, files: AttemptFiles) -> TaskProcess | None:
        """Within :meth:`_claim`'s transaction: starts, adopts or fails (vanished) ``part`` of
        ``task``; returns the child now followed, None when there is none."""
        if files.started():
            process = self.launcher.adopt(session, task, files)
        elif task.status is TaskStatus.queued or part.first_rank > 0:
            process = self.launcher.spawn(session, task, files, part)
        else:
            process = self._vanished(session, task)
        if process is not None and part.first_rank > 0:
            gang_part.note_pid(task, self.name, process.pid)
        elif process is not None and task.status is TaskStatus.queued:
            task.pid = process.pid
            set_task_status(session, task, TaskStatus.in_progress, f"running on {self.name} as pid {process.pid}")
        return process

    def _vanished(self, session: Session, task: Task) -> None:
        """Fails (or retries) a task said to run here whose attempt never recorded a start."""
        reason = f"process vanished: pid {task.pid} is gone from {self.name} and left no exit record"
        log.warning("worker %s: task %s: %s", self.name, task.id, reason)
        retry_or_fail(session, task, reason)
