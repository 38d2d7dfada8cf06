"""The supervisor: one tick places ready tasks on computers; an APScheduler job runs the tick on an
interval and at once when woken (a message on the bus's :data:`~mlcomp.bus.SUPERVISOR` channel), and
the embedded worker runs it in its own thread right after a task's end (``wake(inline=True)``), so a
dependent starts without a thread hand-off.

A tick is one short transaction: lock the computer rows (``SELECT … FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) so two supervisors never hand out the same GPU, sweep the tasks of
silent computers, move the running composite tasks along (each kind's driver,
:data:`mlcomp.search.drivers.DRIVERS`: finished grid searches end, searches add and prune trials),
skip tasks whose dependencies failed, start ready composite tasks, then place ready tasks
(:func:`mlcomp.supervisor.allocate.place`) and mark them queued. After the commit each computer that has news (tasks placed there, a stop request, a gang
part to kill) gets one message on its channel (:mod:`mlcomp.bus`). Waiting and
active tasks are read as light rows (a few columns), placed tasks are queued in bulk without
being loaded, and waiting reasons are written in one bulk UPDATE, so a tick stays cheap
with thousands of tasks in the store; resources in use are always computed from the tasks.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Collection

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp import gang
from mlcomp.bus import SUPERVISOR, Bus, Subscription, computer_channel
from mlcomp.db import Computer, Task, TaskStatus, as_utc, immediate, utcnow
from mlcomp.db import Supervisor as SupervisorRow
from mlcomp.db.outage import Outage
from mlcomp.settings import Settings
from mlcomp.lifecycle import ACTIVE, queue_many, retry_or_fail, set_task_status
from mlcomp.search.drivers import advance_all
from mlcomp.supervisor.allocate import FreePool, free_resources
from mlcomp.supervisor.fairshare import FairShare, plan
from mlcomp.supervisor.lease import Lease, lease_seconds
from mlcomp.supervisor.preempt import preempt
from mlcomp.supervisor.ready import find_ready, set_waiting_reasons

__all__ = ["Supervisor", "sweep_dead_computers", "alive_computers", "active_tasks", "serving", "ACTIVE_COLUMNS"]

log = logging.getLogger(__name__)
S = TaskStatus
JOB_ID = "mlcomp-supervisor-tick"
BEAT_ID = "mlcomp-supervisor-heartbeat"


def alive_computers(session: Session, settings: Settings, now: dt.datetime, lock: bool = False,
                    outage: tuple[dt.datetime, dt.datetime] | None = None) -> list[Computer]:
    """Computers whose last heartbeat is at most ``settings.heartbeat_ttl`` seconds old, by name;
    ``lock`` takes their row locks (PostgreSQL) until the transaction ends.

    Silence counts only while the store could take heartbeats: with ``outage`` (when the store
    was last unreachable, from, to), a computer alive when it began stays alive until
    ``heartbeat_ttl`` seconds after it ended, so no computer is taken for dead, nor its tasks
    failed, for an outage of the database."""
    stmt = select(Computer).order_by(Computer.name)
    if lock:
        stmt = stmt.with_for_update()
    ttl = dt.timedelta(seconds=settings.heartbeat_ttl)
    cutoff = now - ttl
    if outage is not None and now < outage[1] + ttl:
        cutoff = min(cutoff, outage[0] - ttl)
    return [c for c in session.scalars(stmt) if c.heartbeat is not None and as_utc(c.heartbeat) >= cutoff]


def _serves(computer: Computer, dag_ids: frozenset[int] | None) -> bool:
    """Whether ``computer``'s worker claims the tasks of every DAG in ``dag_ids`` (None: of all
    DAGs); the worker of a ``dag submit --wait`` claims only its own DAGs' tasks."""
    return computer.dag_ids is None or (dag_ids is not None and dag_ids <= set(computer.dag_ids))


def serving(session: Session, settings: Settings, now: dt.datetime) -> bool:
    """Whether a supervisor of every DAG (``mlcomp server``, on any machine) runs against this
    store: one whose heartbeat row is at most ``settings.heartbeat_ttl`` seconds old."""
    cutoff = now - dt.timedelta(seconds=settings.heartbeat_ttl)
    return any(as_utc(beat) >= cutoff for beat in session.scalars(select(SupervisorRow.heartbeat)))


def _when(value: dt.datetime) -> str:
    return as_utc(value).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


ACTIVE_COLUMNS = (Task.id, Task.type, Task.status, Task.computer, Task.gpus, Task.cpu, Task.memory, Task.queued,
                  Task.placement)
"""The columns :func:`active_tasks` reads: what free resources, stale hand-overs and the grid
roll-up need."""


def active_tasks(session: Session) -> list:
    """The active tasks (queued, in_progress or stopping), by id, as light rows with the fields of
    :data:`ACTIVE_COLUMNS`: those with a ``computer`` hold its resources; running grid searches
    have none."""
    return session.execute(select(*ACTIVE_COLUMNS).where(Task.status.in_(ACTIVE)).order_by(Task.id)).all()


def sweep_dead_computers(session: Session, settings: Settings, alive: list[Computer], active: list,
                         now: dt.datetime) -> int:
    """Fails (or re-queues, per ``retries``) the ``active`` tasks (rows with ``id``, ``computer``
    and ``placement``) that hold resources on a computer not in ``alive`` (for a gang, any of its
    computers: the whole group), which frees their GPUs on every computer; a task being stopped
    ends as stopped, and one pausing for a preemption (``preempted_by`` set) ends paused ("preempted
    by task N; computer X went silent"), so it is placed again by itself, resuming from its carried
    checkpoint if any (:mod:`mlcomp.worker.carry`). Returns how many tasks changed."""
    names = {c.name for c in alive}
    changed = 0
    for row in active:
        silent = [name for name in gang.computers_of(row.computer, row.placement) if name not in names]
        if not silent:
            continue
        task = session.get(Task, row.id)
        computer = session.get(Computer, silent[0])
        beat = _when(computer.heartbeat) if computer and computer.heartbeat else "never"
        reason = (f"computer {silent[0]!r} silent since {beat} (heartbeat_ttl "
                  f"{settings.heartbeat_ttl:g} s, checked at {_when(now)})")
        if task.status is S.stopping and task.preempted_by is not None:
            reason = f"preempted by task {task.preempted_by}; computer {silent[0]!r} went silent ({reason})"
            set_task_status(session, task, S.paused, reason, now)
        elif task.status is S.stopping:
            set_task_status(session, task, S.stopped, reason, now)
        else:
            retry_or_fail(session, task, reason, now)
        log.warning("Supervisor: task %s: %s", task.id, reason)
        changed += 1
    return changed


class Supervisor:
    """Places ready tasks on computers and hands them to workers.

    Args:
        settings: mlcomp settings (``heartbeat_ttl``).
        sessionmaker: the store.
        bus: where wake-ups arrive and placements go (default: ``Bus.of(settings)``).
        now: the clock, a callable returning an aware UTC datetime (tests pass a fake).
        interval: seconds between ticks when nothing wakes the supervisor.
        dag_ids: run only the tasks of these DAGs (``dag submit --wait`` without a server);
            None runs every DAG.
    """

    def __init__(self, settings: Settings, sessionmaker: sessionmaker, bus: Bus | None = None,
                 now: Callable[[], dt.datetime] = utcnow, interval: float = 1.0,
                 dag_ids: Collection[int] | None = None):
        self.settings = settings
        self.dag_ids = None if dag_ids is None else frozenset(dag_ids)
        self.sessionmaker = sessionmaker
        self.bus = bus or Bus.of(settings)
        self.now = now
        self.interval = interval
        self._scheduler: BackgroundScheduler | None = None
        self._pending = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._subscription: Subscription | None = None
        self._told_stop: set[tuple[int, str]] = set()  # (task, computer) told of a stop request
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = Lease(self.id, lease_seconds(settings)) if self.dag_ids is None else None
        self.outage = Outage("supervisor")  # one line while the store is away
        self.fairshare = FairShare(settings)  # the projects' decayed GPU usage, kept between ticks

    def _last_outage(self) -> tuple[dt.datetime, dt.datetime] | None:
        """When the store was last unreachable from here (from, to), as aware UTC datetimes; an
        outage this tick ends lasts until now."""
        since = self.outage.since
        last = (since, time.time()) if since is not None else self.outage.last
        return None if last is None else tuple(dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in last)

    def tick(self) -> list[tuple[int, str]]:
        """Runs one round; returns the ``(task_id, computer)`` pairs handed over (placed now, or
        queued too long and sent again). Ready tasks left unplaced may have running tasks of lower
        priority asked to pause for them (:func:`~mlcomp.supervisor.preempt.preempt`), whose
        computers are told at once."""
        with self.sessionmaker.begin() as session:
            now = self.now()
            immediate(session)
            if self.lease is not None and not self.lease.hold(session, now):
                return []  # another supervisor of every DAG holds the lease: stand by
            alive = alive_computers(session, self.settings, now, lock=True, outage=self._last_outage())
            active = active_tasks(session)
            holding = [t for t in active if t.computer is not None]
            sweep_dead_computers(session, self.settings, alive, holding, now)
            names = {c.name for c in alive}
            news = self._news(active, names)
            holding = [t for t in holding  # the others were just swept
                       if set(gang.computers_of(t.computer, t.placement)) <= names]
            ended = advance_all(session, now, active)  # each composite kind's driver (mlcomp.search.drivers)
            parents, ready = find_ready(session, now, self.dag_ids)
            for parent in parents:
                set_task_status(session, parent, S.queued, "grid search ready", now)
                set_task_status(session, parent, S.in_progress, "grid search: its cells run as tasks", now)
            if parents:  # their cells are ready now: place them in this tick, not the next
                ready = find_ready(session, now, self.dag_ids)[1]
            fresh = self._place(session, ready, alive, holding, now)
            placed = self._stale(holding, now) + fresh
            taken = {task_id for task_id, _ in fresh}
            preempted = preempt(session, self.settings, [r for r in ready if r.id not in taken],
                                 [c for c in alive if _serves(c, self.dag_ids)], now)
            for task in preempted:  # their computers stop them now, as for a stop request
                news.update(gang.computers_of(task.computer, task.placement))
        if ended or parents:
            self._pending.set()  # ended/started grid searches make more tasks ready: tick again
        self._publish(placed, news)
        return placed

    def _news(self, active: list, alive: set[str]) -> set[str]:
        """The live computers to tell to read the store: those running a part of a task being
        stopped (once per task and computer) or of a gang that a silent computer fails now."""
        news, told = set(), set()
        for row in active:
            computers = gang.computers_of(row.computer, row.placement) if row.computer else []
            if any(name not in alive for name in computers):
                news.update(name for name in computers if name in alive)
            elif row.status is S.stopping:
                told.update((row.id, name) for name in computers)
        news.update(name for _, name in told - self._told_stop)
        self._told_stop = told
        return news

    def _publish(self, placed: list[tuple[int, str]], news: set[str]) -> None:
        """One message per computer: the ids of the tasks placed there, or none (read the
        store) for a computer in ``news`` only."""
        ids: dict[str, list[int]] = {name: [] for name in news}
        for task_id, computer in placed:
            ids.setdefault(computer, []).append(task_id)
        for computer, task_ids in ids.items():
            self.bus.publish(computer_channel(computer), task_ids)

    def _stale(self, active: list, now: dt.datetime) -> list[tuple[int, str]]:
        """Queued tasks not started within ``heartbeat_ttl`` on a live computer: a hand-over lost
        to a restart or a lost message. Sending it again is safe: a worker starts a task only
        while it is queued there and not already running."""
        cutoff = now - dt.timedelta(seconds=self.settings.heartbeat_ttl)
        stale = [(t.id, t.computer) for t in active if t.status is S.queued and t.queued is not None
                 and as_utc(t.queued) < cutoff]
        for task_id, computer in stale:
            log.warning("Supervisor: task %s queued on %s for over %g s; sending it again",
                        task_id, computer, self.settings.heartbeat_ttl)
        return stale

    def _place(self, session: Session, ready: list, alive: list[Computer], active: list,
               now: dt.datetime) -> list[tuple[int, str]]:
        """Places the ``ready`` rows (from :func:`find_ready`) in the order of
        :func:`~mlcomp.supervisor.fairshare.plan` (priority, fair share between projects, quotas)
        through one :class:`~mlcomp.supervisor.allocate.FreePool` (the choices of
        :func:`~mlcomp.supervisor.allocate.place`, O(log computers) each), then marks the placed
        ones queued without loading them (:func:`~mlcomp.lifecycle.queue_many`: two statements
        for all) and writes waiting reasons with one UPDATE per distinct reason. The cost grows
        with ready tasks plus computers, not with their product, and its statements are as many
        for a wave of 800 tasks as for one."""
        if not ready:
            return []
        alive = [c for c in alive if _serves(c, self.dag_ids)]
        addresses = {c.name: c.address or c.name for c in alive}  # a gang's rank 0 is reached there
        pool = FreePool(free_resources(alive, active))
        placed, queued, reasons = [], [], {}
        for decision in plan(ready, self.fairshare.standing_for(session, ready, now), self.settings, pool):
            row, where = decision.row, decision.where
            if isinstance(where, str):
                if row.waiting_reason != where:
                    reasons[row.id] = where
                continue
            queued.append(dict(
                id=row.id, name=row.name, status=row.status, attempt=row.attempt, resume_from=row.resume_from,
                computer=where.computer, gpus=where.gpus,
                placement=gang.record(list(where.parts), addresses[where.computer]) if where.parts else None,
                reason=f"placed on {', '.join(p.computer for p in where.parts) or where.computer}"))
            placed.append((row.id, where.computer))
        queue_many(session, queued, now)
        set_waiting_reasons(session, reasons)
        return placed

    def run_pending(self) -> None:
        """Ticks until no wake-up is pending. Concurrent calls collapse into the running one, and
        a wake-up that arrives while a tick runs is never lost."""
        self._pending.set()
        while self._pending.is_set() and not self._closed:
            if not self._lock.acquire(blocking=False):
                return  # the running call sees _pending after its tick or after releasing
            try:
                while self._pending.is_set() and not self._closed:
                    self._pending.clear()
                    self.outage.run(self.tick, "Supervisor: tick failed")
            finally:
                self._lock.release()

    def wake(self, inline: bool = False) -> None:
        """Asks for a tick now (from any thread).

        Args:
            inline: tick in the calling thread when no tick runs (a running one ticks again), if
                the supervisor is started. The embedded worker's exit thread does this after a
                task ends, so the next task is placed and launched without a thread hand-off.
        """
        self._pending.set()
        if inline and self._scheduler is not None:
            self.run_pending()
            return
        if self._lock.locked():
            return  # the running tick sees _pending before it releases, or just after
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            try:
                scheduler.modify_job(JOB_ID, next_run_time=dt.datetime.now(dt.timezone.utc))
            except Exception:  # shutting down: the next start ticks anyway
                log.debug("Supervisor: wake ignored", exc_info=True)

    def start(self) -> "Supervisor":
        """Starts the APScheduler job (first tick at once), registers for in-process wake-ups,
        writes a heartbeat row every ``heartbeat_ttl / 3`` seconds when it supervises every DAG
        (so ``dag submit --wait`` on any machine follows it instead of placing tasks itself),
        and subscribes to the bus's :data:`~mlcomp.bus.SUPERVISOR` channel (submissions, stop
        requests and task ends wake it at once; otherwise it ticks every ``interval`` seconds)."""
        self._closed = False
        self._scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        self._scheduler.add_job(
            self.run_pending, "interval", seconds=self.interval, id=JOB_ID, max_instances=2,
            coalesce=True, next_run_time=dt.datetime.now(dt.timezone.utc),
        )
        if self.dag_ids is None:  # a supervisor of every DAG says so in the store (see serving())
            self.heartbeat()
            self._scheduler.add_job(self._beat, "interval", seconds=self.settings.heartbeat_ttl / 3, id=BEAT_ID)
        self._scheduler.start()
        self._subscription = self.bus.subscribe(SUPERVISOR, lambda _ids: self.wake())
        log.info("Supervisor: started (interval %g s)", self.interval)
        return self

    def heartbeat(self) -> None:
        """Writes this supervisor's heartbeat row (now, UTC), which :func:`serving` reads, and
        takes or renews the supervisor lease (:mod:`mlcomp.supervisor.lease`) in the same
        transaction; a standby that takes it over ticks at once."""
        was = self.lease.held if self.lease is not None else None
        with self.sessionmaker.begin() as session:
            immediate(session)
            held = self.lease is not None and self.lease.hold(session, self.now(), renew=True)
            row = session.get(SupervisorRow, self.id)
            if row is None:
                session.add(SupervisorRow(id=self.id, host=socket.gethostname(), pid=os.getpid(), heartbeat=self.now()))
            else:
                row.heartbeat = self.now()
        if held and was is not True:
            self.wake()

    def _beat(self) -> None:
        self.outage.run(self.heartbeat, "Supervisor: heartbeat failed")

    def shutdown(self) -> None:
        """Stops the job and the subscription, waits for a running tick (an inline one
        included), deletes the heartbeat row and releases the supervisor lease if it holds it
        (waking the supervisors, so a standby takes over at once); no tick starts afterwards."""
        self._closed = True
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
            if self.dag_ids is None:
                with self.sessionmaker.begin() as session:
                    immediate(session)
                    session.execute(delete(SupervisorRow).where(SupervisorRow.id == self.id))
        with self._lock:  # an inline tick in a worker's thread ends before the worker shuts down
            pass
        if self.lease is not None and self.lease.held:  # hand over now, not when the lease expires
            try:
                with self.sessionmaker.begin() as session:
                    immediate(session)
                    self.lease.release(session)
                self.bus.publish(SUPERVISOR)  # a standby's tick takes the lease at once
            except Exception:  # the lease then lapses within heartbeat_ttl / 2 s
                log.warning("Supervisor: cannot release the supervisor lease", exc_info=True)
        log.info("Supervisor: stopped")
