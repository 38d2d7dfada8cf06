"""The task types of mlcomp and their registry (see :mod:`executors.base`).

Built-in types (``bash``, ``python``, ``train``, ``catalyst``, ``infer``, ``trace``,
``click``, ``download``, ``split``, ``submit``) are imported on first use by :func:`get_executor`;
a DAG's own types are Executor subclasses in its folder (:mod:`executors.discovery`). The
composite kinds (``grid_search``, ``search``: :class:`mlcomp.kinds.TaskKind`) have no executor.
"""
from executors.base import LOGDIR, Executor, ModelSource, Reporter, SubmitContext, TaskContext
from executors.registry import BUILTINS, get_executor, known_types, register

__all__ = [
    "Executor", "SubmitContext", "TaskContext", "Reporter", "ModelSource", "LOGDIR",
    "BUILTINS", "get_executor", "known_types", "register",
]
