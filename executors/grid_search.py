"""The ``grid_search`` task type: the parent of a grid's cells. It runs no process; the supervisor
moves it to ``in_progress`` when it is ready and rolls its status up from its cells
(:mod:`mlcomp.gridsearch`).

Written either as a ``grid:`` on any task, or as a task of this type naming its template::

    search:
      type: grid_search
      executor: train        # another task of the file, used as the template
      parallel: 2            # at most 2 cells active at once (optional)
      grid:
        - lr: [0.1, 0.01]

Submission (``mlcomp.dag.submit``) stores the parent's executor_config as
``{"template": {"type": …, <template's executor keys>}, "parallel": int | None, "cells": int}``.

Its ranking and roll-up live in :mod:`mlcomp.gridsearch`.
"""
from __future__ import annotations

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register

__all__ = ["GridSearchExecutor"]

CONFIG_KEYS = ("template", "parallel", "cells")


@register
class GridSearchExecutor(Executor):
    """The parent task of a grid search (virtual: no process, status rolled up from its cells)."""

    type_name = "grid_search"
    virtual = True

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks a stored parent config: ``template`` (a mapping with a ``type``), ``parallel``
        (None or an int >= 1) and ``cells`` (an int >= 1).

        Raises:
            DagError: a key is missing, unknown or of the wrong kind.
        """
        unknown = sorted(set(spec) - set(CONFIG_KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a grid search; allowed: {', '.join(CONFIG_KEYS)}")
        template, parallel, cells = spec.get("template"), spec.get("parallel"), spec.get("cells")
        if not isinstance(template, dict) or not isinstance(template.get("type"), str):
            raise ctx.error("template", f"expected a mapping with a 'type', got {template!r}")
        if parallel is not None and (not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1):
            raise ctx.error("parallel", f"got {parallel!r}; allowed: an int >= 1")
        if not isinstance(cells, int) or isinstance(cells, bool) or cells < 1:
            raise ctx.error("cells", f"got {cells!r}; allowed: an int >= 1 (the number of cells)")
        return {"template": dict(template), "parallel": parallel, "cells": cells}

    def run(self, task: TaskContext) -> dict | None:
        """Never called: the supervisor rolls a grid search up from its cells.

        Raises:
            RuntimeError: always, naming the task.
        """
        raise RuntimeError(f"task {task.task_id} ({task.name!r}) is a grid search: it has no process; "
                           f"the supervisor rolls its status up from its cells")
