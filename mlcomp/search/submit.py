"""Submission of a task with a ``search:`` block: the stored config of its composite search task.

Called by :mod:`mlcomp.dag.submit` once the train executor has validated the task (configs merged,
``params`` applied, the experiment built); everything is checked before any row is written.
"""
from __future__ import annotations

from typing import Callable

from mlcomp.errors import ConfigError
from mlcomp.search.spec import check_search

__all__ = ["search_config", "RESOURCE_KEYS"]

RESOURCE_KEYS = ("gpu_min", "gpu_max", "cpu", "memory", "distr", "single_node", "computer", "env", "retries",
                 "priority", "timeout", "preemptible")
"""The task's service keys each trial gets (the search task itself holds no resources)."""


def _experiment(template: dict, ctx):
    from mlcomp.runner.config import make_experiment

    config = template["config"]
    if template.get("expdir") is not None:
        config = {**config, "args": {**config["args"], "expdir": str(ctx.expdir / template["expdir"])}}
    try:
        return make_experiment(config)
    except ConfigError as e:
        raise ctx.error("config", str(e)) from None


def search_config(task, validate: Callable[[], dict], ctx) -> dict:
    """The ``executor_config`` of a search task: ``template`` (the train executor's config of the
    task, with its ``type``), ``search`` (:func:`mlcomp.search.spec.check_search`) and
    ``resources`` (the service keys of :data:`RESOURCE_KEYS` each trial gets).

    Args:
        task: the :class:`mlcomp.dag.spec.TaskSpec`.
        validate: returns the train executor's config of the task (its ``validate``), the template.
        ctx: its :class:`executors.base.SubmitContext`.

    Raises:
        DagError: the task is not a train task, or its ``search:`` block is wrong (``FILE:LINE:``
            with the task and key).
    """
    if task.type != "train":
        raise ctx.error("search", f"a search needs a task of type 'train' (its trials pause and resume), "
                                  f"got {task.type!r}")
    template = validate()
    search = check_search(task.search, template, _experiment(template, ctx), ctx.error)
    resources = {key: getattr(task, key) for key in RESOURCE_KEYS}
    return {"template": {"type": task.type, **template}, "search": search, "resources": resources}
