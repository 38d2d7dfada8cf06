"""The ``click`` task type: MLComp's ``Click``, which runs a click command of the DAG's code as a
task, so a script written for the command line runs in the cluster unchanged.

```yaml
executors:
  work:
    type: click
    module: main        # main.py of the DAG's folder (a dotted module name works too)
    command: work       # the click command (or group) in it
    count: 10           # any other key: a parameter of the command, by its name
```

The command runs with no command-line arguments; the other keys of the task become its
parameters' values through click's ``default_map`` (MLComp set each parameter's default), so a
required option given in the DAG is satisfied and one not given keeps its default. The module and
command are resolved at submission, and every key must name one of the command's parameters. A
dict the command returns becomes the task's result. As in MLComp, the module's ``tqdm`` is
replaced by one that also reports the bar's progress to the task
(:class:`executors.progress.ReportingTqdm`).
"""
from __future__ import annotations

import functools
import json
import sys

import click

from executors.base import Executor, SubmitContext, TaskContext
from executors.progress import ReportingTqdm
from executors.python import resolve_function
from executors.registry import register
from mlcomp.errors import ExecutorError

__all__ = ["ClickExecutor"]


def _command(module: str, command: str, folder, forget: bool = False) -> click.Command:
    """The click command ``command`` of ``module``, importable from ``folder``.

    Raises:
        ValueError, ImportError, AttributeError, TypeError: as :func:`resolve_function`; also
            TypeError when the attribute is not a click command.
    """
    found = resolve_function(f"{module}:{command}", folder, forget=forget)
    if not isinstance(found, click.Command):
        raise TypeError(f"{module}.{command} is a {type(found).__name__}, not a click command")
    return found


@register
class ClickExecutor(Executor):
    """Runs a click command of the DAG's code (see the module docstring)."""

    type_name = "click"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Resolves ``module``/``command`` in ``ctx.expdir`` and checks that every other key is
        one of the command's parameters (a plain YAML value).

        Raises:
            DagError: ``module`` or ``command`` missing or not resolvable, the attribute not a
                click command, a key that names no parameter, a value that is not plain YAML.
        """
        names = {key: spec.get(key) for key in ("module", "command")}
        for key, what in (("module", "a module name"), ("command", "a click command name")):
            if not (isinstance(names[key], str) and names[key].strip()):
                raise ctx.error(key, f"got {names[key]!r}; allowed: {what}")
        try:
            command = _command(names["module"], names["command"], ctx.expdir, forget=True)
        except (ValueError, ImportError, AttributeError, TypeError) as e:
            raise ctx.error("command", f"{names['module']}:{names['command']} cannot be resolved from "
                                       f"{ctx.expdir}: {e}") from None
        params = {key: value for key, value in spec.items() if key not in names}
        allowed = [param.name for param in command.params]
        for key in params:
            if key not in allowed:
                raise ctx.error(key, f"not a parameter of the click command {names['command']!r}; "
                                     f"its parameters: {', '.join(allowed) or 'none'}")
        try:
            json.dumps(params)
        except TypeError as e:
            raise ctx.error(None, f"the command's parameters must be plain YAML values: {e}") from None
        return {**names, "params": params}

    def run(self, task: TaskContext) -> dict | None:
        """Runs the command in the child (working folder: the task's code copy) with no
        arguments and the task's parameters as its defaults.

        Raises:
            ExecutorError: click rejects a parameter value (a usage error) or the command aborts.
        """
        config = task.config
        command = _command(config["module"], config["command"], task.code_dir)
        module = sys.modules[config["module"]]
        if getattr(module, "tqdm", None) is not None:
            module.tqdm = functools.partial(ReportingTqdm, reporter=task.reporter)
        try:
            result = command.main(args=[], prog_name=config["command"], standalone_mode=False,
                                  default_map=config["params"])
        except click.ClickException as e:
            raise ExecutorError(f"click command {config['command']!r}: {e.format_message()}") from None
        except click.Abort:
            raise ExecutorError(f"click command {config['command']!r} aborted") from None
        return result if isinstance(result, dict) else None
