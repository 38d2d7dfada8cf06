"""The children a worker follows: one run per task (its process, timeout and stop request), the
launches under way, timeouts and the stop grace period carried out, and the children of attempts
that no worker follows any more (orphans).

As rq's worker keeps its current job and a containerd shim its process: the :class:`Follower` is
the only owner of this state; every other part of the worker asks it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.db import Attempt
from mlcomp.lifecycle import ACTIVE
from mlcomp.worker.process import ATTEMPTS, AttemptFiles, TaskProcess, signal_group

__all__ = ["Run", "Follower", "reap_orphans"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """A child this worker follows."""

    task_id: int
    attempt: int
    timeout: float | None  # seconds
    process: TaskProcess
    started: float  # monotonic seconds
    stop_sent: float | None = None
    timed_out: bool = False
    killed: bool = False


class Follower:
    """The runs of computer ``name``'s worker, safe to use from its threads.

    Args:
        name: the computer's name (for log lines).
        stop_grace: seconds between SIGTERM and SIGKILL of a stopped child.
        clock: monotonic seconds, for timeouts and the stop grace period.
    """

    def __init__(self, name: str, stop_grace: float, clock: Callable[[], float]):
        self.name = name
        self.stop_grace = stop_grace
        self.clock = clock
        self._runs: dict[int, Run] = {}
        self._launching: set[int] = set()
        self._closing = False  # set by close(): no new launch starts
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def launching(self, task_ids: Iterable[int]) -> Iterator[list[int]]:
        """Marks as being launched, for the ``with`` block, the ids of ``task_ids`` that are
        neither followed nor being launched already (none once :meth:`close` was called), and
        yields them."""
        with self._lock:
            mine = [] if self._closing else \
                [i for i in dict.fromkeys(task_ids) if i not in self._runs and i not in self._launching]
            self._launching.update(mine)
        try:
            yield mine
        finally:
            with self._lock:
                self._launching.difference_update(mine)

    def open(self) -> None:
        """Lets launches start again (a worker started after a shutdown)."""
        with self._lock:
            self._closing = False

    def close(self) -> None:
        """Refuses every launch from now on (a shutdown)."""
        with self._lock:
            self._closing = True

    def any_launching(self) -> bool:
        """Whether a launch is under way."""
        with self._lock:
            return bool(self._launching)

    def watch(self, task_id: int, attempt: int, timeout: float | None, process: TaskProcess, started: float) -> None:
        """Follows ``process``, the child of ``task_id``'s ``attempt``, started at ``started``
        (monotonic seconds), with its ``timeout`` (seconds, None for none)."""
        process.files.watch()
        with self._lock:
            self._runs[task_id] = Run(task_id, attempt, timeout, process, started)

    def get(self, task_id: int) -> Run | None:
        with self._lock:
            return self._runs.get(task_id)

    def runs(self) -> list[Run]:
        """The runs followed now."""
        with self._lock:
            return list(self._runs.values())

    def task_ids(self) -> list[int]:
        """The ids of the tasks whose child is followed, in order."""
        with self._lock:
            return sorted(self._runs)

    def forget(self, task_ids: Iterable[int]) -> None:
        """Stops following the children of ``task_ids`` (their ends are recorded)."""
        with self._lock:
            for task_id in task_ids:
                self._runs.pop(task_id, None)

    def abandon(self, task_id: int) -> None:
        """Kills a child whose start could not be committed."""
        with self._lock:
            run = self._runs.pop(task_id, None)
        if run is not None and run.process.popen is not None:
            run.process.signal(signal.SIGKILL)
            run.process.popen.wait()

    def request_stop(self, run: Run) -> None:
        """Sends ``run``'s process group SIGTERM, once."""
        if run.stop_sent is None:
            run.stop_sent = self.clock()
            run.process.signal(signal.SIGTERM)

    def enforce(self, run: Run) -> None:
        """Stops ``run`` past its timeout; kills it (SIGKILL) past the stop grace period."""
        now = self.clock()
        if run.timeout and not run.timed_out and now - run.started > run.timeout:
            run.timed_out = True
            self.request_stop(run)
        if run.stop_sent is not None and not run.killed and now - run.stop_sent > self.stop_grace:
            run.killed = True
            run.process.signal(signal.SIGKILL)

    def enforce_all(self) -> None:
        for run in self.runs():
            self.enforce(run)

    def deadline(self) -> float:
        """The next moment (monotonic seconds) a run's timeout or stop grace period ends."""
        runs = self.runs()
        ends = [run.started + run.timeout for run in runs if run.timeout and not run.timed_out]
        ends += [run.stop_sent + self.stop_grace for run in runs if run.stop_sent is not None and not run.killed]
        return min(ends, default=float("inf")) + 0.01

    def kill_ended(self, watched: Iterable[Run], active: set[tuple[int, int]]) -> None:
        """Kills (SIGKILL to the group) the children of ``watched`` (runs known before the store
        was read, so a launch committed after the read is never taken for one) whose attempt, a
        ``(task id, attempt)`` pair, is not in ``active`` here: a gang failed by another of its
        computers, or a task failed or retried by the supervisor while this worker's beats did
        not arrive."""
        for run in watched:
            if (run.task_id, run.attempt) not in active and not run.killed and run.process.signal(signal.SIGKILL):
                run.killed = True
                log.warning("worker %s: task %s attempt %s is no longer active in the store: its process "
                            "group %s killed", self.name, run.task_id, run.attempt, run.process.pid)


def reap_orphans(store: sessionmaker[Session], tasks_dir: Path, name: str) -> list[int]:
    """Kills the process groups of attempts that ran on computer ``name``, still run, are
    followed by no live worker, and that the store no longer has active (their task was failed or
    retried while no worker of this computer beat, and their GPUs given to other tasks).
    Returns the task ids whose children were killed."""
    live = {}
    for pid_file in Path(tasks_dir).glob(f"*/{ATTEMPTS}/*/pid"):
        files = AttemptFiles(pid_file.parent)
        pid = files.live_pid()
        if pid is not None and not files.watched_elsewhere() and pid_file.parts[-4].isdigit():
            live[(int(pid_file.parts[-4]), int(pid_file.parts[-2]))] = pid
    if not live:
        return []
    with store() as session:
        rows = session.execute(select(Attempt.task_id, Attempt.number, Attempt.status, Attempt.computer)
                               .where(Attempt.task_id.in_({task_id for task_id, _ in live}))).all()
    killed = []
    for task_id, number, status, computer in rows:
        pid = live.get((task_id, number))
        if pid is not None and computer == name and status not in ACTIVE and signal_group(pid, signal.SIGKILL):
            log.warning("worker %s: task %s attempt %s is %s in the store but its process group %s ran on: "
                        "killed", name, task_id, number, status.value, pid)
            killed.append(task_id)
    return killed
