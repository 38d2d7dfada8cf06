"""How a run ends, as one typed value, and the one table of exit codes derived from it.

An executor's ``run`` (in a task's child) ends with a :data:`TaskOutcome`: :class:`Success` with
its result (a plain return value means success too: :func:`as_outcome`), :class:`Failed` with a
reason, :class:`Stopped` or :class:`Paused` with the checkpoint that resumes it. The child exits
with :func:`exit_code` of it; the worker reads the exit back with :func:`kind_of_exit`
(:func:`mlcomp.worker.launch.outcome`), and ``mlcomp run`` exits through the same table. The codes
are sysexits': ``EX_TEMPFAIL`` (75, "try again later", i.e. resume) for a stop, ``EX_IOERR`` (74)
for a failure on a full device (ENOSPC).

Imports nothing of mlcomp and no third-party package: the runner, the executors, the child, the
worker and the CLI all read it.
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Kind", "Success", "Failed", "Stopped", "Paused", "TaskOutcome", "EXIT_CODES", "EXIT_STOPPED",
           "EXIT_NO_SPACE", "exit_code", "kind_of_exit", "as_outcome"]


class Kind(str, enum.Enum):
    """The kinds of outcome; each value is the name of the task status it ends in
    (:class:`mlcomp.db.TaskStatus`)."""

    success = "success"
    failed = "failed"
    stopped = "stopped"
    paused = "paused"


@dataclasses.dataclass(frozen=True)
class Success:
    """The run returned ``result`` (JSON-able, or None)."""

    result: Any = None
    kind: ClassVar[Kind] = Kind.success


@dataclasses.dataclass(frozen=True)
class Failed:
    """The run failed for ``reason`` (one line); ``no_space`` when an error said the device is full
    (ENOSPC)."""

    reason: str
    no_space: bool = False
    kind: ClassVar[Kind] = Kind.failed


@dataclasses.dataclass(frozen=True)
class Stopped:
    """The run stopped on request after a batch; ``checkpoint`` (``last_full.pth``, or None when
    none was written) resumes it."""

    message: str
    checkpoint: Path | None = None
    kind: ClassVar[Kind] = Kind.stopped


@dataclasses.dataclass(frozen=True)
class Paused:
    """A search trial paused at a rung (:mod:`mlcomp.search`); ``checkpoint`` resumes it when the
    trial is promoted."""

    message: str
    checkpoint: Path | None = None
    kind: ClassVar[Kind] = Kind.paused


TaskOutcome = Success | Failed | Stopped | Paused
"""How a run ended."""

EXIT_CODES: dict[Kind, int] = {Kind.success: 0, Kind.failed: 1, Kind.stopped: 75, Kind.paused: 76}
"""The one table: each kind of outcome → the exit code of a process that ends so."""

_KINDS: dict[int, Kind] = {code: kind for kind, code in EXIT_CODES.items()}

EXIT_STOPPED = EXIT_CODES[Kind.stopped]
"""75: a run or a task's child stopped on request (what a user's script exits with, too)."""

EXIT_NO_SPACE = 74
"""The exit code of a :class:`Failed` outcome with ``no_space``. Its stderr, where the error would
be printed, is often on the full file system, so the worker names the device error from this code
alone when the disk has room again by the time it looks (:func:`mlcomp.worker.launch.outcome`)."""


def exit_code(outcome: TaskOutcome) -> int:
    """The exit code of a process whose run ended with ``outcome`` (:data:`EXIT_CODES`;
    :data:`EXIT_NO_SPACE` for a failure on a full device).

    Raises:
        TypeError: ``outcome`` is not a :data:`TaskOutcome`.
    """
    if not isinstance(outcome, TaskOutcome):
        raise TypeError(f"exit_code: got {type(outcome).__name__}; allowed: Success, Failed, Stopped or Paused")
    if isinstance(outcome, Failed) and outcome.no_space:
        return EXIT_NO_SPACE
    return EXIT_CODES[outcome.kind]


def kind_of_exit(code: int | None) -> Kind:
    """The kind of outcome an exit ``code`` means (:data:`EXIT_CODES` read backwards): any code
    outside the table (74, a signal's negative code, None for no exit record) is a failure."""
    return _KINDS.get(code, Kind.failed)


def as_outcome(value: Any) -> TaskOutcome:
    """``value`` if it is a :data:`TaskOutcome`, else :class:`Success` with it as the result (an
    executor that returns a plain result succeeded)."""
    return value if isinstance(value, TaskOutcome) else Success(value)
