"""A worker's computer row: its registration (address, rendezvous ports, GPUs, CPUs, RAM, the DAGs
it serves), its heartbeat with the machine's use, and the scope a DAG-scoped worker takes back
when it shuts down.
"""
from __future__ import annotations

import dataclasses
import socket
from typing import Collection

import psutil
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mlcomp.db import Computer, as_utc, immediate, utcnow
from mlcomp.worker.resources import ResourceRecorder

__all__ = ["Registration", "register", "beat", "unscope", "primary_address"]


@dataclasses.dataclass(frozen=True)
class Registration:
    """What a worker says of its computer: ``name``, ``address`` (where other computers reach it),
    ``ports`` (its inclusive rendezvous range), ``gpus`` (as :func:`mlcomp.worker.gpus.detect_gpus`
    gives them), ``cpu`` (count), ``memory`` (GB) and the DAGs it serves (None: every DAG's)."""

    name: str
    address: str
    ports: tuple[int, int]
    gpus: list[dict]
    cpu: int
    memory: float
    dag_ids: frozenset[int] | None

    @classmethod
    def of_machine(cls, name: str, address: str, ports: tuple[int, int], gpus: list[dict], cpus: int | None,
                   dag_ids: Collection[int] | None) -> "Registration":
        """The registration of this machine: ``cpus`` declared or psutil's count, its total RAM."""
        return cls(name, address, tuple(ports), gpus, cpus or psutil.cpu_count() or 1,
                   round(psutil.virtual_memory().total / 1e9, 2), None if dag_ids is None else frozenset(dag_ids))


def register(store: sessionmaker[Session], me: Registration, heartbeat_ttl: float) -> None:
    """Creates or updates ``me``'s computer row with a fresh heartbeat. A worker scoped to some
    DAGs adds them to those of a live scoped worker of the same computer (one that beat within
    ``heartbeat_ttl`` seconds); beside a live worker of every DAG it changes nothing of the scope."""
    now = utcnow()
    values = dict(address=me.address, ports=list(me.ports), gpus=me.gpus, cpu=me.cpu, memory=me.memory,
                  heartbeat=now)
    with store.begin() as session:
        immediate(session)
        computer = session.get(Computer, me.name, with_for_update=True)
        live = computer is not None and computer.heartbeat is not None and \
            (now - as_utc(computer.heartbeat)).total_seconds() < heartbeat_ttl
        if me.dag_ids is None:
            values["dag_ids"] = None
        elif live and computer.dag_ids is not None:
            values["dag_ids"] = sorted(set(computer.dag_ids) | me.dag_ids)
        elif not live:
            values["dag_ids"] = sorted(me.dag_ids)
        if computer is None:
            session.add(Computer(name=me.name, **values))
        else:
            for key, value in values.items():
                setattr(computer, key, value)


def beat(beats: sessionmaker[Session], name: str, resources: ResourceRecorder, tasks: int) -> None:
    """Writes computer ``name``'s ``heartbeat`` (now, UTC) and ``usage`` (CPU %, RAM GB used, GPU
    use, ``tasks``: the count of children its worker follows), and the history of that use, in one
    transaction (an idle computer's whole cost to the store)."""
    usage = {**resources.usage(), "tasks": tasks}
    with beats.begin() as session:
        immediate(session)
        resources.write(session, usage)  # the history of usage, in a savepoint: a failure is logged
        # the computer row last: a supervisor's tick locks computer rows, so this lock is held only until commit
        session.execute(update(Computer).where(Computer.name == name).values(heartbeat=utcnow(), usage=usage))


def unscope(store: sessionmaker[Session], name: str, dag_ids: frozenset[int] | None) -> None:
    """Takes ``dag_ids`` out of computer ``name``'s scope (a scoped worker's shutdown); nothing
    for a worker of every DAG (None)."""
    if dag_ids is None:
        return
    with store.begin() as session:
        immediate(session)
        computer = session.get(Computer, name, with_for_update=True)
        if computer is not None and computer.dag_ids is not None:
            computer.dag_ids = sorted(set(computer.dag_ids) - dag_ids)


def primary_address() -> str:
    """This machine's primary IP address as seen by peers, or its host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            return sock.getsockname()[0]
    except OSError:
        return socket.gethostname()
