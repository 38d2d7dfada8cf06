"""Supervisor fail-over: of the supervisors of every DAG sharing a store (``mlcomp server`` on one
or several machines), the holder of the lease supervises (places tasks, sweeps silent computers,
rolls up grids and searches) and the others stand by, ready to take over.

The lease is one row of the ``supervisor_lease`` table: its ``holder`` (a supervisor's id), when
it ``expires``, and the holder's ``process`` on its machine. A supervisor of every DAG calls
:meth:`Lease.hold` at the start of each tick, inside the tick's own transaction (no transaction
of its own), and at each heartbeat; only the holder runs the rest of the tick. Taking or renewing
is one conditional UPDATE (``holder = me OR holder IS NULL OR expires < now``), atomic on both
stores: SQLite runs one writer at a time (``BEGIN IMMEDIATE``), and PostgreSQL makes a second
UPDATE of the row wait for the first transaction, then re-checks its WHERE clause against the
committed row. A standby's tick only reads the row while the lease is held and unexpired.

Timing. The lease lasts ``heartbeat_ttl / 2`` seconds (:func:`lease_seconds`). The holder
renews it at every heartbeat (``heartbeat_ttl / 3`` s) and at any tick (every ``interval``, 1 s)
that finds less than half of it left, so a tick writes the row only every ``heartbeat_ttl / 4``
s or so and the lease never lapses while the holder lives. A standby tries at every tick and
heartbeat, so it takes over at most ``heartbeat_ttl / 2 + min(interval, heartbeat_ttl / 3)``
seconds, less than ``heartbeat_ttl``, after the holder's last renewal. Expiry compares the
supervisors' clocks, which must agree to well under the lease (they already must for computer
heartbeats). Two shortcuts make a hand-over immediate: a clean shutdown releases the lease
(:meth:`Lease.release`) and wakes the supervisors; and a standby on the holder's machine (same
boot and PID namespace, e.g. ``mlcomp server`` restarted after ``kill -9``) takes over at once
when the holder's process has ended, which it can tell for sure from ``/proc``.

No task is placed twice and no GPU given twice across a fail-over, and not even if two
supervisors ever believed they were active (a clock jump, a tick stalled past the lease): every
tick locks the computer rows before it reads the tasks, so ticks run one after the other and each
sees the placements of the one before.

Why a lease row and not a PostgreSQL advisory lock (``pg_try_advisory_lock``): an advisory lock
belongs to a database session, so the server would have to hold one connection outside the pool
for its whole life (and a dropped connection silently frees the lock while the server goes on
placing), and it does not exist on SQLite. A row with a TTL works on both stores and through the
connection pool, and its renewal rides on transactions the supervisor runs anyway.

Supervisors of some DAGs only (``dag submit --wait`` without a server) take no part: they run
their own DAGs as before, and the tick's row locks keep them from giving a GPU twice.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlcomp.db import as_utc
from mlcomp.db.models import SupervisorLease
from mlcomp.settings import Settings

__all__ = ["Lease", "LEASE", "lease_seconds", "process_token", "process_gone"]

log = logging.getLogger(__name__)
LEASE = "supervisor"
"""The ``name`` of the lease row of the supervisors of every DAG."""


def lease_seconds(settings: Settings) -> float:
    """How long a taken or renewed lease lasts: ``settings.heartbeat_ttl / 2`` seconds."""
    return settings.heartbeat_ttl / 2


def _start_time(pid: int) -> str | None:
    """Process ``pid``'s start time (clock ticks since boot, ``/proc/PID/stat`` field 22), or
    None when no such process runs here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _machine() -> str | None:
    """This kernel's boot id and this process's PID namespace, or None off Linux."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}|{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def process_token(pid: int | None = None) -> str | None:
    """Names process ``pid`` (default: this one) for :func:`process_gone`: boot id, PID
    namespace, pid and start time; None off Linux."""
    pid = os.getpid() if pid is None else pid
    machine, start = _machine(), _start_time(pid)
    return None if machine is None or start is None else f"{machine}|{pid}|{start}"


def process_gone(token: str | None) -> bool:
    """Whether the process named by ``token`` (:func:`process_token`) has surely ended: it ran
    under this boot and PID namespace, and its pid now runs no process or another one. False
    when that cannot be told (another machine or namespace, no token, not Linux)."""
    machine = _machine()
    if not token or machine is None:
        return False
    where, _, rest = token.rpartition("|")
    where, _, pid = where.rpartition("|")
    if where != machine or not pid.isdigit():
        return False
    return _start_time(int(pid)) != rest


def _when(value: dt.datetime | None) -> str:
    return "never" if value is None else as_utc(value).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read(session: Session) -> tuple | None:
    """The lease row as ``(holder, expires, process)``, or None when there is none."""
    row = session.execute(select(SupervisorLease.holder, SupervisorLease.expires, SupervisorLease.process)
                          .where(SupervisorLease.name == LEASE)).one_or_none()
    return None if row is None else (row.holder, as_utc(row.expires), row.process)


class Lease:
    """One supervisor's side of the lease.

    Args:
        holder: the supervisor's id (unique per process, at most 200 characters).
        seconds: how long the lease lasts after each take or renewal (:func:`lease_seconds`).

    ``held`` is what the last :meth:`hold` found: True (this supervisor is the active one), False
    (it stands by) or None (not tried yet, or released).
    """

    def __init__(self, holder: str, seconds: float):
        self.holder = holder
        self.seconds = seconds
        self.held: bool | None = None
        self.expires: dt.datetime | None = None  # of this supervisor's lease, while held
        self.process = process_token()
        self._state = threading.Lock()  # a tick and a heartbeat may hold() at once

    def hold(self, session: Session, now: dt.datetime, renew: bool = False) -> bool:
        """Takes the lease when it is free or expired (or its holder's process on this machine
        has ended), or renews it when this supervisor holds it, until ``now`` + ``seconds``, in
        ``session``'s transaction, which must be a writer (:func:`mlcomp.db.immediate`); the
        caller commits. A holder with more than half the lease left writes nothing unless
        ``renew`` (the heartbeat renews). Creates the row if it is missing. Logs one line when
        this supervisor becomes active or stands by.

        Returns:
            whether this supervisor holds the lease (is the active one).
        """
        with self._state:
            left = None if self.expires is None else (self.expires - now).total_seconds()
            if self.held and not renew and left is not None and left > self.seconds / 2:
                return True
        before = None
        if not self.held:  # a standby reads the row and writes only when it can take it
            before = _read(session)
            if before and before[0] not in (None, self.holder) and before[1] is not None and before[1] >= now:
                if not process_gone(before[2]):
                    return self._settle(False, before, now)
        taken, found = self._update(session, now, before)
        if not taken and found is None:  # no row (the migration makes it): create it, holding the lease
            try:
                with session.begin_nested():
                    session.add(SupervisorLease(name=LEASE, holder=self.holder, expires=self._until(now),
                                                process=self.process))
                taken = True
            except IntegrityError:  # another supervisor made it first
                taken, found = self._update(session, now, before)
        return self._settle(taken, before if taken else found, now)

    def _until(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.seconds)

    def _update(self, session: Session, now: dt.datetime, before: tuple | None) -> tuple[bool, tuple | None]:
        """The conditional UPDATE. ``before`` is the row as just read (holder, expires, process),
        if it was; a holder whose process has ended may be replaced too. Returns whether it took
        or renewed the lease, and the row as read now when it did not (None: there is no row)."""
        row = SupervisorLease
        free = [row.holder == self.holder, row.holder.is_(None), row.expires.is_(None), row.expires < now]
        if before is not None and before[0] is not None and process_gone(before[2]):
            free.append(row.holder == before[0])  # compare-and-set on the dead holder
        result = session.execute(
            update(row).where(row.name == LEASE, or_(*free))
            .values(holder=self.holder, expires=self._until(now), process=self.process)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return True, None
        return False, _read(session)

    def _settle(self, taken: bool, before: tuple | None, now: dt.datetime) -> bool:
        """Records what :meth:`hold` found and logs a change."""
        with self._state:
            was, self.held = self.held, taken
            self.expires = self._until(now) if taken else None
        if taken and was is not True:
            level, previous = logging.WARNING, None  # a take-over: the operator should see it
            if before is None or before[0] in (None, self.holder):
                level, previous = logging.INFO, "it was free"
            elif before[1] is not None and before[1] >= now:
                previous = f"taken over from {before[0]}, whose process on this machine has ended"
            else:
                previous = f"taken over from {before[0]}, whose lease expired at {_when(before[1])}"
            log.log(level, "Supervisor %s: active: holds the supervisor lease (%s)", self.holder, previous)
        elif not taken and was is not False:
            who, until = before[:2] if before else ("another supervisor", None)
            log.info("Supervisor %s: standing by: %s supervises (lease until %s); this one takes over "
                     "if it is not renewed", self.holder, who, _when(until))
        return taken

    def release(self, session: Session) -> bool:
        """Gives the lease up if this supervisor holds it (a clean shutdown), so a standby takes
        over at its next tick instead of waiting for the lease to expire; the caller commits.

        Returns:
            whether this supervisor held it.
        """
        row = SupervisorLease
        result = session.execute(
            update(row).where(row.name == LEASE, row.holder == self.holder)
            .values(holder=None, expires=None, process=None).execution_options(synchronize_session=False))
        with self._state:
            self.held = self.expires = None
        released = result.rowcount == 1
        if released:
            log.info("Supervisor %s: released the supervisor lease", self.holder)
        return released
