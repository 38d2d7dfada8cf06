"""Placement of ready tasks on computers: GPUs by index, CPUs and memory.

Free resources are computed from the tasks that hold them (queued, in_progress or stopping on a
computer), never from a counter that could drift (luigi's ``_used_resources``). The functions
here are pure: :func:`free_resources` turns computers and active tasks into :class:`Free` records
and :func:`place` picks a computer and GPU indices for one task, or says why it must wait. A
distributed task that may span computers (``distr: true``, ``single_node: false``) that no one
computer has room for is placed as a gang (:mod:`mlcomp.gang`): all its ranks at once on as few
computers as possible, or nowhere, so a waiting gang never holds a GPU. A tick that places many
tasks goes through one :class:`FreePool`, which makes the same choices as :func:`place` in
O(log computers) for the usual request instead of a scan and sort of every computer.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Protocol

from mlcomp.gang import Part, holdings

__all__ = ["Free", "FreePool", "Placement", "free_resources", "place", "place_gang", "spreads", "describe_request",
           "fleet_state"]


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


STATE_COMPUTERS = 5
"""The most computers a waiting reason lists by name (a lab's reason stays one short line)."""


def fleet_state(computers: list[Free]) -> str:
    """What is free, for a waiting reason: each computer when there are at most
    :data:`STATE_COMPUTERS`, else the first of those with the most free GPUs and a sum of the
    rest, e.g. ``"a: 1 GPU, 4 CPUs, 12 GB free; … and 95 more computers: 3 GPUs free"``."""
    if len(computers) <= STATE_COMPUTERS:
        return "; ".join(str(f) for f in computers)
    shown = sorted(computers, key=lambda f: (-len(f.gpus), f.name))[:STATE_COMPUTERS]
    rest = len(computers) - len(shown)
    free = sum(len(f.gpus) for f in computers) - sum(len(f.gpus) for f in shown)
    return "; ".join(str(f) for f in shown) + f"; and {rest} more computers: {_plural(free, 'GPU')} free"


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
        state = fleet_state(candidates)
        return f"no computer has room for {describe_request(task)} ({state})"
    best = max(fitting, key=lambda f: min(len(f.gpus), task.gpu_max))  # max keeps the first of ties
    gpus = best.gpus[: min(len(best.gpus), task.gpu_max)]
    best.take(gpus, task.cpu, task.memory)
    return Placement(best.name, gpus)


class FreePool:
    """An index over the :class:`Free` records of one tick that places tasks exactly as
    :func:`place` does (same computer, GPU indices, gangs and waiting reasons), in
    O(log computers) per request that names no computer instead of a scan and sort of all of them.

    The computers are the leaves of a segment tree in name order; each inner node keeps the most
    free GPUs, CPUs and memory (GB) of any computer below it. A request asking ``gpu_max`` GPUs
    takes the first computer by name among those with at least ``gpu_max`` free GPUs and its CPUs
    and memory free (they all offer the most, ``gpu_max``); when there is none, a range request
    takes the first by name with the most free GPUs below that, down to ``gpu_min``. Each lookup
    descends the tree leftmost first, skipping subtrees whose maxima are short, so it visits
    O(log computers) nodes unless CPUs or memory rule out many computers that have the GPUs. A
    placement updates the leaves of the computers it took from, O(log computers) each.

    Args:
        free: the free resources by computer name (:func:`free_resources`); the pool takes from
            these records, so take from them only through :meth:`place` while the pool is used.
    """

    def __init__(self, free: dict[str, Free]):
        self.free = free
        self._names = sorted(free)
        self._leaf = {name: i for i, name in enumerate(self._names)}
        size = 1
        while size < len(self._names):
            size *= 2
        self._size = size
        self._gpus = [-1] * (2 * size)  # most free GPUs below each node; leaves from index ``size``
        self._cpu = [float("-inf")] * (2 * size)
        self._memory = [float("-inf")] * (2 * size)
        for i, name in enumerate(self._names):
            f = free[name]
            self._gpus[size + i], self._cpu[size + i], self._memory[size + i] = len(f.gpus), f.cpu, f.memory
        for node in range(size - 1, 0, -1):
            self._pull(node)

    def _pull(self, node: int) -> None:
        left, right = 2 * node, 2 * node + 1
        self._gpus[node] = max(self._gpus[left], self._gpus[right])
        self._cpu[node] = max(self._cpu[left], self._cpu[right])
        self._memory[node] = max(self._memory[left], self._memory[right])

    def _refresh(self, name: str) -> None:
        """Re-reads computer ``name``'s record after a placement took from it."""
        f = self.free[name]
        node = self._size + self._leaf[name]
        self._gpus[node], self._cpu[node], self._memory[node] = len(f.gpus), f.cpu, f.memory
        node //= 2
        while node:
            self._pull(node)
            node //= 2

    def _first(self, gpus: int, cpu: float, memory: float) -> Free | None:
        """The first computer by name with at least ``gpus`` free GPUs, ``cpu`` CPUs and
        ``memory`` GB free, or None."""
        most_gpus, most_cpu, most_memory = self._gpus, self._cpu, self._memory
        stack = [1]
        while stack:
            node = stack.pop()
            if most_gpus[node] < gpus or most_cpu[node] < cpu or most_memory[node] < memory:
                continue
            if node >= self._size:
                leaf = node - self._size
                if leaf < len(self._names):
                    return self.free[self._names[leaf]]
                continue
            stack.append(2 * node + 1)
            stack.append(2 * node)  # the left subtree first: names in order
        return None

    def place(self, task: _TaskLike) -> Placement | str:
        """Chooses a computer and GPU indices for ``task`` and takes them from the pool, exactly as
        :func:`place` would with the pool's records (pinned tasks and gangs go through it and
        :func:`place_gang`).

        Returns:
            a :class:`Placement`, or the reason the task must wait (the texts of :func:`place`).
        """
        if task.computer_pin or not self._names:
            where = place(task, self.free)
        else:
            where = self._place_any(task)
        if isinstance(where, Placement):
            for name in {p.computer for p in where.parts} | {where.computer}:
                self._refresh(name)
        return where

    def _place_any(self, task: _TaskLike) -> Placement | str:
        best = self._first(max(task.gpu_min, task.gpu_max), task.cpu, task.memory)
        # none offers gpu_max: the most below it wins; no computer has more free than the root's
        gpus = min(task.gpu_max - 1, self._gpus[1])
        while best is None and gpus >= task.gpu_min:
            best = self._first(gpus, task.cpu, task.memory)  # none has gpus + 1: this one has gpus
            gpus -= 1
        if best is None:
            candidates = [self.free[name] for name in self._names]
            if spreads(task):
                return place_gang(task, candidates)
            state = fleet_state(candidates)
            return f"no computer has room for {describe_request(task)} ({state})"
        taken = best.gpus[: min(len(best.gpus), task.gpu_max)]
        best.take(taken, task.cpu, task.memory)
        return Placement(best.name, taken)


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
        state = fleet_state(candidates)
        return (f"no computers together have room for {describe_request(task)} per computer "
                f"with {_plural(task.gpu_min, 'GPU')} in all ({state})")
    by_name = {f.name: f for f in candidates}
    for part in spread:
        by_name[part.computer].take(list(part.gpus), task.cpu, task.memory)
    return Placement(spread[0].computer, list(spread[0].gpus), tuple(spread))
