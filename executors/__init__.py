"""The task types of mlcomp and their registry (see :mod:`executors.base`).

Built-in types (``bash``, ``python``, ``train``, ``infer``, ``trace``, ``grid_search``) are
imported on first use by :func:`get_executor`; a DAG's own types are Executor subclasses in its
expdir.
"""
from executors.base import LOGDIR, Executor, ModelSource, Reporter, SubmitContext, TaskContext
from executors.registry import BUILTINS, get_executor, known_types, register, user_executors

__all__ = [
    "Executor", "SubmitContext", "TaskContext", "Reporter", "ModelSource", "LOGDIR",
    "BUILTINS", "get_executor", "known_types", "register", "user_executors",
]
