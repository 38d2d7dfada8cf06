"""Files a task names by a relative path: checked at submission, resolved on the worker.

MLComp's ``download`` and ``split`` read and write the project's data folder
(``config.data_folder``); its ``submit`` reads files relative to the task's working folder,
whose ``data/`` links to that same folder.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from executors.base import SubmitContext, TaskContext

__all__ = ["relative_path", "data_folder"]


def relative_path(ctx: SubmitContext, key: str, value: Any) -> str:
    """``value`` when it is a non-empty relative path that does not climb out (no ``..``).

    Raises:
        DagError: through ``ctx.error(key, …)`` for anything else.
    """
    if not (isinstance(value, str) and value.strip()) or PurePosixPath(value).is_absolute() \
            or ".." in PurePosixPath(value).parts:
        raise ctx.error(key, f"got {value!r}; allowed: a relative path without '..'")
    return value


def data_folder(task: TaskContext) -> Path:
    """The project's data folder of ``task`` (``TaskContext.data_dir``), or ``data/`` in its
    working folder outside a worker."""
    return task.data_dir if task.data_dir is not None else task.code_dir / "data"
