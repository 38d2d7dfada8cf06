"""The ``search`` task type: the parent of an adaptive search's trials (``mlcomp.search``). It runs
no process; the supervisor samples, pauses, promotes and prunes its trials and ends it.

Written as a ``search:`` block on a train task (see :mod:`mlcomp.search.spec`); submission stores
its executor_config as ``{"template": {"type": "train", …}, "search": {…}, "resources": {…}}``.
"""
from __future__ import annotations

from executors.base import Executor, TaskContext
from executors.registry import register

__all__ = ["SearchExecutor"]


@register
class SearchExecutor(Executor):
    """The parent task of a search (virtual: no process; ``mlcomp.search.step`` drives it)."""

    type_name = "search"
    virtual = True

    def run(self, task: TaskContext) -> dict | None:
        """Never called: the supervisor drives a search.

        Raises:
            RuntimeError: always, naming the task.
        """
        raise RuntimeError(f"task {task.task_id} ({task.name!r}) is a search: it has no process; "
                           f"the supervisor drives its trials")
