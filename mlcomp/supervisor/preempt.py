"""Preemption: running tasks of lower priority paused so that a waiting task of higher priority fits.

When a ready task that the tick could not place has a priority above that of running preemptible
tasks, the supervisor asks the fewest of them whose resources make it fit (on one computer, or on
a gang's set of computers) to pause at their next batch boundary: ``in_progress → stopping`` with
``Task.preempted_by`` set and a ``Preemption`` row. Their worker stops them as for a stop request
(SIGTERM; a train task writes its exact-position ``last_full.pth`` and exits 75) and records them
``paused`` ("preempted by task N", :func:`mlcomp.worker.launch.outcome`); once their GPUs are free
the waiting task, first in the queue order, is placed on them, and a paused task is placed again
like a waiting one, resuming from the batch it paused at (:mod:`mlcomp.lifecycle`).

The rules follow Slurm's ``PreemptMode=REQUEUE`` with partition priority tiers: only a task of
strictly lower priority is preempted, only a preemptible one (``preemptible`` key: train and
catalyst by default, bash and python only when asked), none twice within ``preempt_min_run``
seconds (Slurm's ``PreemptExemptTime``), and nothing with ``scheduler: fifo``. A search trial is
preempted like any train task: paused by a preemption, its search counts it as running, not at a
rung (:mod:`mlcomp.search.step`).

:func:`plan` is pure (tested without a store); :func:`preempt` reads the store and applies it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
from collections import defaultdict
from typing import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlcomp.db import Dag, Preemption, Project, Task, TaskStatus, as_utc
from mlcomp.gang import holdings
from mlcomp.lifecycle import ACTIVE, set_task_status
from mlcomp.settings import Settings
from mlcomp.supervisor.allocate import Free, Placement, free_resources, place, spreads
from mlcomp.supervisor.fairshare import quota_reason
from mlcomp.supervisor.ready import set_waiting_reasons

__all__ = ["Running", "Waiter", "Plan", "plan", "preempt", "MAX_SUBSETS"]

log = logging.getLogger(__name__)
S = TaskStatus

MAX_SUBSETS = 4096
"""The most sets of victims tried for one waiting task; past it the victims are taken in order of
preference until the task fits (fewest no longer guaranteed, the cost bounded)."""


@dataclasses.dataclass
class Running:
    """An active task as :func:`plan` reads it (:func:`_active` reads them from the store)."""

    id: int
    status: TaskStatus
    priority: int
    preemptible: bool
    preempted_by: int | None
    computer: str | None
    gpus: list
    placement: dict | None
    cpu: int
    memory: float
    started: dt.datetime | None
    last_preempted: dt.datetime | None  # the newest Preemption.requested of the task
    project: str


@dataclasses.dataclass(frozen=True)
class Waiter:
    """A ready task the tick could not place: its id, priority and request (the fields of
    :func:`mlcomp.supervisor.allocate.place`)."""

    id: int
    priority: int
    gpu_min: int
    gpu_max: int
    cpu: int
    memory: float
    computer_pin: str | None = None
    single_node: bool = True
    distr: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one waiting task (``task_id``) waits for: ``victims``, the running tasks to ask to
    pause now, and ``draining``, those asked before that still pause for it."""

    task_id: int
    victims: tuple[int, ...]
    draining: tuple[int, ...]


def plan(waiting: Sequence[Waiter], free: dict[str, Free], active: Iterable[Running], now: dt.datetime,
         min_run: float) -> list[Plan]:
    """The preemptions that make the ``waiting`` tasks fit, in their order (the queue's).

    Tasks already pausing for a preemption (``stopping`` with ``preempted_by``) count as freed,
    so victims are not asked twice while they drain. Each waiting task is placed on what is free
    (:func:`~mlcomp.supervisor.allocate.place`, taking it, so a later task cannot count on it);
    one that does not fit gets the fewest victims that make it fit, from the ``in_progress``,
    preemptible tasks of strictly lower priority not preempted in the last ``min_run`` seconds
    (each victim at most once). Among as few victims, the set whose highest priority is lowest
    wins, then the one freeing the fewest GPUs, then the most recently started. A victim frees
    everything it holds (every part of a gang).

    Args:
        waiting: the ready tasks not placed this tick, in queue order.
        free: the free resources of the alive computers (:func:`free_resources`); not changed.
        active: the tasks holding resources on those computers, with their priority, preemption
            state, start and last preemption time (aware UTC).
        now: the time (aware UTC).
        min_run: seconds a preempted task is exempt from another preemption.

    Returns:
        one :class:`Plan` per waiting task with new victims or draining ones, in queue order.
    """
    pool = {name: dataclasses.replace(f, gpus=list(f.gpus)) for name, f in free.items()}
    active = list(active)
    draining = [t for t in active if t.status is S.stopping and t.preempted_by is not None]
    for task in draining:
        _give_back(pool, task)
    cutoff = now - dt.timedelta(seconds=min_run)
    candidates = [t for t in active if t.status is S.in_progress and t.preemptible and t.preempted_by is None
                  and (t.last_preempted is None or t.last_preempted <= cutoff)]
    plans, hopeless = [], {}  # request → the highest priority that found no victims
    for waiter in waiting:
        waits_for = tuple(t.id for t in draining if t.preempted_by == waiter.id)
        victims = ()
        if not isinstance(place(waiter, pool), Placement):
            request = _request(waiter)
            if waiter.priority <= hopeless.get(request, float("-inf")):
                continue
            victims = _fewest(waiter, pool, [t for t in candidates if t.priority < waiter.priority])
            if victims is None:
                hopeless[request] = waiter.priority
                continue
            for task in victims:
                _give_back(pool, task)
            place(waiter, pool)
            candidates = [t for t in candidates if t not in victims]
        if victims or waits_for:
            plans.append(Plan(waiter.id, tuple(t.id for t in victims), waits_for))
    return plans


def _request(task: Waiter) -> tuple:
    return task.gpu_min, task.gpu_max, task.cpu, task.memory, task.computer_pin, task.single_node, task.distr


def _give_back(pool: dict[str, Free], task: Running) -> None:
    """Adds what ``task`` holds on the computers of ``pool`` back to their free resources."""
    for part in holdings(task.computer, task.gpus, task.placement):
        free = pool.get(part.computer)
        if free is not None:
            pool[part.computer] = Free(free.name, sorted({*free.gpus, *(int(g) for g in part.gpus)}),
                                       free.cpu + task.cpu, free.memory + task.memory)


def _gpu_count(task: Running) -> int:
    return sum(len(part.gpus) for part in holdings(task.computer, task.gpus, task.placement))


def _started(task: Running) -> float:
    return task.started.timestamp() if task.started is not None else float("inf")


def _preference(victims: Sequence[Running]) -> tuple:
    """Smaller is better: fewer victims, lower priorities (the highest first), fewer GPUs, newer."""
    return (len(victims), sorted((t.priority for t in victims), reverse=True), sum(map(_gpu_count, victims)),
            sorted(-_started(t) for t in victims), sorted(t.id for t in victims))


def _fewest(waiter: Waiter, pool: dict[str, Free], candidates: list[Running]) -> tuple[Running, ...] | None:
    """The best set of ``candidates`` (:func:`_preference`) whose resources make ``waiter`` fit,
    or None. A task that cannot spread needs them on one computer: each is tried alone."""
    if spreads(waiter):
        return _best_subset(waiter, pool, candidates)
    best = None
    for name in sorted(pool):
        if waiter.computer_pin and name != waiter.computer_pin:
            continue
        here = [t for t in candidates if any(p.computer == name for p in holdings(t.computer, t.gpus, t.placement))]
        found = _best_subset(waiter, {name: pool[name]}, here) if here else None
        if found is not None and (best is None or _preference(found) < _preference(best)):
            best = found
    return best


def _best_subset(waiter: Waiter, pool: dict[str, Free], candidates: list[Running]) -> tuple[Running, ...] | None:
    """The best subset of ``candidates`` after which ``waiter`` fits on ``pool``: the smallest
    size first; past :data:`MAX_SUBSETS` tries, the shortest fitting prefix in preference order."""
    ordered = sorted(candidates, key=lambda t: _preference([t]))
    tried = 0
    for size in range(1, len(ordered) + 1):
        fitting = []
        for subset in itertools.combinations(ordered, size):
            tried += 1
            if tried > MAX_SUBSETS:
                return _shortest_prefix(waiter, pool, ordered)
            if _fits(waiter, pool, subset):
                fitting.append(subset)
        if fitting:
            return min(fitting, key=_preference)
    return None


def _shortest_prefix(waiter: Waiter, pool: dict[str, Free], ordered: list[Running]) -> tuple[Running, ...] | None:
    for size in range(1, len(ordered) + 1):
        if _fits(waiter, pool, ordered[:size]):
            return tuple(ordered[:size])
    return None


def _fits(waiter: Waiter, pool: dict[str, Free], victims: Iterable[Running]) -> bool:
    """Whether ``waiter`` fits on ``pool`` with what ``victims`` hold given back (``pool`` unchanged)."""
    trial = {name: dataclasses.replace(f, gpus=list(f.gpus)) for name, f in pool.items()}
    for task in victims:
        _give_back(trial, task)
    return isinstance(place(waiter, trial), Placement)


_RUNNING_COLUMNS = (Task.id, Task.status, Task.priority, Task.preemptible, Task.preempted_by, Task.computer,
                    Task.gpus, Task.placement, Task.cpu, Task.memory, Task.started)


def _active(session: Session) -> list[Running]:
    """The tasks holding resources (queued, in_progress, stopping), with their last preemption."""
    last = (select(func.max(Preemption.requested)).where(Preemption.task_id == Task.id)
            .correlate(Task).scalar_subquery().label("last_preempted"))
    stmt = (select(*_RUNNING_COLUMNS, last, Project.name.label("project"))
            .join(Dag, Dag.id == Task.dag_id).join(Project, Project.id == Dag.project_id)
            .where(Task.status.in_(ACTIVE), Task.computer.is_not(None)).order_by(Task.id))
    rows = []
    for row in session.execute(stmt):
        values = dict(row._mapping)
        values["started"], values["last_preempted"] = as_utc(row.started), as_utc(row.last_preempted)
        rows.append(Running(**values))
    return rows


def preempt(session: Session, settings: Settings, unplaced: Sequence, alive: Sequence, now: dt.datetime) -> list[Task]:
    """The supervisor's preemption step, after placement in the same transaction: plans
    (:func:`plan`) for the ready rows it could not place, asks each victim to pause
    (``in_progress → stopping``, reason "preempted by task N", ``preempted_by`` = N, a
    ``Preemption`` row requested now) and writes each waiting task's reason ("waits for task 7
    to pause (preempted for it)"). Nothing with ``settings.scheduler == "fifo"``. Does not commit.

    Args:
        session: the tick's session.
        settings: ``scheduler`` and ``preempt_min_run`` (seconds).
        unplaced: the ready rows (:func:`mlcomp.supervisor.ready.find_ready`: id, priority,
            project and request) not placed, in queue order; a task its project's ``gpu_quota``
            holds back preempts nothing.
        alive: the alive computers the supervisor places on.
        now: the tick's time (aware UTC).

    Returns:
        the tasks asked to pause now.
    """
    if settings.scheduler == "fifo" or not unplaced:
        return []
    active = _active(session)
    running = [t for t in active if t.status is not S.queued]
    if not any(t.preemptible or t.preempted_by is not None for t in running):
        return []
    lowest = min(t.priority for t in running if t.preemptible or t.preempted_by is not None)
    held: dict[str, int] = defaultdict(int)
    for t in active:
        held[t.project] += _gpu_count(t)
    waiting = [Waiter(**{f: getattr(row, f) for f in _WAITER_FIELDS}) for row in unplaced if row.priority > lowest
               and quota_reason(row.project, held[row.project], settings.gpu_quota.get(row.project), row.gpu_min)
               is None]  # a task its project's quota holds back would not take the GPUs freed
    if not waiting:
        return []
    plans = plan(waiting, free_resources(alive, active), running, now, settings.preempt_min_run)
    victims = []
    for p in plans:
        for task_id in p.victims:
            task = set_task_status(session, session.get(Task, task_id), S.stopping, f"preempted by task {p.task_id}",
                                   now)
            task.preempted_by = p.task_id
            session.add(Preemption(task_id=task.id, attempt=task.attempt, by_task_id=p.task_id, requested=now))
            victims.append(task)
        if p.victims:
            log.info("Supervisor: task %s preempts task(s) %s", p.task_id, ", ".join(map(str, p.victims)))
    set_waiting_reasons(session, {p.task_id: _waits(p.victims + p.draining) for p in plans})
    return victims


_WAITER_FIELDS = ("id", "priority", "gpu_min", "gpu_max", "cpu", "memory", "computer_pin", "single_node", "distr")


def _waits(ids: Sequence[int]) -> str:
    names = "task " + str(ids[0]) if len(ids) == 1 else "tasks " + ", ".join(map(str, ids))
    return f"waits for {names} to pause (preempted for it)"
