"""The supervisor: one tick places ready tasks on computers; an APScheduler job runs the tick on an
interval and at once when woken, and the embedded worker runs it in its own thread right after a
task's end (``wake(inline=True)``), so a dependent starts without a thread hand-off.

A tick is one short transaction: lock the computer rows (``SELECT … FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) so two supervisors never hand out the same GPU, sweep the tasks of
silent computers, end finished grid searches, skip tasks whose dependencies failed, start ready
grid searches, then place ready tasks (:func:`mlcomp.supervisor.allocate.place`) and mark them
queued. After the commit each placement is dispatched to its computer's worker. Waiting and
active tasks are read as light rows (a few columns), only the tasks whose status changes are
loaded as objects, and waiting reasons are written in one bulk UPDATE, so a tick stays cheap
with thousands of tasks in the store; resources in use are always computed from the tasks.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from typing import Callable, Collection

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp import gang
from mlcomp.db import Computer, Task, TaskStatus, immediate, utcnow
from mlcomp.db import Supervisor as SupervisorRow
from mlcomp.settings import Settings
from mlcomp import wake as wakeup
from mlcomp.gridsearch import is_grid_parent, rollup_grid_parents
from mlcomp.lifecycle import ACTIVE, retry_or_fail, set_task_status
from mlcomp.search import SEARCH_TYPE
from mlcomp.search.step import advance_searches
from mlcomp.supervisor.allocate import free_resources, place
from mlcomp.supervisor.dispatch import Dispatcher
from mlcomp.supervisor.ready import find_ready, set_waiting_reasons

__all__ = ["Supervisor", "sweep_dead_computers", "alive_computers", "active_tasks", "serving", "ACTIVE_COLUMNS"]

log = logging.getLogger(__name__)
S = TaskStatus
JOB_ID = "mlcomp-supervisor-tick"
BEAT_ID = "mlcomp-supervisor-heartbeat"


def alive_computers(session: Session, settings: Settings, now: dt.datetime, lock: bool = False) -> list[Computer]:
    """Computers whose last heartbeat is at most ``settings.heartbeat_ttl`` seconds old, by name;
    ``lock`` takes their row locks (PostgreSQL) until the transaction ends."""
    stmt = select(Computer).order_by(Computer.name)
    if lock:
        stmt = stmt.with_for_update()
    cutoff = now - dt.timedelta(seconds=settings.heartbeat_ttl)
    return [c for c in session.scalars(stmt) if c.heartbeat is not None and _aware(c.heartbeat) >= cutoff]


def _serves(computer: Computer, dag_ids: frozenset[int] | None) -> bool:
    """Whether ``computer``'s worker claims the tasks of every DAG in ``dag_ids`` (None: of all
    DAGs); the worker of a ``dag submit --wait`` claims only its own DAGs' tasks."""
    return computer.dag_ids is None or (dag_ids is not None and dag_ids <= set(computer.dag_ids))


def serving(session: Session, settings: Settings, now: dt.datetime) -> bool:
    """Whether a supervisor of every DAG (``mlcomp server``, on any machine) runs against this
    store: one whose heartbeat row is at most ``settings.heartbeat_ttl`` seconds old."""
    cutoff = now - dt.timedelta(seconds=settings.heartbeat_ttl)
    return any(_aware(beat) >= cutoff for beat in session.scalars(select(SupervisorRow.heartbeat)))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _when(value: dt.datetime) -> str:
    return _aware(value).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    ends as stopped. Returns how many tasks changed."""
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
        if task.status is S.stopping:
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
        dispatcher: where placements go (:mod:`mlcomp.supervisor.dispatch`).
        now: the clock, a callable returning an aware UTC datetime (tests pass a fake).
        interval: seconds between ticks when nothing wakes the supervisor.
        dag_ids: run only the tasks of these DAGs (``dag submit --wait`` without a server);
            None runs every DAG.
    """

    def __init__(self, settings: Settings, sessionmaker: sessionmaker, dispatcher: Dispatcher,
                 now: Callable[[], dt.datetime] = utcnow, interval: float = 1.0,
                 dag_ids: Collection[int] | None = None):
        self.settings = settings
        self.dag_ids = None if dag_ids is None else frozenset(dag_ids)
        self.sessionmaker = sessionmaker
        self.dispatcher = dispatcher
        self.now = now
        self.interval = interval
        self._scheduler: BackgroundScheduler | None = None
        self._pending = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._listener: wakeup.WakeListener | None = None
        self._redis: wakeup.RedisWakeListener | None = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def tick(self) -> list[tuple[int, str]]:
        """Runs one round; returns the ``(task_id, computer)`` pairs dispatched."""
        with self.sessionmaker.begin() as session:
            now = self.now()
            immediate(session)
            alive = alive_computers(session, self.settings, now, lock=True)
            active = active_tasks(session)
            holding = [t for t in active if t.computer is not None]
            sweep_dead_computers(session, self.settings, alive, holding, now)
            names = {c.name for c in alive}
            holding = [t for t in holding  # the others were just swept
                       if set(gang.computers_of(t.computer, t.placement)) <= names]
            ended = rollup_grid_parents(session, now, [t.id for t in active if is_grid_parent(t)])
            ended += advance_searches(session, now, [t.id for t in active if t.type == SEARCH_TYPE])
            parents, ready = find_ready(session, now, self.dag_ids)
            for parent in parents:
                set_task_status(session, parent, S.queued, "grid search ready", now)
                set_task_status(session, parent, S.in_progress, "grid search: its cells run as tasks", now)
            if parents:  # their cells are ready now: place them in this tick, not the next
                ready = find_ready(session, now, self.dag_ids)[1]
            placed = self._stale(holding, now) + self._place(session, ready, alive, holding, now)
        if ended or parents:
            self._pending.set()  # ended/started grid searches make more tasks ready: tick again
        return self._dispatch(placed)

    def _stale(self, active: list, now: dt.datetime) -> list[tuple[int, str]]:
        """Queued tasks not started within ``heartbeat_ttl`` on a live computer: a hand-over lost
        to a restart or a dropped message. Dispatching again is safe: a worker starts a task only
        while it is queued and not already running there."""
        cutoff = now - dt.timedelta(seconds=self.settings.heartbeat_ttl)
        stale = [(t.id, t.computer) for t in active if t.status is S.queued and t.queued is not None
                 and _aware(t.queued) < cutoff]
        for task_id, computer in stale:
            log.warning("Supervisor: task %s queued on %s for over %g s; dispatching it again",
                        task_id, computer, self.settings.heartbeat_ttl)
        return stale

    def _place(self, session: Session, ready: list, alive: list[Computer], active: list,
               now: dt.datetime) -> list[tuple[int, str]]:
        """Places the ``ready`` rows (from :func:`find_ready`); only the placed ones are loaded."""
        if not ready:
            return []
        alive = [c for c in alive if _serves(c, self.dag_ids)]
        addresses = {c.name: c.address or c.name for c in alive}  # a gang's rank 0 is reached there
        free = free_resources(alive, active)
        placed, reasons = [], {}
        waits: dict[tuple, str] = {}  # request → why it waits; free only shrinks within a tick
        for row in ready:
            request = (row.gpu_min, row.gpu_max, row.cpu, row.memory, row.computer_pin, row.single_node, row.distr)
            where = waits.get(request) or place(row, free)
            if isinstance(where, str):
                waits[request] = where
                if row.waiting_reason != where:
                    reasons[row.id] = where
                continue
            task = session.get(Task, row.id)
            task.computer, task.gpus = where.computer, where.gpus
            task.placement = gang.record(list(where.parts), addresses[where.computer]) if where.parts else None
            names = ", ".join(p.computer for p in where.parts) or where.computer
            set_task_status(session, task, S.queued, f"placed on {names}", now)
            placed.append((task.id, where.computer))
        set_waiting_reasons(session, reasons)
        return placed

    def _dispatch(self, placed: list[tuple[int, str]]) -> list[tuple[int, str]]:
        for task_id, computer in placed:
            try:
                self.dispatcher.dispatch(task_id, computer)
            except Exception as e:  # a lost hand-over must not stop the others
                log.exception("Supervisor: dispatch of task %s to %s failed", task_id, computer)
                self._undo(task_id, f"dispatch to {computer!r} failed: {e}")
        return placed

    def _undo(self, task_id: int, reason: str) -> None:
        with self.sessionmaker.begin() as session:
            immediate(session)
            task = session.get(Task, task_id)
            if task is not None and task.status is S.queued:
                set_task_status(session, task, S.not_ran, reason, self.now())
                task.waiting_reason = reason

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
                    try:
                        self.tick()
                    except Exception:
                        log.exception("Supervisor: tick failed")
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

    def start(self, listen: bool = True) -> "Supervisor":
        """Starts the APScheduler job (first tick at once), registers for in-process wake-ups,
        writes a heartbeat row every ``heartbeat_ttl / 3`` seconds when it supervises every DAG
        (so ``dag submit --wait`` on any machine follows it instead of placing tasks itself),
        with ``listen`` listens on the root's wake socket, and with ``settings.broker_url``
        subscribes to the database's Redis wake channel (:mod:`mlcomp.wake`)."""
        self._closed = False
        self._scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
        self._scheduler.add_job(
            self.run_pending, "interval", seconds=self.interval, id=JOB_ID, max_instances=2,
            coalesce=True, next_run_time=dt.datetime.now(dt.timezone.utc),
        )
        if self.dag_ids is None:  # a supervisor of every DAG says so in the store (see serving())
            self.heartbeat()
            self._scheduler.add_job(self.heartbeat, "interval", seconds=self.settings.heartbeat_ttl / 3, id=BEAT_ID)
        self._scheduler.start()
        wakeup.add_listener(self)
        if listen:
            self._listener = wakeup.WakeListener(self.settings.root, self.wake)
            if not self._listener.start():
                self._listener = None
        if self.settings.broker_url:
            self._redis = wakeup.RedisWakeListener(self.settings.broker_url, self.settings.db_url, self.wake)
            if not self._redis.start():
                self._redis = None
        log.info("Supervisor: started (interval %g s)", self.interval)
        return self

    def heartbeat(self) -> None:
        """Writes this supervisor's heartbeat row (now, UTC), which :func:`serving` reads."""
        with self.sessionmaker.begin() as session:
            immediate(session)
            row = session.get(SupervisorRow, self.id)
            if row is None:
                session.add(SupervisorRow(id=self.id, host=socket.gethostname(), pid=os.getpid(), heartbeat=self.now()))
            else:
                row.heartbeat = self.now()

    @property
    def listening(self) -> bool:
        """True when this supervisor answers :func:`mlcomp.wake.poke` for its root."""
        return self._listener is not None

    def shutdown(self) -> None:
        """Stops the job and the wake listener, waits for a running tick (an inline one
        included) and deletes the heartbeat row; no tick starts afterwards."""
        self._closed = True
        wakeup.remove_listener(self)
        for listener in (self._listener, self._redis):
            if listener is not None:
                listener.close()
        self._listener = self._redis = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
            if self.dag_ids is None:
                with self.sessionmaker.begin() as session:
                    immediate(session)
                    session.execute(delete(SupervisorRow).where(SupervisorRow.id == self.id))
        with self._lock:  # an inline tick in a worker's thread ends before the worker shuts down
            pass
        log.info("Supervisor: stopped")
