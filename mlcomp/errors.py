"""The errors a user can cause. Anything else is a bug and stays a traceback.

The CLI prints an :class:`MlcompError` with exit code ``exit_code`` and no traceback; the API
returns it as JSON with ``http_status``. Messages name the file, the key or dotted path, the bad
value and what is allowed.
"""

__all__ = [
    "MlcompError",
    "ConfigError",
    "DagError",
    "ExecutorError",
    "NotFoundError",
    "StateError",
]


class MlcompError(Exception):
    """Root of every user-facing error. ``exit_code`` is the CLI's, ``http_status`` the API's."""

    exit_code = 2
    http_status = 400


class ConfigError(MlcompError):
    """A runner config, settings value or checkpoint that does not fit (missing/unknown key, bad name)."""


class DagError(MlcompError):
    """A DAG file that cannot be accepted: YAML syntax, unknown executor, bad dependency, cycle, grid."""


class ExecutorError(MlcompError):
    """An executor type or user executor that cannot be resolved or configured."""


class NotFoundError(MlcompError):
    """An id (DAG, task, computer) or a file that does not exist."""

    exit_code = 1
    http_status = 404


class StateError(MlcompError):
    """A request that the current state forbids, e.g. stopping a task that is not running."""

    exit_code = 1
    http_status = 409
