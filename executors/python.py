"""The ``python`` task type: calls a function of the DAG's code in the generic Python child.

```yaml
executors:
  prepare:
    type: python
    function: digits_data:prepare     # module:function, importable from the expdir
    n_samples: 100                    # every other key is a keyword argument
```

The function is resolved at submission (module importable from the expdir, attribute callable,
keyword arguments accepted by its signature), so a typo fails before anything is written. A
parameter named ``task`` receives the :class:`~executors.base.TaskContext`. A JSON-able return
value becomes the task's result (a non-dict value is stored as ``{"value": …}``).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register

__all__ = ["PythonExecutor", "resolve_function"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _importable_from(folder: Path, top: str, forget: bool):
    """Puts ``folder`` first on ``sys.path``; when ``folder`` has a module ``top``, one of that name
    already imported from elsewhere is set aside so that the folder's own is imported (as running
    the code from its folder would). With ``forget`` (validation in a long-lived process) the
    modules imported from the folder are dropped afterwards and the set-aside ones come back, so
    two DAGs' modules of the same name (or a DAG's ``utils`` and an installed one) do not mix."""
    folder = Path(folder).resolve()
    shadowed = {}
    if (folder / top).is_dir() or (folder / f"{top}.py").is_file():
        shadowed = {name: module for name, module in sys.modules.items()
                    if name == top or name.startswith(top + ".")}
        for name in shadowed:
            del sys.modules[name]
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        if forget:
            for name in set(sys.modules) - before:
                if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(folder)):
                    del sys.modules[name]
            sys.modules.update(shadowed)


def resolve_function(reference: str, folder: Path, *, forget: bool = False) -> Callable:
    """Imports ``module:function`` (dots allowed on both sides) with ``folder`` first on
    ``sys.path`` and returns the callable.

    Raises:
        ValueError: ``reference`` is not of the form ``module:function``.
        ImportError: the module cannot be imported (any error while importing it is chained).
        AttributeError: the module has no such attribute.
        TypeError: the attribute is not callable.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {reference!r}")
    with _importable_from(folder, module_name.split(".")[0], forget):
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError:
            raise
        except Exception as e:  # the module's own code failed
            raise ImportError(f"importing {module_name} failed: {type(e).__name__}: {e}") from e
        for part in attr.split("."):
            target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{reference} is a {type(target).__name__}, not a callable")
    return target


@register
class PythonExecutor(Executor):
    """Calls ``function`` (``module:function`` in the expdir) with the other keys as keyword
    arguments, plus ``task`` when the function has such a parameter."""

    type_name = "python"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Resolves ``function`` in ``ctx.expdir`` and binds the keyword arguments.

        Raises:
            DagError: ``function`` is missing or malformed, its module does not import, it is not
                callable, or the keyword arguments do not fit its signature.
        """
        reference = spec.get("function")
        if not isinstance(reference, str):
            raise ctx.error("function", f"expected 'module:function' (a string), got {reference!r}")
        try:
            function = resolve_function(reference, ctx.expdir, forget=True)
        except (ValueError, ImportError, AttributeError, TypeError) as e:
            raise ctx.error("function", f"{reference!r} cannot be resolved from {ctx.expdir}: {e}") from None
        kwargs = {k: v for k, v in spec.items() if k != "function"}
        try:
            _bind(function, kwargs, task=None)
        except TypeError as e:
            raise ctx.error("function", f"{reference} does not accept the keys {sorted(kwargs)}: {e}") from None
        try:
            json.dumps(kwargs)
        except TypeError as e:
            raise ctx.error("function", f"the keyword arguments must be plain YAML values: {e}") from None
        return {"function": reference, "kwargs": kwargs}

    def run(self, task: TaskContext) -> dict | None:
        """Imports and calls the function in the child (cwd = the task's code copy)."""
        function = resolve_function(task.config["function"], task.code_dir)
        result = _bind(function, dict(task.config.get("kwargs", {})), task=task)()
        return _as_result(result, task.config["function"])


def _bind(function: Callable, kwargs: dict, task: TaskContext | None) -> Callable[[], Any]:
    """The call of ``function`` with ``kwargs`` (and ``task`` if it takes one); raises TypeError
    when the arguments do not fit the signature."""
    params = inspect.signature(function).parameters
    if "task" in params and "task" not in kwargs:
        kwargs = {**kwargs, "task": task}
    inspect.signature(function).bind(**kwargs)
    return lambda: function(**kwargs)


def _as_result(value: Any, reference: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        value = {"value": value}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        log.warning("%s returned a value that is not JSON-able (%s); no result stored",
                    reference, type(value).__name__)
        return None
    return value
