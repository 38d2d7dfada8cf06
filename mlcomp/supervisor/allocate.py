"""Placement of ready tasks on computers: GPUs by index, CPUs and memory.

Free resources are computed from the tasks that hold them (queued, in_progress or stopping on a
computer), never from a counter that could drift (luigi's ``_used_resources``). The functions
here are pure: :func:`free_resources` turns computers and active tasks into :class:`Free` records
and :func:`place` picks a computer and GPU indices for one task, or says why it must wait. A
distributed task that may span computers (``distr: true``, ``single_node: false``) that no one
computer has room for is placed as a gang (:mod:`mlcomp.gang`): all its ranks at once on as few
computers as possible, or nowhere, so a waiting gang never holds a GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Protocol

from mlcomp.gang import Part, holdings

__all__ = ["Free", "Placement", "free_resources", "place", "place_gang", "spreads", "describe_request"]


class _ComputerLike(Protocol):
    name: str
    gpus: list
    cpu: int
    memory: float


class _TaskLike(Protocol):
    computer: str | None
    gpus: list
    gpu_min: int
    gpu_max: int
    cpu: int
    memory: float
    computer_pin: str | None
    distr: bool
    single_node: bool
    placement: dict | None


@dataclasses.dataclass
class Free:
    """What is still free on one computer: GPU indices, CPU count and memory in GB."""

    name: str
    gpus: list[int]
    cpu: int
    memory: float

    def take(self, gpus: list[int], cpu: int, memory: float) -> None:
        """Marks ``gpus``, ``cpu`` CPUs and ``memory`` GB as used by a new placement."""
        self.gpus = [g for g in self.gpus if g not in gpus]
        self.cpu -= cpu
        self.memory -= memory

    def __str__(self):
        return f"{self.name}: {_plural(len(self.gpus), 'GPU')}, {_plural(self.cpu, 'CPU')}, {self.memory:g} GB free"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a task runs: the computer's name and the physical GPU indices it gets; for a gang,
    ``parts`` lists every computer's ranks (rank 0's first, which is ``computer`` and ``gpus``)."""

    computer: str
    gpus: list[int]
    parts: tuple[Part, ...] = ()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _gpu_indices(computer: _ComputerLike) -> list[int]:
    return sorted(int(g["index"]) if isinstance(g, dict) else int(g) for g in computer.gpus or [])


def free_resources(computers: Iterable[_ComputerLike], active: Iterable[_TaskLike]) -> dict[str, Free]:
    """Free resources per computer name.

    Args:
        computers: the alive computers (``gpus`` as ``[{"index": i, ...}]`` or plain indices,
            ``cpu`` a count, ``memory`` GB).
        active: tasks holding resources (status queued, in_progress or stopping) with ``computer``
            set; a gang's ``placement`` takes each part's GPUs, CPUs and memory on its computer;
            tasks on other computers are ignored.
    """
    free = {c.name: Free(c.name, _gpu_indices(c), int(c.cpu), float(c.memory)) for c in computers}
    for task in active:
        for part in holdings(task.computer, task.gpus, getattr(task, "placement", None)):
            if part.computer in free:
                free[part.computer].take([int(g) for g in part.gpus], task.cpu, task.memory)
    return free


def describe_request(task: _TaskLike) -> str:
    """The task's request in words, e.g. ``"2-4 GPUs, 1 CPU, 0 GB"``."""
    if task.gpu_min == task.gpu_max:
        gpus = _plural(task.gpu_min, "GPU")
    else:
        gpus = f"{task.gpu_min}-{task.gpu_max} GPUs"
    return f"{gpus}, {_plural(task.cpu, 'CPU')}, {task.memory:g} GB"


def place(task: _TaskLike, free: dict[str, Free]) -> Placement | str:
    """Chooses a computer and GPU indices for ``task`` and takes them from ``free``.

    A range request (``gpu_min < gpu_max``) takes as many free GPUs as it can up to ``gpu_max``, at
    least ``gpu_min``, on the computer offering the most; ties go to the first name. GPUs are the
    lowest free indices. A ``computer_pin`` restricts the choice to that computer. A task with
    ``distr: true`` and ``single_node: false`` that no computer has room for is spread over
    several (:func:`place_gang`).

    Returns:
        a :class:`Placement` (and ``free`` is updated), or the reason the task must wait, e.g.
        ``"no computer has room for 2 GPUs, 1 CPU, 0 GB (a: 1 GPU, 4 CPUs, 12 GB free)"``.
    """
    if task.computer_pin:
        if task.computer_pin not in free:
            return f"pinned computer {task.computer_pin!r} is not alive (known alive: {', '.join(free) or 'none'})"
        candidates = [free[task.computer_pin]]
    else:
        candidates = [free[name] for name in sorted(free)]
    if not candidates:
        return "no computer is alive: start `mlcomp worker` or `mlcomp server`"
    fitting = [
        f for f in candidates
        if len(f.gpus) >= task.gpu_min and f.cpu >= task.cpu and f.memory >= task.memory
    ]
    if not fitting and spreads(task):
        return place_gang(task, candidates)
    if not fitting:
        state = "; ".join(str(f) for f in candidates)
        return f"no computer has room for {describe_request(task)} ({state})"
    best = max(fitting, key=lambda f: min(len(f.gpus), task.gpu_max))  # max keeps the first of ties
    gpus = best.gpus[: min(len(best.gpus), task.gpu_max)]
    best.take(gpus, task.cpu, task.memory)
    return Placement(best.name, gpus)


def spreads(task: _TaskLike) -> bool:
    """Whether ``task`` may be spread over computers: ``distr: true``, ``single_node: false``
    and at least one GPU asked for (ranks are one per GPU)."""
    return bool(getattr(task, "distr", False)) and not getattr(task, "single_node", True) and task.gpu_min > 0


def place_gang(task: _TaskLike, candidates: list[Free]) -> Placement | str:
    """All ranks of ``task`` on as few of ``candidates`` as possible, or none.

    Computers with a free GPU and the task's CPUs and memory free (both asked per computer: each
    part runs its own processes) are taken by most free GPUs first (ties by name), each giving
    all its free GPUs up to what is still missing of ``gpu_max``, until ``gpu_min`` is reached:
    taking the largest first needs the fewest computers. Nothing is taken from ``candidates``
    unless the whole gang fits.

    Returns:
        a :class:`Placement` with one :class:`~mlcomp.gang.Part` per computer (consecutive ranks
        from 0 in the order taken), or the reason the gang waits, e.g. ``"no 2 computers
        together have room for 2 GPUs, 1 CPU, 0 GB each (a: 1 GPU, 4 CPUs, 12 GB free; b: ...)"``.
    """
    usable = sorted((f for f in candidates if f.gpus and f.cpu >= task.cpu and f.memory >= task.memory),
                    key=lambda f: (-len(f.gpus), f.name))
    spread, ranks = [], 0
    for free in usable:
        if ranks >= task.gpu_min:
            break
        gpus = free.gpus[: task.gpu_max - ranks]
        spread.append(Part(free.name, tuple(gpus), ranks))
        ranks += len(gpus)
    if ranks < task.gpu_min:
        state = "; ".join(str(f) for f in candidates)
        return (f"no computers together have room for {describe_request(task)} per computer "
                f"with {_plural(task.gpu_min, 'GPU')} in all ({state})")
    by_name = {f.name: f for f in candidates}
    for part in spread:
        by_name[part.computer].take(list(part.gpus), task.cpu, task.memory)
    return Placement(spread[0].computer, list(spread[0].gpus), tuple(spread))
