"""What a task's child is started with: its argv, working folder and environment, and how its
exit becomes a status and a reason.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from mlcomp import gang
from mlcomp.db import Task, TaskStatus
from mlcomp.gang import Part
from mlcomp.outcome import EXIT_NO_SPACE, Kind, kind_of_exit
from mlcomp.worker.context import data_dir_of
from mlcomp.worker.disk import NO_SPACE
from mlcomp.worker.process import describe_exit, ensure_folder

__all__ = ["LaunchSpec", "child_env", "link_project_folders", "Outcome", "outcome", "CHILD_MODULE"]

CHILD_MODULE = "mlcomp.worker.child"


def child_env(task: Task, settings, base: dict[str, str] | None = None, part: Part | None = None,
              group: dict | None = None) -> dict[str, str]:
    """The environment of ``task``'s child: ``base`` (default ``os.environ``), the task's ``env``,
    ``CUDA_VISIBLE_DEVICES`` (allocated indices of this computer, ``part`` of a gang, comma-separated;
    empty when none), ``MLCOMP_TASK_ID``, ``MLCOMP_ATTEMPT``, ``MLCOMP_ROOT``, ``MLCOMP_DB_URL``,
    ``MLCOMP_DATA_DIR`` (the project's data folder, ``settings.data_dir / project``, unless the
    task's ``env`` sets it), ``PYTHONUNBUFFERED=1`` (so lines arrive as they are printed),
    ``MLCOMP_COMPUTER`` (whose part it runs: the key of its report journal) and for a gang the rank
    ``group``'s variables (:func:`mlcomp.gang.group_env`)."""
    env = dict(os.environ if base is None else base)
    env.update({str(k): str(v) for k, v in (task.env or {}).items()})
    env["MLCOMP_DATA_DIR"] = str(data_dir_of(task, settings))
    if group is not None:
        env.update(gang.group_env(group))
    env.update(
        MLCOMP_COMPUTER=part.computer if part is not None else task.computer or "",
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in (part.gpus if part is not None else task.gpus or [])),
        MLCOMP_TASK_ID=str(task.id),
        MLCOMP_ATTEMPT=str(task.attempt),
        MLCOMP_ROOT=str(settings.root),
        MLCOMP_DB_URL=settings.db_url,
        PYTHONUNBUFFERED="1",
    )
    return env


PROJECT_LINKS = {"data": "data_dir", "models": "models_dir"}
"""Links MLComp puts in a task's working folder: name → the Settings folder of the project's."""


def link_project_folders(code_dir: Path, settings, project: str) -> None:
    """Makes ``code_dir/data`` and ``code_dir/models`` symbolic links to the project's folders
    (``settings.data_dir / project``, ``settings.models_dir / project``, created if missing), as
    MLComp's task folders have them; a name the code copy already has is left alone.

    Raises:
        ValueError: ``project`` is not one folder name (empty, ``.``, ``..``, a ``/`` or a NUL: a
            row written before submission checked names), so its links would lead outside the
            Settings folders; the task cannot start.
    """
    if project in ("", ".", "..") or "/" in project or os.sep in project or "\0" in project:
        raise ValueError(f"project name {project!r} is not a folder name inside {settings.data_dir} and "
                         f"{settings.models_dir}; its data/ and models/ links are not made")
    for name, attribute in PROJECT_LINKS.items():
        target = Path(getattr(settings, attribute)) / project
        ensure_folder(target)
        try:
            (code_dir / name).symlink_to(target, target_is_directory=True)
        except FileExistsError:
            pass


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start a task's child, read from its row in one short transaction."""

    task_id: int
    attempt: int
    dag_id: int
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    timeout: float | None

    @classmethod
    def for_task(cls, task: Task, settings, command: list[str] | None, part: Part | None = None,
                 group: dict | None = None) -> "LaunchSpec":
        """``command`` is the executor's argv, or None for the generic Python child; ``part`` and
        ``group`` are this computer's part of a gang and its rank group (:func:`child_env`)."""
        # -P: the code copy (the working folder) is not put on sys.path, so a user's folder
        # named like one of mlcomp's packages (executors/, ui/) cannot shadow it.
        argv = list(command) if command is not None else [sys.executable, "-P", "-m", CHILD_MODULE]
        return cls(task_id=task.id, attempt=task.attempt, dag_id=task.dag_id, argv=argv,
                   cwd=Path(settings.tasks_dir) / str(task.id) / "code", env=child_env(task, settings, part=part, group=group),
                   timeout=task.timeout)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a finished child's task ends, as the worker records it: ``status`` (success, failed,
    stopped or paused) and ``reason``."""

    status: TaskStatus
    reason: str

    @classmethod
    def of(cls, kind: Kind, reason: str) -> "Outcome":
        """The record of an outcome of ``kind`` (:mod:`mlcomp.outcome`): the status of its name."""
        return cls(TaskStatus(kind.value), reason)


def outcome(returncode: int | None, *, stop_requested: bool, timed_out: float | None = None,
            last_error: str | None = None, no_space: str | None = None,
            preempted_by: int | None = None) -> Outcome:
    """Maps a child's exit to the task's final status.

    The exit code is read through :func:`mlcomp.outcome.kind_of_exit` (0 success, 75 stopped, 76
    paused: a search trial at a rung, ``mlcomp.search``), after these rules: a timeout
    (``timed_out`` = the limit in seconds) is failed; a stop request ending in any other way than
    success is stopped, or paused with the reason "preempted by task N" when the stop was a
    preemption (``preempted_by`` = N, :mod:`mlcomp.supervisor.preempt`). Anything else, a process
    that ended with no exit record (``returncode`` None) included, is failed with the exit code or
    signal and the last line the child wrote to stderr. A failure on a full disk (``no_space``:
    the reason :func:`mlcomp.worker.disk.no_space` gave for the task's folder) or with exit 74
    (:data:`mlcomp.outcome.EXIT_NO_SPACE`, the child's ENOSPC, when stderr says nothing else) says
    so first, the stderr line (if any) after it.
    """
    how, kind = describe_exit(returncode), kind_of_exit(returncode)
    if timed_out is not None:
        return Outcome.of(Kind.failed, f"timed out after {timed_out:g} s ({how})")
    if kind is Kind.success:
        return Outcome.of(kind, how)
    if kind is Kind.paused and not stop_requested:
        return Outcome.of(kind, f"paused at a rung of its search ({how})")
    if stop_requested and preempted_by is not None:
        return Outcome.of(Kind.paused, f"preempted by task {preempted_by}")
    if kind is Kind.stopped or stop_requested:
        return Outcome.of(Kind.stopped, f"stopped on request ({how})" if stop_requested
                          else f"the task stopped itself ({how})")
    if no_space is None and returncode == EXIT_NO_SPACE and (last_error is None or "No space left" in last_error):
        no_space = NO_SPACE  # the child's ENOSPC, not a command's own exit 74 with its own error line
    if no_space is not None:
        return Outcome.of(Kind.failed, f"{how}: {no_space}" + (f"; {last_error}" if last_error else ""))
    return Outcome.of(Kind.failed, f"{how}: {last_error}" if last_error else how)
