"""Placement of ready tasks on computers: GPUs by index, CPUs and memory.

Free resources are computed from the tasks that hold them (queued, in_progress or stopping on a
computer), never from a counter that could drift (luigi's ``_used_resources``). The functions
here are pure: :func:`free_resources` turns computers and active tasks into :class:`Free` records
and :func:`place` picks a computer and GPU indices for one task, or says why it must wait.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Protocol

__all__ = ["Free", "Placement", "free_resources", "place", "describe_request"]


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
    """Where a task runs: the computer's name and the physical GPU indices it gets."""

    computer: str
    gpus: list[int]


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
            set; tasks on other computers are ignored.
    """
    free = {c.name: Free(c.name, _gpu_indices(c), int(c.cpu), float(c.memory)) for c in computers}
    for task in active:
        if task.computer in free:
            free[task.computer].take([int(g) for g in task.gpus or []], task.cpu, task.memory)
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
    lowest free indices. A ``computer_pin`` restricts the choice to that computer. Tasks always
    run on a single computer, also with ``single_node: false`` (the reason to wait says so when
    only several computers together would have room).

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
    if not fitting:
        state = "; ".join(str(f) for f in candidates)
        reason = f"no computer has room for {describe_request(task)} ({state})"
        if not getattr(task, "single_node", True) and sum(len(f.gpus) for f in candidates) >= task.gpu_min:
            reason += "; single_node: false does not spread a task over computers: each task runs on one"
        return reason
    best = max(fitting, key=lambda f: min(len(f.gpus), task.gpu_max))  # max keeps the first of ties
    gpus = best.gpus[: min(len(best.gpus), task.gpu_max)]
    best.take(gpus, task.cpu, task.memory)
    return Placement(best.name, gpus)
