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

The parts, one concept each, that the :class:`Worker` composes and whose threads it owns: the
computer row (:mod:`~mlcomp.worker.computer`), the claim (:mod:`~mlcomp.worker.claim`), starting
and adopting a child (:mod:`~mlcomp.worker.spawn`), the children followed
(:mod:`~mlcomp.worker.follow`), recording their ends (:mod:`~mlcomp.worker.ends`) and a gang's
part (:mod:`~mlcomp.worker.gang_part`).

Every status change goes through :func:`mlcomp.lifecycle.set_task_status` (or
``retry_or_fail``) and is followed by ``on_change()``; a task's end is also followed by
``on_end()``, which makes a supervisor place the next tasks at once.
"""
from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from typing import Callable, Collection

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from executors import get_executor
from mlcomp import gang
from mlcomp.bus import POLL, Bus, Subscription, computer_channel
from mlcomp.db import Task, TaskStatus, immediate
from mlcomp.db.outage import Outage, retrying, transient
from mlcomp.lifecycle import ACTIVE, set_task_status
from mlcomp.worker import computer, disk, ends, gang_part
from mlcomp.worker.claim import Claimer, claim_query
from mlcomp.worker.follow import Follower, reap_orphans
from mlcomp.worker.gpus import detect_gpus
from mlcomp.worker.process import TaskProcess
from mlcomp.worker.resources import ResourceRecorder
from mlcomp.worker.spawn import Launcher

__all__ = ["Worker"]

log = logging.getLogger(__name__)


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
        self._settings = settings
        self.address = address or computer.primary_address()
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
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.outage = Outage(f"worker {self.name}")  # one line while the store is away
        self.follower = Follower(self.name, settings.stop_grace, clock)
        self.launcher = Launcher(settings, sessionmaker, self.name, self.ports, self.follower, self._exited,
                                 self.outage)
        self.claimer = Claimer(settings, sessionmaker, self.name, self.dag_ids, self.follower, self.launcher,
                               self.bus, lambda: self.on_end(), lambda: self.on_change())

    @property
    def settings(self):
        """The worker's :class:`mlcomp.settings.Settings`; replaced ones (a longer ``stop_grace``)
        reach its parts at once."""
        return self._settings

    @settings.setter
    def settings(self, value) -> None:
        self._settings = self.launcher.settings = self.claimer.settings = value
        self.follower.stop_grace = value.stop_grace

    # -- computer --------------------------------------------------------------------------------
    def register(self) -> None:
        """Creates or updates this computer's row (:func:`mlcomp.worker.computer.register`) with
        the GPUs detected now."""
        self.gpus = detect_gpus(self.declared_gpus)
        self.resources = ResourceRecorder(self.name, self.gpus)
        me = computer.Registration.of_machine(self.name, self.address, self.ports, self.gpus, self.declared_cpus,
                                              self.dag_ids)
        computer.register(self.sessionmaker, me, self.settings.heartbeat_ttl)
        log.info("worker %s registered: %d GPU(s), %s CPUs", self.name, len(self.gpus), me.cpu)

    def heartbeat(self) -> None:
        """Writes ``Computer.heartbeat`` and ``usage`` (:func:`mlcomp.worker.computer.beat`).

        The TTL contract: the next beat must reach the store within ``settings.heartbeat_ttl``
        seconds of this one, or the supervisor takes the computer for dead and fails (or retries
        elsewhere) the tasks placed on it. The heartbeat thread beats every ``heartbeat_ttl / 3``
        seconds, so two beats in a row may be lost (a busy database) before that happens.
        """
        computer.beat(self.beats, self.name, self.resources, len(self.follower.task_ids()))

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
        self.follower.open()
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
            session.scalars(claim_query([-1])).unique().all()
        get_executor("bash")

    def reap_orphans(self) -> list[int]:
        """Kills the children of this computer's attempts that the store no longer has active
        (:func:`mlcomp.worker.follow.reap_orphans`); returns their task ids."""
        return reap_orphans(self.sessionmaker, self.settings.tasks_dir, self.name)

    def shutdown(self, stop_tasks: bool = True, timeout: float | None = None) -> None:
        """Stops the threads at once; with ``stop_tasks`` the running tasks are stopped first
        (SIGTERM, grace, SIGKILL) and end as ``stopped``. Waits at most ``timeout`` seconds
        (default ``stop_grace`` + 5) for them.

        New launches are refused from the start, and launches under way are waited for: a
        child started but not yet handed to the output pump would otherwise be stopped without
        its end being recorded (the task left ``stopping``)."""
        deadline = self.clock() + (self.settings.stop_grace + 5 if timeout is None else timeout)
        self.follower.close()
        while self.follower.any_launching() and self.clock() < deadline:
            time.sleep(0.01)
        if stop_tasks:
            self._stop_tasks(deadline)
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self._while_store_away(functools.partial(computer.unscope, self.sessionmaker, self.name, self.dag_ids),
                               deadline)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        log.info("worker %s shut down", self.name)

    def _stop_tasks(self, deadline: float) -> None:
        """Stops every followed child (marked ``stopping``, SIGTERM, SIGKILL after the grace) and
        waits for them until ``deadline`` (this worker's clock)."""
        runs = self.follower.runs()
        self._while_store_away(functools.partial(
            self._mark_stopping, [run.task_id for run in runs], f"the worker of {self.name} shuts down"), deadline)
        for run in runs:
            self.follower.request_stop(run)
        for run in runs:
            while run.process.alive() and self.clock() < deadline:
                self.follower.enforce(run)
                time.sleep(0.05)
            run.process.join(max(0.0, deadline - self.clock()))

    def _while_store_away(self, write: Callable[[], None], deadline: float) -> None:
        """Runs one of the shutdown's writes, retrying while the store is busy or away (a SQLite
        file locked by a task's child, a PostgreSQL restart) until the shutdown's ``deadline``
        (this worker's clock); after it the error is raised."""
        retrying(write, self.outage, retry_for=max(1.0, deadline - self.clock()), pause=0.2)

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
        return self.follower.task_ids()

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
                self.follower.enforce_all()
            woken = self._wake.wait(max(0.0, min(read_at, self.follower.deadline()) - self.clock()))
            self._wake.clear()
        log.info("worker %s: monitor loop ends: the worker shuts down", self.name)

    # -- claiming --------------------------------------------------------------------------------
    def submit(self, task_id: int) -> bool:
        """Claims task ``task_id`` (:meth:`mlcomp.worker.claim.Claimer.submit`); returns whether it
        now runs here. Every hand-over ends here: the supervisor's (a message on the bus, in-process
        or not), the monitor's read of the store, and the start of a worker after a restart."""
        return self.claimer.submit(task_id)

    def claim(self, task_ids: list[int]) -> list[int]:
        """Claims a wave of tasks at once (:meth:`mlcomp.worker.claim.Claimer.claim`); returns the
        ids that now run here."""
        return self.claimer.claim(task_ids)

    # -- exit ------------------------------------------------------------------------------------
    def _exited(self, ended: list[tuple[TaskProcess, int | None]]) -> None:
        """Records the ends of children that the pump saw exit together, in ONE writer
        transaction (:func:`mlcomp.worker.ends.record_ends`), then tells the other computers of
        a gang among them and calls ``on_end``/``on_change`` once."""
        runs = {process.reporter.task_id: self.follower.get(process.reporter.task_id) for process, _ in ended}
        try:
            with self.sessionmaker.begin() as session:
                immediate(session)
                tasks = ends.record_ends(session, self.name, self.settings.tasks_dir, ended, runs)
        except Exception as e:
            if not transient(e):  # else the store is away: the pump records these ends again later
                self.follower.forget(runs)
            raise
        self.follower.forget(runs)
        for task in tasks.values():
            gang_part.tell(self.bus, self.name, task.computer, task.placement, [])  # a failed part ends the others
        self.on_end()
        self.on_change()

    # -- monitoring ------------------------------------------------------------------------------
    def monitor(self) -> None:
        """One monitor pass: read the active tasks the store places on this computer; signal the
        ones asked to stop, enforce timeouts and the stop grace period, and claim the ones no
        child is watched for here (queued ones not handed over, children of a previous worker)."""
        stmt = select(Task.id, Task.status, Task.attempt, Task.computer, Task.gpus, Task.placement).where(
            Task.status.in_(ACTIVE), or_(Task.computer == self.name, Task.placement.is_not(None)))
        if self.dag_ids is not None:
            stmt = stmt.where(Task.dag_id.in_(self.dag_ids))
        watched = self.follower.runs()  # before the read: see Follower.kill_ended
        with self.sessionmaker() as session:
            rows = [r for r in session.execute(stmt).all()
                    if gang.part_of(self.name, r.computer, r.gpus, r.placement) is not None]
        self.follower.kill_ended(watched, {(r.id, r.attempt) for r in rows})
        for task_id, status, *_ in rows:
            run = self.follower.get(task_id)
            if run is None:
                self.submit(task_id)
            elif status is TaskStatus.stopping:
                self.follower.request_stop(run)
        self.follower.enforce_all()
