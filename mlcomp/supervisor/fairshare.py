"""The order in which the supervisor tries the ready tasks: priority, then fair share between
projects (a DAG's ``info.project``), and per-project GPU quotas.

**Usage.** A project's usage ``U_p`` is the GPU-seconds its tasks' attempts held, each second
weighted by ``2^(-age / h)`` (``h``: the ``fairshare_half_life`` setting, seconds), so an attempt
of ``g`` GPUs that held them from ``start`` to ``end`` (now while it runs) counts::

    g · ∫[start, end] 2^(-(now - t)/h) dt  =  g · h/ln 2 · (2^(-(now - end)/h) - 2^(-(now - start)/h))

:class:`FairShare` keeps the ended attempts' sum and decays it by ``2^(-Δt/h)`` from tick to tick,
adding only the attempts that ended since; running attempts are computed each tick.

**Fair-share factor** (Slurm's classic one, ``priority/multifactor``): with ``S_p`` the project's
weight (the ``shares`` setting, 1 when not named)::

    F_p = 2^(-(U_p / ΣU) / (S_p / ΣS))        (ΣU = 0: every F_p = 1)

over the projects named in ``shares``, with usage, holding GPUs or waiting. ``F_p`` is 1 for a
project that used nothing, ½ for one that used exactly its share, and falls towards 0 above it.

**Order** (:class:`PlacementOrder`): priority, highest first; within one priority the project
with the highest ``F_p`` (furthest below its share) first, ties broken by the GPUs the project
holds now divided by its share (fewest first), then by name; within a project, oldest first
(creation time, then id). After each task placed its project's GPUs held grow, so the first wave
on an idle fleet goes round-robin across projects. With the ``scheduler: fifo`` setting: priority,
then creation time, then id.

**Quotas.** A project holding (counting the tasks placed earlier in the tick) ``gpu_quota`` GPUs
gets no task that would take it over: the task waits with a reason saying so, and tasks of other
projects behind it are still placed. A GPU range request (``gpu: 1-4``) is cut to what the quota
leaves.

:func:`plan` is the pure part the supervisor and :func:`mlcomp.supervisor.queue.queue` share, so
the queue shown is the order the next tick takes.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import itertools
import math
import types
from collections import defaultdict, deque
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import Dag, Project, Task
from mlcomp.gang import holdings
from mlcomp.lifecycle import ACTIVE
from mlcomp.settings import Settings
from mlcomp.supervisor.allocate import FreePool, Placement
from mlcomp.usage import attempts_held

__all__ = ["decayed", "factors", "FairShare", "Standing", "PlacementOrder", "Decision", "plan", "quota_reason"]

LATE = 3600.0
"""Seconds after its end within which an attempt's end written late (a slow commit, a worker's
clock behind the supervisor's) is still added to the cached usage; a supervisor restart
recomputes everything anyway."""


def decayed(gpus: int, start: dt.datetime, end: dt.datetime, now: dt.datetime, half_life: float) -> float:
    """Decayed GPU-seconds of ``gpus`` GPUs held from ``start`` to ``end``, seen at ``now``:
    ``gpus · h/ln 2 · (2^(-(now-end)/h) - 2^(-(now-start)/h))``, ``h`` = ``half_life`` seconds;
    times after ``now`` count as ``now``."""
    age_end = max(0.0, (now - end).total_seconds())
    age_start = max(age_end, (now - start).total_seconds())
    return gpus * half_life / math.log(2) * (2 ** (-age_end / half_life) - 2 ** (-age_start / half_life))


def factors(usage: Mapping[str, float], shares: Mapping[str, float], projects: Iterable[str]) -> dict[str, float]:
    """Slurm's classic fair-share factor ``F_p = 2^(-(U_p/ΣU)/(S_p/ΣS))`` of each project in
    ``projects`` and those named in ``usage`` or ``shares``: ``usage`` in decayed GPU-seconds,
    ``shares`` the weights (1 for a project not named); all 1 when nothing was used."""
    names = set(projects) | set(usage) | set(shares)
    total_usage = sum(usage.get(p, 0.0) for p in names)
    total_shares = sum(shares.get(p, 1.0) for p in names)
    if total_usage <= 0:
        return {p: 1.0 for p in names}
    return {p: 2 ** (-(usage.get(p, 0.0) / total_usage) / (shares.get(p, 1.0) / total_shares)) for p in names}


def _gpu_count(computer: str | None, gpus, placement) -> int:
    return sum(len(part.gpus) for part in holdings(computer, gpus, placement))


@dataclasses.dataclass(frozen=True)
class Standing:
    """Where the projects stand at one time: ``usage`` (decayed GPU-seconds) and ``held`` (GPUs
    their queued and running tasks hold now, every part of a gang counted), by project name."""

    usage: dict[str, float]
    held: dict[str, int]


class FairShare:
    """Each project's decayed GPU usage, kept by the supervisor from tick to tick.

    The ended attempts' sum is cached and decayed multiplicatively (``2^(-Δt/h)``); each call adds
    the attempts that ended since and computes the running ones afresh, so a tick reads the few
    attempts that ended, not all of them. A new object (a restarted supervisor) recomputes from
    the store. The attempts and their GPUs are :func:`mlcomp.usage.attempts_held`'s: an attempt
    holds its GPUs until ``Attempt.finished`` (it ended finished or paused), now while active.

    Args:
        settings: ``fairshare_half_life`` (seconds), ``scheduler`` and ``gpu_quota``.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.half_life = float(settings.fairshare_half_life)
        self._ended: dict[str, float] = defaultdict(float)  # decayed GPU-seconds at self._at
        self._at: dt.datetime | None = None
        self._counted: dict[int, dt.datetime] = {}  # attempt id → end, for those ended after _at - LATE

    def standing_for(self, session: Session, rows: list, now: dt.datetime) -> Standing:
        """What :func:`plan` needs to order and cap the ready ``rows``: :meth:`standing`, read only
        when it can change a decision (under the fair scheduler, a priority level with tasks of
        two projects or more; a project of ``rows`` with a ``gpu_quota``), else an empty one, so a
        tick with one project's tasks ready (a chain's next task) costs no usage query."""
        quotas = any(row.project in self.settings.gpu_quota for row in rows)
        levels: dict[int, set[str]] = defaultdict(set)
        for row in rows:
            levels[row.priority].add(row.project)
        shared = self.settings.scheduler != "fifo" and any(len(projects) > 1 for projects in levels.values())
        return self.standing(session, now) if quotas or shared else Standing({}, {})

    def standing(self, session: Session, now: dt.datetime) -> Standing:
        """The usage and the GPUs held of each project at ``now`` (timezone-aware UTC)."""
        usage = self._usage(session, now)
        held: dict[str, int] = defaultdict(int)
        active = session.execute(
            select(Project.name, Task.computer, Task.gpus, Task.placement)
            .join(Dag, Dag.id == Task.dag_id).join(Project, Project.id == Dag.project_id)
            .where(Task.status.in_(ACTIVE), Task.computer.is_not(None)))
        for project, computer, gpus, placement in active:
            held[project] += _gpu_count(computer, gpus, placement)
        return Standing(usage, dict(held))

    def _usage(self, session: Session, now: dt.datetime) -> dict[str, float]:
        """Decays the cached sum to ``now``, adds the attempts that ended since, and returns it
        with the running attempts' usage added."""
        if self._at is not None and now < self._at:  # the clock went back: start again
            self._ended, self._at, self._counted = defaultdict(float), None, {}
        if self._at is not None:
            factor = 2 ** (-(now - self._at).total_seconds() / self.half_life)
            for project in self._ended:
                self._ended[project] *= factor
        since = None if self._at is None else self._at - dt.timedelta(seconds=LATE)
        usage = dict(self._ended)
        for held in attempts_held(session, since, now):
            if held.end is None:
                usage[held.project] = usage.get(held.project, 0.0) + decayed(held.gpus, held.start, now, now,
                                                                            self.half_life)
            elif held.end <= now and held.attempt not in self._counted:
                self._counted[held.attempt] = held.end
                ended = decayed(held.gpus, held.start, held.end, now, self.half_life)
                self._ended[held.project] += ended
                usage[held.project] = usage.get(held.project, 0.0) + ended
        horizon = now - dt.timedelta(seconds=LATE)
        self._counted = {key: end for key, end in self._counted.items() if end > horizon}
        self._at = now
        return usage


class PlacementOrder:
    """The order in which one tick tries the ready rows (fields ``id``, ``priority``,
    ``created``, ``project``): iterate it, and call :meth:`took` after placing the row just
    yielded, before the next, so its project's GPUs held count in the rest of the order.

    Args:
        rows: the ready rows.
        standing: the projects' usage and GPUs held before this tick.
        settings: ``scheduler`` (``fair`` or ``fifo``) and ``shares``.
    """

    def __init__(self, rows: Iterable, standing: Standing, settings: Settings):
        self.rows = sorted(rows, key=lambda r: (-r.priority, r.created, r.id))
        self.held: dict[str, int] = defaultdict(int, standing.held)
        self.fifo = settings.scheduler == "fifo"
        self.shares = settings.shares
        self.factor = factors(standing.usage, self.shares, {r.project for r in self.rows} | set(standing.held))

    def took(self, project: str, gpus: int) -> None:
        """Counts ``gpus`` GPUs just given to a task of ``project``."""
        self.held[project] += gpus

    def _key(self, project: str) -> tuple[float, float, str]:
        return -self.factor[project], self.held[project] / self.shares.get(project, 1.0), project

    def __iter__(self) -> Iterator:
        for _, level in itertools.groupby(self.rows, key=lambda r: r.priority):
            if self.fifo:
                yield from level
                continue
            by_project: dict[str, deque] = defaultdict(deque)
            for row in level:
                by_project[row.project].append(row)
            heap = [(self._key(p), p) for p in by_project]
            heapq.heapify(heap)
            while heap:
                _, project = heapq.heappop(heap)
                yield by_project[project].popleft()  # the caller's took() runs before we go on
                if by_project[project]:
                    heapq.heappush(heap, (self._key(project), project))


def quota_reason(project: str, held: int, quota: int | None, gpu_min: int) -> str | None:
    """Why a task of ``project`` asking at least ``gpu_min`` GPUs waits for the project's
    ``quota`` (None: no quota) while it holds ``held`` GPUs, or None when it may have them."""
    if quota is None or gpu_min == 0 or held + gpu_min <= quota:
        return None
    reason = f"project {project!r} holds {held} of its gpu_quota of {quota} GPU{'s' if quota != 1 else ''}"
    return reason if held >= quota else f"{reason}; the task asks for {gpu_min}"


@dataclasses.dataclass(frozen=True)
class Decision:
    """A ready row and what the tick does with it: a :class:`Placement`, or why it waits."""

    row: Any
    where: Placement | str


def plan(rows: Iterable, standing: Standing, settings: Settings, pool: FreePool) -> list[Decision]:
    """The tick's decisions for the ready ``rows`` (:data:`mlcomp.supervisor.ready.WAITING_COLUMNS`),
    in the order tried (:class:`PlacementOrder`), placing through ``pool`` (which they take from).

    A task over its project's ``gpu_quota`` waits (:func:`quota_reason`); a range request is cut to
    what the quota leaves. Requests that found no room are remembered for the rest of the tick
    (free resources only shrink within it), keyed by the request as cut, so a wave of equal
    requests costs one search."""
    order = PlacementOrder(rows, standing, settings)
    waits: dict[tuple, str] = {}
    decisions = []
    for row in order:
        quota = settings.gpu_quota.get(row.project)
        held = order.held[row.project]
        where: Placement | str | None = quota_reason(row.project, held, quota, row.gpu_min)
        if where is None:
            ask = row
            if quota is not None and held + row.gpu_max > quota:
                ask = types.SimpleNamespace(**dict(row._asdict(), gpu_max=quota - held))
            request = (ask.gpu_min, ask.gpu_max, ask.cpu, ask.memory, ask.computer_pin, ask.single_node, ask.distr)
            where = waits.get(request) or pool.place(ask)
            if isinstance(where, str):
                waits[request] = where
            else:
                order.took(row.project, sum(len(p.gpus) for p in where.parts) if where.parts else len(where.gpus))
        decisions.append(Decision(row, where))
    return decisions
