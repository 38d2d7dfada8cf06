"""The task life cycle: the one function that changes a task's status (with bulk forms for a
tick that queues hundreds of tasks), and a group's status derived from its members' (a DAG's).
Every layer that changes or reads statuses imports it: the supervisor, the worker, the commands of
the CLI and the UI.

The gate follows luigi's ``SimpleTaskState.set_status`` (one place where status changes, stamping
``updated``) with the transitions of DESIGN §4::

    not_ran     → queued | skipped | stopped
    queued      → in_progress | not_ran | failed | stopped
    in_progress → stopping | success | failed | stopped | queued (retry on the same computer) | paused
    stopping    → stopped | failed | success | paused (a preempted task's end)
    failed | stopped | skipped → not_ran   (resume: attempt + 1, a new Attempt row)
    success     → not_ran                  (only with ``rerun=True``)
    paused      → not_ran | pruned         (a search trial at a rung: promoted, or never)
    paused      → queued | stopped         (a preempted task placed again: attempt + 1; or stopped)
    stopped     → pruned                   (a search trial its scheduler stopped)

The transitions of preemption (:mod:`mlcomp.supervisor.preempt`) are legal only for a task with
``Task.preempted_by`` set, which a task keeps only while ``stopping`` or ``paused``: any other
status clears it. Its ``Preemption`` row is stamped here: ``paused`` when it ends paused,
``resumed`` when it is placed again; the new attempt resumes from its last full checkpoint
(``resume_from`` cleared: "last" from the second attempt on).

Every transition stamps ``Task.updated``; ``queued`` stamps ``Task.queued``, ``in_progress``
``Task.started``, a finished status ``Task.finished``; back to ``not_ran`` clears the placement
(computer, GPUs). The Attempt row numbered ``Task.attempt`` follows the task (status, computer,
GPUs, start, end, reason).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Any, Iterable, Mapping

from sqlalchemy import bindparam, func, inspect, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from mlcomp.db import Attempt, Preemption, Task, TaskStatus, utcnow
from mlcomp.errors import StateError

__all__ = [
    "TRANSITIONS",
    "PREEMPTION",
    "ACTIVE",
    "set_task_status",
    "set_status_many",
    "queue_many",
    "retry_or_fail",
    "counted_status",
    "rollup_status",
]

log = logging.getLogger(__name__)

S = TaskStatus
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.not_ran: frozenset({S.queued, S.skipped, S.stopped}),
    S.queued: frozenset({S.in_progress, S.not_ran, S.failed, S.stopped}),
    S.in_progress: frozenset({S.stopping, S.success, S.failed, S.stopped, S.queued, S.paused}),
    S.stopping: frozenset({S.stopped, S.failed, S.success, S.paused}),
    S.failed: frozenset({S.not_ran}),
    S.stopped: frozenset({S.not_ran, S.pruned}),
    S.skipped: frozenset({S.not_ran}),
    S.success: frozenset(),
    S.paused: frozenset({S.not_ran, S.pruned, S.queued, S.stopped}),
    S.pruned: frozenset(),
}
"""Legal transitions; ``success → not_ran`` is allowed only as an explicit rerun, and those of
:data:`PREEMPTION` only for a preempted task."""

PREEMPTION = frozenset({(S.stopping, S.paused), (S.paused, S.queued), (S.paused, S.stopped)})
"""The ``(old, new)`` transitions that exist for preemption: legal only with ``Task.preempted_by`` set."""

ACTIVE = frozenset({S.queued, S.in_progress, S.stopping})
"""Statuses that hold resources on a computer (luigi's RUNNING, for ``_used_resources``)."""

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}  # with ON CONFLICT … DO UPDATE
_PENDING_ATTEMPTS = "mlcomp_pending_attempts"  # session.info key: {(task_id, number): Attempt added}


def set_task_status(
    session: Session,
    task: Task,
    new: TaskStatus,
    reason: str | None = None,
    now: dt.datetime | None = None,
    *,
    rerun: bool = False,
) -> Task:
    """Moves ``task`` to ``new``: the only writer of ``Task.status`` (with :func:`set_status_many`,
    its bulk form). Does not commit.

    Args:
        session: the caller's session; the caller frames and commits the transaction.
        task: a persistent Task.
        new: the target status.
        reason: a readable sentence stored in ``Task.reason`` (and the attempt's ``reason``).
        now: the time to stamp (timezone-aware UTC); default the current time.
        rerun: allow ``success → not_ran`` (an explicit rerun of a finished task).

    Returns:
        the task.

    Raises:
        StateError: the transition is not legal; the message names the task id and both statuses.
    """
    new = TaskStatus(new)
    _check(task, new, rerun)
    now = now or utcnow()
    _apply(session, task, new, reason, now)
    _sync_attempt(session, task, now)
    return task


def set_status_many(
    session: Session,
    tasks: Iterable[Task],
    new: TaskStatus,
    reason: str | Mapping[int, str | None] | None = None,
    now: dt.datetime | None = None,
    *,
    rerun: bool = False,
) -> list[Task]:
    """Moves every task of ``tasks`` to ``new`` as :func:`set_task_status` does, one by one, with
    the same checks, stamps and Attempt rows, but writes the batch with two statements, each
    executed once with the values of every task: an ``UPDATE`` of the task rows (status, stamps,
    reason and the placement the caller set; the objects are left clean, as after a flush) and the
    ``INSERT … ON CONFLICT DO UPDATE`` of their attempt rows. Hundreds of tasks cost two statements
    instead of a flush of every object and an upsert each. Nothing changes unless every transition
    is legal. Does not commit.

    Args:
        session: the caller's session; the caller frames and commits the transaction.
        tasks: persistent Tasks (flushed), each at most once.
        new: the target status.
        reason: the sentence stored in ``Task.reason`` (and the attempt's): one for all, or one per
            task id (a task missing from the mapping gets None).
        now: the time to stamp (timezone-aware UTC); default the current time.
        rerun: allow ``success → not_ran``.

    Returns:
        the tasks, in order.

    Raises:
        StateError: a transition is not legal (the message names the first such task, as
            :func:`set_task_status` does); no task was changed.
        ValueError: a task is listed twice or is not persistent; no task was changed.
    """
    new = TaskStatus(new)
    tasks = list(tasks)
    if len({id(task) for task in tasks}) != len(tasks):
        raise ValueError("set_status_many: a task is listed twice")
    for task in tasks:
        _check(task, new, rerun)
        if not inspect(task).persistent:
            raise ValueError(f"set_status_many: task {task.id} is not persistent (flush it first)")
    now = now or utcnow()
    rows, upserts = [], []
    for task in tasks:
        why = reason.get(task.id) if isinstance(reason, Mapping) else reason
        _apply(session, task, new, why, now)
        rows.append({key: getattr(task, key) for key in _WRITTEN} | {"task_id": task.id})
        values = _attempt_values(session, task, now)
        if values is not None:
            upserts.append(values)
    if not tasks:
        return tasks
    connection = session.connection()
    connection.execute(_update_tasks(), rows)
    for task, row in zip(tasks, rows):  # the rows hold these values now: nothing left to flush
        for key in _WRITTEN:
            set_committed_value(task, key, row[key])
    if upserts:
        connection.execute(_upsert(connection.dialect.name), upserts)
    return tasks


_WRITTEN = ("status", "updated", "reason", "queued", "started", "finished", "waiting_reason", "computer", "gpus",
            "placement", "attempt", "pid", "preempted_by", "resume_from")
"""The Task columns a status change may set (with the placement its caller sets before it):
:func:`set_status_many` writes them in one UPDATE executed with every task's values."""


@functools.cache
def _update_tasks():
    """``UPDATE task SET <the _WRITTEN columns> WHERE id = :task_id``, built once."""
    table = Task.__table__
    return (update(table).where(table.c.id == bindparam("task_id"))
            .values({key: bindparam(key) for key in _WRITTEN}))


def queue_many(session: Session, rows: Iterable[Mapping[str, Any]], now: dt.datetime | None = None) -> None:
    """Moves waiting tasks known as rows, not objects, to queued on the computers the supervisor
    placed them: :func:`set_task_status` to ``queued`` for each (the transition checked against
    the status read, the same stamps, the waiting reason cleared, the Attempt row in step) without
    loading them, in two statements each executed once with every task's values: ``UPDATE task …
    WHERE id = …`` and the attempt rows' ``INSERT … ON CONFLICT DO UPDATE``. A task whose object
    the session holds goes through :func:`set_status_many` instead, so that object stays current.
    Does not commit.

    Args:
        session: the caller's session; the caller frames and commits the transaction.
        rows: one mapping per task, each task at most once: ``id``, ``name``, ``status`` (as
            read in this transaction), ``attempt`` and ``resume_from`` of the task, and its new
            ``computer``, ``gpus`` (indices), ``placement`` (a gang's record or None) and
            ``reason``. A ``paused`` row (a preempted task placed again: a new attempt, the
            ``Preemption`` row stamped) is loaded and goes through :func:`set_status_many`.
        now: the time to stamp (timezone-aware UTC); default the current time.

    Raises:
        StateError: a task given is neither ``not_ran`` nor a preempted ``paused`` one (nothing
            was written), or a task's row is gone (the caller's transaction must be rolled back).
    """
    rows, loose, held = list(rows), [], []
    for row in rows:  # every check before any change
        if row["status"] not in (S.not_ran, S.paused):
            raise StateError(f"task {row['id']} ({row['name']!r}) cannot be queued from {row['status'].value} "
                             f"without loading it; use set_task_status")
        if row["status"] is S.paused:  # rare (preemption): load it, for its new attempt and stamps
            task = session.get(Task, row["id"])
        else:
            task = session.identity_map.get(session.identity_key(Task, row["id"]))
        if task is None:
            loose.append(row)
        else:
            _check(task, S.queued, False)
            held.append((task, row))
    now = now or utcnow()
    updates, upserts = [], []
    pending = session.info.get(_PENDING_ATTEMPTS, {})
    for row in loose:
        gpus = list(row["gpus"] or [])
        updates.append(dict(task_id=row["id"], computer=row["computer"], gpus=gpus, placement=row["placement"],
                            reason=row["reason"], now=now))
        attempt = pending.get((row["id"], row["attempt"]))
        if attempt is not None and attempt in session:
            attempt.status, attempt.computer, attempt.gpus = S.queued, row["computer"], gpus
            attempt.reason = row["reason"]
        else:
            upserts.append(dict(task_id=row["id"], number=row["attempt"], resume_from=row["resume_from"],
                                status=S.queued, computer=row["computer"], gpus=gpus, reason=row["reason"],
                                started=None, finished=None))
        log.debug("task %s: not_ran -> queued (%s)", row["id"], row["reason"])
    for task, row in held:
        task.computer, task.gpus, task.placement = row["computer"], list(row["gpus"] or []), row["placement"]
    set_status_many(session, [task for task, _ in held], S.queued,
                    {task.id: row["reason"] for task, row in held}, now)
    if not updates:
        return
    connection = session.connection()
    changed = connection.execute(_queue_tasks(), updates).rowcount
    if changed != len(updates):
        raise StateError(f"{len(updates) - changed} of {len(updates)} tasks to queue no longer exist")
    if upserts:
        connection.execute(_upsert(connection.dialect.name), upserts)


@functools.cache
def _queue_tasks():
    """``UPDATE task SET status = 'queued', … WHERE id = :task_id``, built once. By primary key
    alone, as a flush writes: with ``AND status = …`` PostgreSQL may pick the status index and
    scan every waiting task for each row (seen: 5 times slower with 2,400 waiting)."""
    table = Task.__table__
    return (update(table).where(table.c.id == bindparam("task_id"))
            .values(status=S.queued, updated=bindparam("now"), queued=bindparam("now"), reason=bindparam("reason"),
                    waiting_reason=None, computer=bindparam("computer"), gpus=bindparam("gpus"),
                    placement=bindparam("placement")))


def _check(task: Task, new: TaskStatus, rerun: bool) -> None:
    old = task.status
    allowed = TRANSITIONS[old] | ({S.not_ran} if rerun and old is S.success else frozenset())
    if new not in allowed:
        legal = ", ".join(sorted(s.value for s in allowed)) or "none"
        raise StateError(
            f"task {task.id} ({task.name!r}) cannot go from {old.value} to {new.value}; allowed: {legal}"
        )
    if (old, new) in PREEMPTION and task.preempted_by is None:
        raise StateError(f"task {task.id} ({task.name!r}) cannot go from {old.value} to {new.value}: "
                         f"it was not preempted")


def _apply(session: Session, task: Task, new: TaskStatus, reason: str | None, now: dt.datetime) -> None:
    """Changes ``task`` (a checked transition): status, stamps, placement and a new attempt."""
    old = task.status
    if task.preempted_by is not None:
        _preemption(session, task, old, new, now)
    if new is S.not_ran and (old.finished or old is S.paused):
        _new_attempt(session, task)
    elif new is S.not_ran:  # a placement taken back (a failed dispatch): same attempt, no computer
        task.computer, task.gpus, task.placement, task.queued = None, [], None, None
    elif new is S.queued and old in (S.in_progress, S.paused):
        _new_attempt(session, task, keep_placement=True)
    task.status = new
    task.updated = now
    task.reason = reason
    if new is S.queued:
        task.queued = now
        task.waiting_reason = None
    elif new is S.in_progress:
        task.started = now
    elif new.finished:
        task.finished = now
    log.debug("task %s: %s -> %s (%s)", task.id, old.value, new.value, reason)


def _preemption(session: Session, task: Task, old: TaskStatus, new: TaskStatus, now: dt.datetime) -> None:
    """A preempted task's bookkeeping: its ``Preemption`` row (of this attempt) stamped ``paused``
    when it ends paused, ``resumed`` when it is placed again, which resumes from its last full
    checkpoint; ``preempted_by`` kept only while stopping or paused."""
    stamp = {S.paused: "paused", S.queued: "resumed"}.get(new)
    if stamp is not None:
        session.execute(update(Preemption)
                        .where(Preemption.task_id == task.id, Preemption.attempt == task.attempt,
                               getattr(Preemption, stamp).is_(None))
                        .values({stamp: now}).execution_options(synchronize_session=False))
    if old is S.paused and new is S.queued:
        task.resume_from = None  # "last": the exact batch it paused at, whatever the attempt began from
    if new not in (S.stopping, S.paused):
        task.preempted_by = None


def retry_or_fail(session: Session, task: Task, reason: str, now: dt.datetime | None = None) -> bool:
    """Fails ``task`` with ``reason``; when retries remain (``attempt <= retries``), resumes it at
    once (``failed → not_ran``, attempt + 1) so the supervisor places it again, possibly on another
    computer. Used by the dead-computer sweep and by the worker for a failed run.

    Returns:
        True when the task was re-queued for another attempt, False when it stays failed.
    """
    set_task_status(session, task, S.failed, reason, now)
    if task.attempt > task.retries:
        return False
    retry = f"retry {task.attempt}/{task.retries} after: {reason}"
    set_task_status(session, task, S.not_ran, retry, now)
    return True


def _new_attempt(session: Session, task: Task, keep_placement: bool = False) -> None:
    task.attempt += 1
    task.pid = None
    task.started = task.finished = None
    if not keep_placement:
        task.computer = None
        task.gpus = []
        task.placement = None
        task.queued = None
    _add_attempt(session, Attempt(task=task, number=task.attempt, status=S.not_ran, resume_from=task.resume_from),
                 task.id)


def _add_attempt(session: Session, attempt: Attempt, task_id: int) -> None:
    """Adds a new Attempt row and remembers it in ``session.info`` until it is flushed, so a
    second change in the same transaction updates the object instead of the table."""
    session.add(attempt)
    session.info.setdefault(_PENDING_ATTEMPTS, {})[(task_id, attempt.number)] = attempt


def _sync_attempt(session: Session, task: Task, now: dt.datetime) -> None:
    """Copies the task's state onto its current Attempt row: the pending object when this
    transaction added it, else one ``INSERT … ON CONFLICT DO UPDATE`` on the session's connection
    (no read, no flush of the session: this runs on every status change). Attempt objects loaded
    in the same session earlier are not refreshed."""
    values = _attempt_values(session, task, now)
    if values is not None:
        connection = session.connection()
        connection.execute(_upsert(connection.dialect.name), values)


def _attempt_values(session: Session, task: Task, now: dt.datetime) -> dict | None:
    """The values of the upsert of the task's current Attempt row (:func:`_upsert`), or None when
    the row is the pending object this transaction added, which is updated here instead. The
    attempt ends (``finished``) at a finished status and at ``paused`` (a search trial at a rung,
    a preempted task): the task goes on, if at all, in a new attempt."""
    values = dict(status=task.status, computer=task.computer, gpus=list(task.gpus or []), reason=task.reason)
    if task.status is S.in_progress:
        values["started"] = now
    elif task.status.finished or task.status is S.paused:
        values["finished"] = now
    pending = session.info.get(_PENDING_ATTEMPTS, {}).get((task.id, task.attempt))
    if pending is not None and pending in session:
        if pending.finished is not None:
            values.pop("finished", None)  # the first end stands
        for key, value in values.items():
            setattr(pending, key, value)
        return None
    values.setdefault("started", None)
    values.setdefault("finished", None)
    return dict(values, task_id=task.id, number=task.attempt, resume_from=task.resume_from)


@functools.cache
def _upsert(dialect: str):
    """``INSERT INTO attempt … ON CONFLICT (task_id, number) DO UPDATE`` for ``dialect``, built
    once: the status, placement and reason are replaced; ``started`` when given; ``finished`` when
    given and not set yet (the first end stands: a trial paused at a rung, then pruned)."""
    if dialect not in _INSERTS:
        raise NotImplementedError(f"attempt rows support {', '.join(_INSERTS)}, not {dialect}")
    table = Attempt.__table__
    statement = _INSERTS[dialect](table)
    new = statement.excluded
    return statement.on_conflict_do_update(index_elements=["task_id", "number"], set_={
        "status": new.status, "computer": new.computer, "gpus": new.gpus, "reason": new.reason,
        "started": func.coalesce(new.started, table.c.started),
        "finished": func.coalesce(table.c.finished, new.finished),  # the first end stands (a pause, then pruned)
    })


def counted_status(status: TaskStatus, preempted: bool) -> TaskStatus:
    """The status a task counts as where ``paused`` would read as an end: in
    :func:`rollup_status` and in a search's slots (:mod:`mlcomp.search.step`). A task paused by a
    preemption (``preempted``: its ``Task.preempted_by`` is set) counts as ``queued``: it waits to
    be placed again and resumes where it paused. Any other status counts as itself."""
    return S.queued if status is S.paused and preempted else status


def rollup_status(statuses: Iterable[TaskStatus]) -> TaskStatus:
    """A group's status derived from its members' statuses (a DAG's tasks, a grid's cells), each
    as :func:`counted_status` gives it (a task paused by a preemption passed as ``queued``).

    Empty → not_ran; anything queued/in_progress/stopping, or work left beside finished work →
    in_progress; all success (or pruned: a search trial stopped early) → success; otherwise the
    worst ending: failed, then stopped (or paused: a trial of a stopped search), then skipped; all
    not_ran → not_ran.
    """
    present = set(statuses)
    if not present or present == {S.not_ran}:
        return S.not_ran
    if S.paused in present:
        present = (present - {S.paused}) | {S.stopped}
    if present & ACTIVE or S.not_ran in present:
        return S.in_progress
    for status in (S.failed, S.stopped, S.skipped):
        if status in present:
            return status
    return S.success
