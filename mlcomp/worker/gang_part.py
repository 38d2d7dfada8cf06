"""One computer's part of a gang (:mod:`mlcomp.gang`) as its worker sees it: the rendezvous port
rank 0's worker picks, when the other parts may start, the pid each notes in the placement
record, and the messages that tell the other computers of the group when ranks start or end.
"""
from __future__ import annotations

import socket

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp import gang
from mlcomp.bus import Bus, computer_channel
from mlcomp.db import Task, TaskStatus
from mlcomp.errors import MlcompError
from mlcomp.lifecycle import ACTIVE
from mlcomp.worker.ends import end_part
from mlcomp.worker.process import AttemptFiles

__all__ = ["rank_group", "may_start", "note_pid", "tell", "bindable"]


def rank_group(session: Session, task: Task, part: gang.Part, name: str, ports: tuple[int, int]) -> dict | None:
    """The rank group ``part`` of a gang joins (:func:`mlcomp.gang.rank_group`), None for a task
    on one computer. Rank 0's part, on computer ``name``, takes the first port of ``ports`` (an
    inclusive range) that no other active gang of that computer uses and that binds now, and
    records it in the placement.

    Raises:
        MlcompError: every port of the range is taken.
    """
    if not task.placement:
        return None
    if part.first_rank == 0:
        placed = gang.PlacementRecord.from_json(task.placement)
        used = {gang.PlacementRecord.from_json(other).master_port for other in session.scalars(
            select(Task.placement).where(Task.computer == name, Task.status.in_(ACTIVE),
                                         Task.placement.is_not(None), Task.id != task.id)) if other}
        port = gang.pick_port(range(ports[0], ports[1] + 1), used, lambda p: bindable(placed.master_addr, p))
        if port is None:
            raise MlcompError(f"no free rendezvous port in {ports[0]}-{ports[1]} on {name}")
        task.placement = placed.with_port(port).to_json()
    return gang.rank_group(task.placement, part)


def may_start(session: Session, task: Task, files: AttemptFiles, name: str) -> bool:
    """Whether computer ``name``'s part of gang ``task`` (not rank 0's) is to be started or
    adopted now: not when it already ended, nor before rank 0's worker has started its ranks
    (and chosen the port); one never started of a gang being stopped ends at once as stopped."""
    if name in gang.PlacementRecord.from_json(task.placement).ended:
        return False
    if task.status is TaskStatus.stopping and not files.started():
        end_part(session, name, task, TaskStatus.stopped, "stopped before its ranks started")
        return False
    return files.started() or task.status is TaskStatus.in_progress


def note_pid(task: Task, name: str, pid: int) -> None:
    """Notes ``pid``, the recorder pid of computer ``name``'s part of gang ``task``, in its record."""
    task.placement = gang.PlacementRecord.from_json(task.placement).with_pid(name, pid).to_json()


def tell(bus: Bus, name: str, computer: str | None, placement: dict | None, task_ids: list[int]) -> None:
    """Sends the computers of a gang other than ``name`` (nothing for a task on one computer) a
    message: the task's id when rank 0's ranks started, none when a part ended."""
    for other in gang.computers_of(computer, placement):
        if other != name:
            bus.publish(computer_channel(other), task_ids)


def bindable(address: str, port: int) -> bool:
    """Whether TCP ``port`` can be bound on ``address`` now (the rendezvous of a gang's rank 0)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, port))
        return True
    except OSError:
        return False
