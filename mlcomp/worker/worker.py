"""The worker: runs the tasks assigned to one computer as process groups, and loses none of them
when it is killed and started again.

In the style of rq's ``Worker`` and luigi's worker: it registers its computer (name, address,
GPUs, CPUs, RAM), writes heartbeats on a thread, starts each assigned task's child in its own
session (cwd = the task's code copy, ``CUDA_VISIBLE_DEVICES`` = its GPUs) with its output and
exit status going to the attempt's files (:mod:`mlcomp.worker.process`), follows those files into
``LogLine`` rows (one thread for all tasks, :class:`mlcomp.worker.process.Pump`, which also
handles each exit). Tasks arrive on the computer's bus channel (:mod:`mlcomp.bus`): a message
names the task ids just placed here, each claimed at once (:meth:`Worker.submit`); an empty one
(a stop request, a gang's part to kill) makes the monitor read the store now. The monitor reads
the store every ``poll`` seconds anyway (the safety net for a lost message), carries out stop
requests (SIGTERM to the group, SIGKILL after ``settings.stop_grace``), enforces timeouts and
claims the active tasks placed here that no child is watched for: queued tasks whose message
was lost, and after a restart the children of the previous worker (adopted if alive, their
recorded outcome stored if they ended). Between reads it wakes only for a deadline (a timeout,
the end of a stop's grace period): an idle worker sleeps.

Every status change goes through :func:`mlcomp.lifecycle.set_task_status` (or
``retry_or_fail``) and is followed by ``on_change()``; a task's end is also followed by
``on_end()``, which makes a supervisor place the next tasks at once.
"""
from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import logging
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Collection

import psutil
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from executors import get_executor
from mlcomp import gang
from mlcomp.bus import POLL, Bus, Subscription, computer_channel
from mlcomp.dag import SnapshotCache, materialize
from mlcomp.db import Attempt, Computer, Task, TaskStatus, immediate, utcnow
from mlcomp.db.outage import Outage, retrying, transient
from mlcomp.errors import MlcompError
from mlcomp.lifecycle import ACTIVE, retry_or_fail, set_status_many, set_task_status
from mlcomp.worker.context import WITH_PROJECT, fetches_carried, task_context
from mlcomp.worker import carry, disk
from mlcomp.worker.gpus import detect_gpus
from mlcomp.worker.resources import ResourceRecorder
from mlcomp.worker.launch import LaunchSpec, link_project_folders, outcome
from mlcomp.worker.process import ATTEMPTS, AttemptFiles, TaskProcess, ensure_folder, signal_group
from mlcomp.worker.report import JOURNAL, Reporter, replay

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Run:
    task_id: int
    attempt: int
    timeout: float | None  # seconds
    process: TaskProcess
    started: float  # monotonic seconds
    stop_sent: float | None = None
    timed_out: bool = False
    killed: bool = False


class Worker:
    """Runs the tasks the supervisor assigns to computer ``name``.

    Args:
        settings: :class:`mlcomp.settings.Settings` (``tasks_dir``, ``stop_grace``, ``heartbeat_ttl``).
        sessionmaker: the store.
        name: the computer's name (default: the host name).
        gpus: declared GPU indices (``--gpus 0,1``) or None to detect them.
        cpus: the declared CPU count (``--cpus 32``) or None for the machine's (psutil).
        on_change: called (without arguments) after every status change this worker makes.
        on_end: called (without arguments) after a task ended here (its exit, a vanished process,
            a failed start), before ``on_change``, in the thread that recorded the end: the
            embedded supervisor places the next tasks there (:func:`mlcomp.supervisor.run_local`).
        poll: seconds between the monitor's reads of the store when no message wakes it
            (:data:`mlcomp.bus.POLL`).
        bus: where task ids and stop requests arrive (default: ``Bus.of(settings)``).
        beats: the store the heartbeat writes through (default: ``sessionmaker``); a pool of its
            own keeps the liveness signal from queueing behind the worker's other transactions
            when those hold their pool's only connection.
        clock: monotonic seconds, for timeouts and the stop grace period.
        dag_ids: claim only these DAGs' tasks (the worker of ``dag submit --wait``, which may
            share its computer with another one); the computer row says so, so supervisors
            place other DAGs' tasks elsewhere. None: every DAG's.
        address: where the other computers reach this one (rank 0 of a gang placed here is
            ``MASTER_ADDR``); None: the machine's primary address.
        ports: the inclusive range of rendezvous ports (``MASTER_PORT``) for gangs whose rank 0
            runs here (:data:`mlcomp.gang.PORTS` by default).
    """

    def __init__(self, settings, sessionmaker: sessionmaker[Session], name: str | None = None,
                 gpus: list[int] | None = None, on_change: Callable[[], None] | None = None, *,
                 cpus: int | None = None,
                 on_end: Callable[[], None] | None = None, poll: float = POLL, bus: Bus | None = None,
                 beats: sessionmaker[Session] | None = None,
                 clock: Callable[[], float] = time.monotonic, dag_ids: Collection[int] | None = None,
                 address: str | None = None, ports: tuple[int, int] = gang.PORTS):
        self.settings = settings
        self.address = address or _address()
        self.ports = tuple(ports)
        self.sessionmaker = sessionmaker
        self.name = name or socket.gethostname()
        self.declared_gpus = gpus
        self.declared_cpus = cpus
        self.on_change = on_change or (lambda: None)
        self.on_end = on_end or (lambda: None)
        self.poll = poll
        self.bus = bus or Bus.of(settings)
        self.beats = beats or sessionmaker
        self._subscription: Subscription | None = None
        self.clock = clock
        self.dag_ids = None if dag_ids is None else frozenset(dag_ids)
        self.gpus: list[dict] = []
        self._runs: dict[int, _Run] = {}
        self._launching: set[int] = set()
        self._closing = False  # set by shutdown(): no new launch starts
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._snapshots = SnapshotCache()
        self.outage = Outage(f"worker {self.name}")  # one line while the store is away

    # -- computer --------------------------------------------------------------------------------
    def register(self) -> None:
        """Creates or updates this computer's row (address, GPUs, CPU count, RAM in GB, the DAGs
        it serves) with a fresh heartbeat. A worker scoped to some DAGs adds them to those of a
        live scoped worker of the same computer; beside a live worker of every DAG it changes
        nothing of the scope."""
        self.gpus = detect_gpus(self.declared_gpus)
        self.resources = ResourceRecorder(self.name, self.gpus)
        now = utcnow()
        values = dict(address=self.address, ports=list(self.ports), gpus=self.gpus,
                      cpu=self.declared_cpus or psutil.cpu_count() or 1,
                      memory=round(psutil.virtual_memory().total / 1e9, 2), heartbeat=now)
        with self.sessionmaker.begin() as session:
            immediate(session)
            computer = session.get(Computer, self.name, with_for_update=True)
            live = computer is not None and computer.heartbeat is not None and \
                (now - _aware(computer.heartbeat)).total_seconds() < self.settings.heartbeat_ttl
            if self.dag_ids is None:
                values["dag_ids"] = None
            elif live and computer.dag_ids is not None:
                values["dag_ids"] = sorted(set(computer.dag_ids) | self.dag_ids)
            elif not live:
                values["dag_ids"] = sorted(self.dag_ids)
            if computer is None:
                session.add(Computer(name=self.name, **values))
            else:
                for key, value in values.items():
                    setattr(computer, key, value)
        log.info("worker %s registered: %d GPU(s), %s CPUs", self.name, len(self.gpus), values["cpu"])

    def heartbeat(self) -> None:
        """Writes ``Computer.heartbeat`` (now, UTC) and ``usage`` (CPU %, RAM GB used, GPU use,
        running task count).

        The TTL contract: the next beat must reach the store within ``settings.heartbeat_ttl``
        seconds of this one, or the supervisor takes the computer for dead and fails (or retries
        elsewhere) the tasks placed on it. The heartbeat thread beats every ``heartbeat_ttl / 3``
        seconds, so two beats in a row may be lost (a busy database) before that happens.
        """
        usage = {**self.resources.usage(), "tasks": len(self._runs)}
        with self.beats.begin() as session:  # one transaction a beat: an idle computer's cost
            immediate(session)
            self.resources.write(session, usage)  # the history of usage, in a savepoint: a failure is logged
            # the computer row last: a supervisor's tick locks computer rows, so this lock is held only until commit
            session.execute(update(Computer).where(Computer.name == self.name)
                            .values(heartbeat=utcnow(), usage=usage))

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> "Worker":
        """Registers the computer, ends the orphans of its attempts (:meth:`reap_orphans`),
        subscribes to its bus channel and starts the heartbeat and monitor threads. Keeps a
        reserve beside a SQLite store (:func:`mlcomp.worker.disk.keep_store_reserve`)."""
        disk.keep_store_reserve(self.settings.db_url)  # room to record a task that fills the store's disk
        self.register()
        self.reap_orphans()
        self._warm_up()
        self._stop.clear()
        self._closing = False
        self._subscription = self.bus.subscribe(computer_channel(self.name), self._message)
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._monitor_loop, "monitor")):
            thread = threading.Thread(target=target, name=f"worker-{self.name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _warm_up(self) -> None:
        """Compiles the claim's query (and configures the ORM's mappers) and imports the shell
        executor now, not in the first claim: with 10 workers starting together on 2 cores, a
        cold claim of 8 tasks took 0.6-0.9 s, most of it in first-time work."""
        with self.sessionmaker.begin() as session:
            session.scalars(_claim_query([-1])).unique().all()
        get_executor("bash")

    def reap_orphans(self) -> list[int]:
        """Kills the process groups of attempts that ran on this computer, still run, are followed
        by no live worker, and that the store no longer has active (their task was failed or
        retried while no worker of this computer beat, and their GPUs given to other tasks).
        Returns the task ids whose children were killed."""
        live = {}
        for pid_file in Path(self.settings.tasks_dir).glob(f"*/{ATTEMPTS}/*/pid"):
            files = AttemptFiles(pid_file.parent)
            pid = files.live_pid()
            if pid is not None and not files.watched_elsewhere() and pid_file.parts[-4].isdigit():
                live[(int(pid_file.parts[-4]), int(pid_file.parts[-2]))] = pid
        if not live:
            return []
        with self.sessionmaker() as session:
            rows = session.execute(select(Attempt.task_id, Attempt.number, Attempt.status, Attempt.computer)
                                   .where(Attempt.task_id.in_({task_id for task_id, _ in live}))).all()
        killed = []
        for task_id, number, status, computer in rows:
            pid = live.get((task_id, number))
            if pid is not None and computer == self.name and status not in ACTIVE and signal_group(pid, signal.SIGKILL):
                log.warning("worker %s: task %s attempt %s is %s in the store but its process group %s ran on: "
                            "killed", self.name, task_id, number, status.value, pid)
                killed.append(task_id)
        return killed

    def shutdown(self, stop_tasks: bool = True, timeout: float | None = None) -> None:
        """Stops the threads at once; with ``stop_tasks`` the running tasks are stopped first
        (SIGTERM, grace, SIGKILL) and end as ``stopped``. Waits at most ``timeout`` seconds
        (default ``stop_grace`` + 5) for them.

        New launches are refused from the start, and launches under way are waited for: a
        child started but not yet handed to the output pump would otherwise be stopped without
        its end being recorded (the task left ``stopping``)."""
        deadline = self.clock() + (self.settings.stop_grace + 5 if timeout is None else timeout)
        with self._lock:
            self._closing = True
        while self._launching_now() and self.clock() < deadline:
            time.sleep(0.01)
        if stop_tasks:
            with self._lock:
                runs = list(self._runs.values())
            self._while_store_away(functools.partial(
                self._mark_stopping, [run.task_id for run in runs], f"the worker of {self.name} shuts down"), deadline)
            for run in runs:
                self._request_stop(run)
            for run in runs:
                while run.process.alive() and self.clock() < deadline:
                    self._enforce(run)
                    time.sleep(0.05)
                run.process.join(max(0.0, deadline - self.clock()))
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self._while_store_away(self._unscope, deadline)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        log.info("worker %s shut down", self.name)

    def _while_store_away(self, write: Callable[[], None], deadline: float) -> None:
        """Runs one of the shutdown's writes, retrying while the store is busy or away (a SQLite
        file locked by a task's child, a PostgreSQL restart) until the shutdown's ``deadline``
        (this worker's clock); after it the error is raised."""
        retrying(write, self.outage, retry_for=max(1.0, deadline - self.clock()), pause=0.2)

    def _unscope(self) -> None:
        """Takes this worker's DAGs out of its computer's scope (a scoped worker's shutdown)."""
        if self.dag_ids is None:
            return
        with self.sessionmaker.begin() as session:
            immediate(session)
            computer = session.get(Computer, self.name, with_for_update=True)
            if computer is not None and computer.dag_ids is not None:
                computer.dag_ids = sorted(set(computer.dag_ids) - self.dag_ids)

    def _launching_now(self) -> bool:
        with self._lock:
            return bool(self._launching)

    def _mark_stopping(self, task_ids: list[int], reason: str) -> None:
        if not task_ids:
            return
        with self.sessionmaker.begin() as session:
            immediate(session)
            for task in session.scalars(select(Task).where(Task.id.in_(task_ids)).with_for_update()):
                if task.status is TaskStatus.in_progress:
                    set_task_status(session, task, TaskStatus.stopping, reason)

    def wake(self) -> None:
        """Makes the monitor loop look at the store now."""
        self._wake.set()

    def _message(self, task_ids: list[int]) -> None:
        """A message on this computer's channel: claims the tasks it names, or with none reads
        the store now."""
        if task_ids:
            self.claim(task_ids)
        else:
            self.wake()

    def running(self) -> list[int]:
        """Ids of the tasks whose child this worker runs."""
        with self._lock:
            return sorted(self._runs)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_ttl / 3  # three beats per TTL: see heartbeat()
        while not self._stop.wait(interval):  # a busy or absent database must not end the heartbeats
            self.outage.run(self.heartbeat, f"worker {self.name}: heartbeat failed")
        log.info("worker %s: heartbeats end: the worker shuts down", self.name)

    def _monitor_loop(self) -> None:
        woken, read_at = True, 0.0
        while not self._stop.is_set():
            if woken or self.clock() >= read_at:  # one bad pass (a busy or absent database) must not end it
                read_at = self.clock() + self.poll
                self.outage.run(self.monitor, f"worker {self.name}: monitor pass failed")
            else:
                self._enforce_all()
            woken = self._wake.wait(max(0.0, min(read_at, self._deadline()) - self.clock()))
            self._wake.clear()
        log.info("worker %s: monitor loop ends: the worker shuts down", self.name)

    # -- claiming --------------------------------------------------------------------------------
    def submit(self, task_id: int) -> bool:
        """Claims task ``task_id`` if the store has it active on this computer and no child of it
        is watched here yet; returns whether it now runs here. Every hand-over ends here: the
        supervisor's (a message on the bus, in-process or not), the monitor's read of the store, and the
        start of a worker after a restart. Safe to call twice or from several threads."""
        with self._lock:
            if self._closing or task_id in self._runs or task_id in self._launching:
                return False
            self._launching.add(task_id)
        try:
            return self._claim(task_id)
        finally:
            with self._lock:
                self._launching.discard(task_id)

    def claim(self, task_ids: list[int]) -> list[int]:
        """Claims several tasks at once (a wave placed on this computer); returns the ids that now
        run here. The queued tasks of this computer whose attempt has not started and that are
        not gangs start in ONE writer transaction (their rows locked, read in one query, marked
        in_progress with two statements: :func:`mlcomp.lifecycle.set_status_many`); any other
        active one goes through :meth:`submit` (adoption, a gang's part). Safe beside
        :meth:`submit` and from several threads."""
        with self._lock:
            if self._closing:
                return []
            mine = [i for i in dict.fromkeys(task_ids) if i not in self._runs and i not in self._launching]
            self._launching.update(mine)
        try:
            started, rest = self._start_many(mine)
        finally:
            with self._lock:
                self._launching.difference_update(mine)
        return started + [task_id for task_id in rest if self.submit(task_id)]

    def _start_many(self, task_ids: list[int]) -> tuple[list[int], list[int]]:
        """Starts the plain queued tasks of ``task_ids`` in one transaction (see :meth:`claim`);
        returns their ids and those of the active tasks of this computer left to :meth:`submit`."""
        if not task_ids:
            return [], []
        spawned, rest, failed = [], [], False
        try:
            with self.sessionmaker.begin() as session:
                immediate(session)
                tasks = session.scalars(_claim_query(task_ids)).unique().all()
                for task in tasks:
                    part = self._claimable(task)
                    if part is None:
                        continue
                    files = AttemptFiles.of(self.settings.tasks_dir, task.id, task.attempt)
                    if task.placement or task.status is not TaskStatus.queued or files.started():
                        rest.append(task.id)
                        continue
                    process = self._spawn(session, task, files, part)
                    if process is None:
                        failed = True
                        continue
                    task.pid = process.pid
                    spawned.append((task, process))
                set_status_many(session, [task for task, _ in spawned], TaskStatus.in_progress,
                                {task.id: f"running on {self.name} as pid {task.pid}" for task, _ in spawned})
        except BaseException:
            for task, _ in spawned:
                self._abandon(task.id)
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
        part: rank 0's as a whole task, the others once rank 0's runs (:meth:`_part_may_start`),
        their pids kept in the placement record."""
        try:
            with self.sessionmaker.begin() as session:
                immediate(session)
                task = session.get(Task, task_id, with_for_update={"of": Task}, options=WITH_PROJECT)
                part = None if task is None else self._claimable(task)
                if part is None:
                    return False
                files = AttemptFiles.of(self.settings.tasks_dir, task.id, task.attempt)
                if files.started() and files.watched_elsewhere():
                    return False  # another worker of this computer follows it
                if part.first_rank > 0 and not self._part_may_start(session, task, files):
                    return False
                if files.started():
                    process = self._adopt(session, task, files)
                elif task.status is TaskStatus.queued or part.first_rank > 0:
                    process = self._spawn(session, task, files, part)
                else:
                    process = self._vanished(session, task)
                if process is not None and part.first_rank > 0:
                    task.placement = {**task.placement, "pids": {**task.placement["pids"], self.name: process.pid}}
                elif process is not None and task.status is TaskStatus.queued:
                    task.pid = process.pid
                    set_task_status(session, task, TaskStatus.in_progress,
                                    f"running on {self.name} as pid {process.pid}")
        except BaseException:
            self._abandon(task_id)
            raise
        if process is not None:
            process.start()
            if part.first_rank == 0:
                self._tell_gang(task.computer, task.placement, [task.id])  # their parts may start now
        else:
            self.on_end()
        self.on_change()
        return process is not None

    def _tell_gang(self, computer: str | None, placement: dict | None, task_ids: list[int]) -> None:
        """Sends the other computers of a gang (nothing for a task on one computer) a message:
        the task's id when rank 0's ranks started, none when a part ended."""
        for name in gang.computers_of(computer, placement):
            if name != self.name:
                self.bus.publish(computer_channel(name), task_ids)

    def _spawn(self, session: Session, task: Task, files: AttemptFiles, part: gang.Part) -> TaskProcess | None:
        """Prepares the code folder and starts ``task``'s child for ``part`` of it (the whole
        task unless it is a gang; rank 0's part chooses the gang's rendezvous port first) and
        registers it in ``_runs``; on failure fails (or retries) the task with the reason and
        returns None."""
        try:
            group = self._rank_group(session, task, part)
            context = task_context(task, self.settings, computer=self.name, group=group)
            if not context.code_dir.exists():
                _materialize(session, task.dag_id, context.code_dir,
                             self._snapshots.files(session, task.dag_id, task.dag.created))
                link_project_folders(context.code_dir, self.settings, task.dag.project.name)
            executor = get_executor(task.type, expdir=context.code_dir)
            if fetches_carried(context, executor):  # where the last attempt ran matters not
                carry.fetch(session, task.id, context.folder)
            command = executor.command(context)
            spec = LaunchSpec.for_task(task, self.settings, command, part, group)
            process = TaskProcess.spawn(spec.argv, spec.cwd, spec.env, files, self._reporter(task),
                                        self._exited)
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
        self._watch(task, process, self.clock())
        return process

    def _part_may_start(self, session: Session, task: Task, files: AttemptFiles) -> bool:
        """Whether this computer's part of gang ``task`` (not rank 0's) is to be started or
        adopted now: not when it already ended, nor before rank 0's worker has started its ranks
        (and chosen the port); one never started of a gang being stopped ends at once as stopped."""
        if self.name in task.placement.get("ended", {}):
            return False
        if task.status is TaskStatus.stopping and not files.started():
            self._end_part(session, task, TaskStatus.stopped, "stopped before its ranks started")
            return False
        return files.started() or task.status is TaskStatus.in_progress

    def _rank_group(self, session: Session, task: Task, part: gang.Part) -> dict | None:
        """The rank group ``part`` of a gang joins (:func:`mlcomp.gang.rank_group`), None for a
        task on one computer. Rank 0's part takes the first port of this computer's range that no
        other active gang of the store uses and that binds now, and records it in the placement.

        Raises:
            MlcompError: every port of the range is taken.
        """
        if not task.placement:
            return None
        if part.first_rank == 0:
            used = {t.get("master_port") for t in session.scalars(
                select(Task.placement).where(Task.computer == self.name, Task.status.in_(ACTIVE),
                                             Task.placement.is_not(None), Task.id != task.id)) if t}
            port = gang.pick_port(range(self.ports[0], self.ports[1] + 1), used,
                                  lambda p: _bindable(task.placement["master_addr"], p))
            if port is None:
                raise MlcompError(f"no free rendezvous port in {self.ports[0]}-{self.ports[1]} on {self.name}")
            task.placement = {**task.placement, "master_port": port}
        return gang.rank_group(task.placement, part)

    def _adopt(self, session: Session, task: Task, files: AttemptFiles) -> TaskProcess:
        """Follows the child of ``task``'s attempt that another worker (or this one before a
        restart) started, with its GPUs kept, from the log offsets stored with its lines."""
        offsets = session.scalar(select(Attempt.log_offsets)
                                 .where(Attempt.task_id == task.id, Attempt.number == task.attempt))
        process = TaskProcess.adopt(files, self._reporter(task), self._exited, offsets)
        started = task.started or utcnow()
        self._watch(task, process, self.clock() - (utcnow() - _aware(started)).total_seconds())
        log.info("worker %s: task %s: %s child %s adopted", self.name, task.id,
                 "ended" if process.gone else "running", process.pid)
        return process

    def _vanished(self, session: Session, task: Task) -> None:
        """Fails (or retries) a task said to run here whose attempt never recorded a start."""
        reason = f"process vanished: pid {task.pid} is gone from {self.name} and left no exit record"
        log.warning("worker %s: task %s: %s", self.name, task.id, reason)
        retry_or_fail(session, task, reason)

    def _reporter(self, task: Task) -> Reporter:
        return Reporter(self.sessionmaker, task.id, task.attempt, outage=self.outage)

    def _watch(self, task: Task, process: TaskProcess, started: float) -> None:
        process.files.watch()
        with self._lock:
            self._runs[task.id] = _Run(task.id, task.attempt, task.timeout, process, started)

    def _abandon(self, task_id: int) -> None:
        """Kills a child whose start could not be committed."""
        with self._lock:
            run = self._runs.pop(task_id, None)
        if run is not None and run.process.popen is not None:
            run.process.signal(signal.SIGKILL)
            run.process.popen.wait()

    # -- exit ------------------------------------------------------------------------------------
    def _exited(self, ends: list[tuple[TaskProcess, int | None]]) -> None:
        """Records the ends of children that the pump saw exit together, in ONE writer
        transaction (their task rows locked, read in one query), then tells the other computers
        of a gang among them and calls ``on_end``/``on_change`` once."""
        runs = {}
        with self._lock:
            for process, _ in ends:
                runs[process.reporter.task_id] = self._runs.get(process.reporter.task_id)
        try:
            tasks = self._record_ends(ends, runs)
        except Exception as e:
            if not transient(e):  # else the store is away: the pump records these ends again later
                self._forget(runs)
            raise
        self._forget(runs)
        for task in tasks.values():
            self._tell_gang(task.computer, task.placement, [])  # a failed part ends the others
        self.on_end()
        self.on_change()

    def _forget(self, task_ids) -> None:
        with self._lock:
            for task_id in task_ids:
                self._runs.pop(task_id, None)

    def _record_ends(self, ends: list[tuple[TaskProcess, int | None]], runs: dict) -> dict[int, Task]:
        """In one writer transaction: replays what each ended child's journal holds that the store
        does not, then records each end; returns the tasks read (their rows locked)."""
        with self.sessionmaker.begin() as session:
            immediate(session)
            tasks = {task.id: task for task in session.scalars(
                select(Task).where(Task.id.in_(runs)).order_by(Task.id).with_for_update())}
            for process, returncode in ends:
                task = tasks.get(process.reporter.task_id)
                if task is not None:
                    replay(session, process.files.path(JOURNAL), task.id, process.reporter.attempt, self.name)
                if task is None or task.status not in (TaskStatus.in_progress, TaskStatus.stopping) or \
                        task.attempt != process.reporter.attempt or self._pid_of(task) != process.pid:
                    log.warning("worker %s: task %s exited but is %s now; left as it is", self.name,
                                process.reporter.task_id, "gone" if task is None else task.status.value)
                else:
                    self._finish(session, task, runs[task.id], returncode)
        return tasks

    def _pid_of(self, task: Task) -> int | None:
        """The recorder pid of this computer's part of ``task`` (:func:`mlcomp.gang.part_pid`)."""
        part = gang.part_of(self.name, task.computer, task.gpus, task.placement)
        return None if part is None else gang.part_pid(part, task.pid, task.placement)

    def _finish(self, session: Session, task: Task, run: _Run | None, returncode: int | None) -> None:
        """Records the end of this computer's part of ``task``. Rank 0's part ends the task; the
        end of another part of a gang changes it only when that part failed: the whole group
        fails (or is retried), and the workers of the other parts kill theirs."""
        result = outcome(returncode, stop_requested=task.status is TaskStatus.stopping,
                         timed_out=task.timeout if run is not None and run.timed_out else None,
                         last_error=run.process.reason.value if run is not None else None,
                         no_space=run.process.no_space if run is not None else None,
                         preempted_by=task.preempted_by)
        log.info("worker %s: task %s %s (%s)", self.name, task.id, result.status.value, result.reason)
        if not task.placement and result.status is TaskStatus.paused and task.preempted_by is not None:
            self._keep_checkpoints(session, task)  # placed again by the supervisor, maybe on another computer
        self._end_part(session, task, result.status, result.reason)

    def _keep_checkpoints(self, session: Session, task: Task) -> None:
        """Stores the checkpoints a resume of ``task`` (on one computer) reads, for a later attempt
        on another computer (:func:`mlcomp.worker.carry.keep`), in a savepoint: a file that cannot
        be read or stored is logged, and the end is recorded all the same (that attempt then
        resumes only where the task's folder has the file)."""
        try:
            with session.begin_nested():
                stored = carry.keep(session, task.id, Path(self.settings.tasks_dir) / str(task.id))
        except (OSError, SQLAlchemyError) as e:
            if transient(e):
                raise
            log.warning("worker %s: task %s: its checkpoints could not be stored for another computer: %s",
                        self.name, task.id, e)
            return
        if stored:
            log.info("worker %s: task %s: %s stored for its next attempt", self.name, task.id, ", ".join(stored))

    def _end_part(self, session: Session, task: Task, status: TaskStatus, reason: str) -> None:
        """Records that this computer's part of ``task`` ended with ``status``. A failure fails
        (or retries) the task, the whole group of a gang, whose other workers then kill their
        parts; otherwise a task on one computer takes the status, and a gang takes rank 0's once
        every part has ended (each is noted in the placement record's ``ended``)."""
        if status is TaskStatus.failed:
            retry_or_fail(session, task, f"ranks on {self.name}: {reason}" if task.placement else reason)
            return
        if not task.placement:
            set_task_status(session, task, status, reason)
            return
        ended = {**task.placement.get("ended", {}), self.name: [status.value, reason]}
        task.placement = {**task.placement, "ended": ended}
        spread = gang.parts(task.placement)
        if len(ended) == len(spread):
            final, why = ended[spread[0].computer]
            set_task_status(session, task, TaskStatus(final), f"{why} (all {len(spread)} computers' ranks ended)")

    # -- monitoring ------------------------------------------------------------------------------
    def monitor(self) -> None:
        """One monitor pass: read the active tasks the store places on this computer; signal the
        ones asked to stop, enforce timeouts and the stop grace period, and claim the ones no
        child is watched for here (queued ones not handed over, children of a previous worker)."""
        stmt = select(Task.id, Task.status, Task.attempt, Task.computer, Task.gpus, Task.placement).where(
            Task.status.in_(ACTIVE), or_(Task.computer == self.name, Task.placement.is_not(None)))
        if self.dag_ids is not None:
            stmt = stmt.where(Task.dag_id.in_(self.dag_ids))
        with self._lock:
            watched = {run.task_id: run for run in self._runs.values()}  # before the read: see below
        with self.sessionmaker() as session:
            rows = [r for r in session.execute(stmt).all()
                    if gang.part_of(self.name, r.computer, r.gpus, r.placement) is not None]
        self._kill_ended(watched, {(r.id, r.attempt) for r in rows})
        for task_id, status, *_ in rows:
            with self._lock:
                run = self._runs.get(task_id)
            if run is None:
                self.submit(task_id)
            elif status is TaskStatus.stopping:
                self._request_stop(run)
        self._enforce_all()

    def _enforce_all(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self._enforce(run)

    def _deadline(self) -> float:
        """The next moment (monotonic seconds) a run's timeout or stop grace period ends."""
        with self._lock:
            runs = list(self._runs.values())
        ends = [run.started + run.timeout for run in runs if run.timeout and not run.timed_out]
        ends += [run.stop_sent + self.settings.stop_grace for run in runs if run.stop_sent is not None and not run.killed]
        return min(ends, default=float("inf")) + 0.01

    def _kill_ended(self, watched: dict[int, _Run], active: set[tuple[int, int]]) -> None:
        """Kills (SIGKILL to the group) the children of ``watched`` (runs known before the store
        was read, so a launch committed after the read is never taken for one) whose attempt the
        store no longer has active here: a gang failed by another of its computers, or a task
        failed or retried by the supervisor while this worker's beats did not arrive."""
        for run in watched.values():
            if (run.task_id, run.attempt) not in active and not run.killed and run.process.signal(signal.SIGKILL):
                run.killed = True
                log.warning("worker %s: task %s attempt %s is no longer active in the store: its process "
                            "group %s killed", self.name, run.task_id, run.attempt, run.process.pid)

    def _request_stop(self, run: _Run) -> None:
        if run.stop_sent is None:
            run.stop_sent = self.clock()
            run.process.signal(signal.SIGTERM)

    def _enforce(self, run: _Run) -> None:
        now = self.clock()
        if run.timeout and not run.timed_out and now - run.started > run.timeout:
            run.timed_out = True
            self._request_stop(run)
        if run.stop_sent is not None and not run.killed and now - run.stop_sent > self.settings.stop_grace:
            run.killed = True
            run.process.signal(signal.SIGKILL)


def _claim_query(task_ids: list[int]):
    """The tasks ``task_ids`` with their DAG and project, locked, by id (a batch claim's read)."""
    return (select(Task).where(Task.id.in_(task_ids)).order_by(Task.id)
            .with_for_update(of=Task).options(*WITH_PROJECT))


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


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)  # SQLite gives back naive UTC


def _address() -> str:
    """This machine's primary IP address as seen by peers, or its host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            return sock.getsockname()[0]
    except OSError:
        return socket.gethostname()


def _bindable(address: str, port: int) -> bool:
    """Whether TCP ``port`` can be bound on ``address`` now (the rendezvous of a gang's rank 0)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, port))
        return True
    except OSError:
        return False
