"""A distributed task spread over several computers (a gang): its placement record and the
``torch.distributed`` rank group each computer's part of it runs.

A task placed on one computer has ``Task.computer`` and ``Task.gpus`` and no placement record. A
gang (``distr: true``, ``single_node: false``, more GPUs than one computer has free) also has
``Task.placement``: a :class:`PlacementRecord`, stored as JSON (:meth:`PlacementRecord.to_json`,
the one place it is written; :meth:`PlacementRecord.from_json`, the one place it is read)::

    {"parts": [{"computer": "a", "gpus": [0, 1], "first_rank": 0},
               {"computer": "b", "gpus": [0], "first_rank": 2}],
     "world_size": 3, "master_addr": "10.0.0.1",
     "master_port": 29500,        # written by rank 0's worker when it starts its ranks
     "pids": {"b": 4242},         # the recorder pid of each part after the first, by computer
     "ended": {"b": ["success", "exit code 0"]}}  # how each part ended, by computer

The supervisor writes the record in the tick that places all its ranks (:func:`record`); the
workers change it only through the ``with_*`` methods, which return a new record. The first part
is rank 0's and is also ``Task.computer``/``Task.gpus``; each part runs one process per GPU,
ranks ``first_rank`` … ``first_rank + len(gpus) - 1``. This module is pure (no store, no torch),
so the supervisor, the worker and the task's child share it.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Iterable, Mapping, NamedTuple

__all__ = ["Part", "Ended", "PlacementRecord", "PORTS", "parts", "holdings", "computers_of", "part_of", "part_pid",
           "record", "rank_group", "group_env", "group_from_env", "pick_port", "parse_ports", "GROUP_ENV"]

PORTS = (29500, 29599)
"""The default rendezvous port range of a worker (inclusive), torchrun's default port first."""

GROUP_ENV = ("MLCOMP_WORLD_SIZE", "MLCOMP_FIRST_RANK", "MLCOMP_MASTER_ADDR", "MLCOMP_MASTER_PORT")
"""Environment variables of a task's child that say which ranks of which group it runs."""


@dataclasses.dataclass(frozen=True)
class Part:
    """The ranks one computer runs: one process per GPU index of ``gpus``, from ``first_rank``."""

    computer: str
    gpus: tuple[int, ...]
    first_rank: int

    def as_dict(self) -> dict[str, Any]:
        """The part as stored in the placement record."""
        return {"computer": self.computer, "gpus": list(self.gpus), "first_rank": self.first_rank}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> "Part":
        """The part :meth:`as_dict` stored."""
        return cls(stored["computer"], tuple(int(g) for g in stored["gpus"]), int(stored["first_rank"]))


class Ended(NamedTuple):
    """How one computer's part of a gang ended: the status it recorded (a ``TaskStatus`` value)
    and its reason."""

    status: str
    reason: str


@dataclasses.dataclass(frozen=True)
class PlacementRecord:
    """A gang's placement record (``Task.placement``): its parts (rank 0's first), the group's
    size and rendezvous (``master_addr``, and ``master_port`` once rank 0's worker chose it), the
    recorder pid of each part after the first (``pids``, by computer) and how each part ended
    (``ended``, by computer). Immutable: the ``with_*`` methods return a changed copy."""

    parts: tuple[Part, ...]
    world_size: int
    master_addr: str
    master_port: int | None = None
    pids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    ended: Mapping[str, Ended] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "parts", tuple(self.parts))
        object.__setattr__(self, "pids", types.MappingProxyType(dict(self.pids)))
        object.__setattr__(self, "ended", types.MappingProxyType({k: Ended(*v) for k, v in self.ended.items()}))

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> "PlacementRecord":
        """The record :meth:`to_json` stored.

        Raises:
            ValueError: ``stored`` lacks ``parts``, ``world_size`` or ``master_addr``.
        """
        missing = [key for key in ("parts", "world_size", "master_addr") if key not in stored]
        if missing:
            raise ValueError(f"a placement record without {', '.join(missing)}: {dict(stored)!r}")
        return cls(parts(stored), int(stored["world_size"]), stored["master_addr"], stored.get("master_port"),
                   {name: int(pid) for name, pid in (stored.get("pids") or {}).items()}, stored.get("ended") or {})

    def to_json(self) -> dict[str, Any]:
        """The record as ``Task.placement`` stores it (JSON types only)."""
        return {"parts": [p.as_dict() for p in self.parts], "world_size": self.world_size,
                "master_addr": self.master_addr, "master_port": self.master_port, "pids": dict(self.pids),
                "ended": {name: list(end) for name, end in self.ended.items()}}

    def with_port(self, port: int) -> "PlacementRecord":
        """This record with rank 0's rendezvous port ``port`` (chosen by rank 0's worker)."""
        return dataclasses.replace(self, master_port=port)

    def with_pid(self, computer: str, pid: int) -> "PlacementRecord":
        """This record with ``pid``, the recorder pid of ``computer``'s part (not rank 0's)."""
        return dataclasses.replace(self, pids={**self.pids, computer: pid})

    def with_ended(self, computer: str, status: str, reason: str) -> "PlacementRecord":
        """This record with ``computer``'s part ended with ``status`` (a ``TaskStatus`` value)."""
        return dataclasses.replace(self, ended={**self.ended, computer: Ended(status, reason)})

    def all_ended(self) -> bool:
        """Whether every part has ended."""
        return len(self.ended) == len(self.parts)


def parts(placement: Mapping | None) -> list[Part]:
    """The parts of a stored placement record (rank 0's first); ``[]`` for None."""
    return [Part.from_dict(p) for p in (placement or {}).get("parts", [])]


def holdings(computer: str | None, gpus: Iterable[int], placement: Mapping | None) -> list[Part]:
    """What a task holds, computer by computer: the parts of its stored placement record, else
    all of ``gpus`` on ``computer`` (none when it has no computer)."""
    if placement:
        return parts(placement)
    return [Part(computer, tuple(int(g) for g in gpus or ()), 0)] if computer else []


def part_pid(part: Part, pid: int | None, placement: Mapping | None) -> int | None:
    """The recorder pid of ``part``: the task's ``pid`` for rank 0's, else the one its worker
    noted in the stored placement record (None before it started)."""
    if part.first_rank == 0:
        return pid
    return PlacementRecord.from_json(placement).pids.get(part.computer) if placement else None


def computers_of(computer: str | None, placement: Mapping | None) -> list[str]:
    """The computers a task holds resources on: its parts' computers, else ``[computer]`` (none
    when it has no computer)."""
    return [p.computer for p in holdings(computer, (), placement)]


def part_of(name: str, computer: str | None, gpus: Iterable[int], placement: Mapping | None) -> Part | None:
    """The part computer ``name`` runs of a task placed on ``computer`` with ``gpus`` (its whole
    request when there is no placement record), or None when it runs none."""
    return next((p for p in holdings(computer, gpus, placement) if p.computer == name), None)


def record(spread: list[Part], master_addr: str) -> dict[str, Any]:
    """The stored placement record of the parts ``spread`` (rank 0's first) with rank 0's computer
    at ``master_addr``; the master port is added by rank 0's worker."""
    return PlacementRecord(tuple(spread), sum(len(p.gpus) for p in spread), master_addr).to_json()


def rank_group(placement: Mapping, part: Part) -> dict[str, Any]:
    """What ``part``'s processes need to join the group of the stored placement record: ``world_size``,
    ``first_rank``, ``master_addr`` and ``master_port`` (None until rank 0's worker chose it)."""
    placed = PlacementRecord.from_json(placement)
    return {"world_size": placed.world_size, "first_rank": part.first_rank,
            "master_addr": placed.master_addr, "master_port": placed.master_port}


def group_env(group: Mapping[str, Any]) -> dict[str, str]:
    """``group`` (from :func:`rank_group`) as the :data:`GROUP_ENV` variables of a child."""
    keys = ("world_size", "first_rank", "master_addr", "master_port")
    return {name: str(group[key]) for name, key in zip(GROUP_ENV, keys)}


def group_from_env(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The group a child's environment names (:func:`group_env`), or None when it names none."""
    if not env.get(GROUP_ENV[0]):
        return None
    world, first, addr, port = (env[name] for name in GROUP_ENV)
    return {"world_size": int(world), "first_rank": int(first), "master_addr": addr, "master_port": int(port)}


def parse_ports(text: str) -> tuple[int, int]:
    """``"29500-29599"`` → ``(29500, 29599)``.

    Raises:
        ValueError: not two port numbers ``FIRST-LAST`` with 1 ≤ FIRST ≤ LAST ≤ 65535.
    """
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"{text!r} is not a port range FIRST-LAST, e.g. 29500-29599") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: ports must satisfy 1 <= FIRST <= LAST <= 65535")
    return low, high


def pick_port(ports: Iterable[int], used: set[int], bindable: Callable[[int], bool]) -> int | None:
    """The first port of ``ports`` (a computer's rendezvous range) that no other group of the
    store uses (``used``) and that ``bindable(port)`` says is free on the machine; None when none is."""
    return next((p for p in ports if p not in used and bindable(p)), None)
