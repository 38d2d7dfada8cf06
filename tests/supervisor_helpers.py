"""Row factories and a fake clock shared by the supervisor, control and status tests."""
from __future__ import annotations

import datetime as dt
import time

from mlcomp.db import Computer, Dag, Project, Task, TaskDependency

__all__ = ["Clock", "T0", "make_dag", "add_task", "add_computer", "wait_for"]

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    """A fake clock: call it for the time, ``advance(seconds)`` to move it."""

    def __init__(self, start: dt.datetime = T0):
        self.time = start

    def __call__(self) -> dt.datetime:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += dt.timedelta(seconds=seconds)


def make_dag(session, name: str = "d") -> Dag:
    project = session.query(Project).filter_by(name="p").one_or_none() or Project(name="p")
    dag = Dag(name=name, project=project, config="")
    session.add(dag)
    session.flush()
    return dag


def add_task(session, dag: Dag, name: str, depends=(), **fields) -> Task:
    fields.setdefault("type", "bash")
    task = Task(dag=dag, name=name, **fields)
    session.add(task)
    session.flush()
    for dep in depends:
        session.add(TaskDependency(task_id=task.id, depend_id=dep.id))
    session.flush()
    return task


def add_computer(session, name: str, gpus: int = 0, cpu: int = 4, memory: float = 16.0,
                 heartbeat: dt.datetime = T0) -> Computer:
    computer = Computer(name=name, gpus=[{"index": i, "memory": 0, "name": "fake"} for i in range(gpus)],
                        cpu=cpu, memory=memory, heartbeat=heartbeat)
    session.add(computer)
    session.flush()
    return computer


def wait_for(predicate, timeout: float = 20.0):
    """Polls ``predicate`` until it returns a true value (returned) or ``timeout`` seconds pass.

    Raises:
        AssertionError: the condition was not reached in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not reached within {timeout:g} s")


def wait_status(store, task_id: int, *statuses, timeout: float = 20.0) -> Task:
    """Waits until task ``task_id`` has one of ``statuses``; returns the row as it was then.

    Raises:
        AssertionError: not reached within ``timeout`` seconds.
    """
    def reached():
        with store() as session:
            task = session.get(Task, task_id)
            return task if task.status in statuses else None

    return wait_for(reached, timeout)


class RecordingBus:
    """A bus that records what is published (``calls``: ``(channel, ids)`` pairs) and delivers
    nothing: for ticks whose hand-overs a test only reads."""

    def __init__(self):
        self.calls: list[tuple[str, list[int]]] = []

    def publish(self, channel: str, ids=()) -> None:
        self.calls.append((channel, list(ids)))

    def subscribe(self, channel, callback):
        raise AssertionError("a RecordingBus delivers nothing")

    def placed(self) -> list[tuple[int, str]]:
        """The ``(task_id, computer)`` pairs sent to computers' channels."""
        return [(task_id, channel.split(":", 1)[1]) for channel, ids in self.calls
                if channel.startswith("computer:") for task_id in ids]
