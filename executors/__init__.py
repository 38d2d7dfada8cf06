"""The task types of mlcomp and their registry (see :mod:`executors.base`).

Built-in types (``bash``, ``python``, ``train``, ``catalyst``, ``infer``, ``trace``,
``grid_search``, ``search``, ``click``, ``download``, ``split``, ``submit``) are imported on first
use by :func:`get_executor`; a DAG's own types are Executor subclasses in its folder
(:mod:`executors.discovery`).
"""
from executors.base import LOGDIR, Executor, ModelSource, Reporter, SubmitContext, TaskContext
from executors.registry import BUILTINS, get_executor, known_types, register

__all__ = [
    "Executor", "SubmitContext", "TaskContext", "Reporter", "ModelSource", "LOGDIR",
    "BUILTINS", "get_executor", "known_types", "register",
]
