"""The ``bash`` task type: one shell command, run directly by the worker (``["bash", "-c", cmd]``,
no Python process in between).

```yaml
executors:
  sweep:
    type: bash
    command: python fit.py --lr $lr --depth ${depth}
    grid:
      - lr: [0.1, 0.01]
      - depth: [2, 3]
```

Grid values replace ``$name`` and ``${name}`` at submission, shell-quoted (``shlex.quote``), so
the stored command is exactly what runs. Other references are left to bash: upper-case names
(environment variables: ``$HOME``, ``$CUDA_VISIBLE_DEVICES``), names the command assigns itself
(``x=1``, ``for i in …``, ``read line``), names of the task's ``env:`` and any other parameter
expansion (``${x:-1}``, ``$1``). A lower-case ``$name`` that is none of these is taken for a
misspelt grid name and rejected.
"""
from __future__ import annotations

import json
import re
import shlex
from typing import Any, Mapping

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register

__all__ = ["BashExecutor", "substitute", "references"]

_REFERENCE = re.compile(r"\\.|\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<bare>[A-Za-z_]\w*))")
_ASSIGNED = re.compile(r"(?:^|[\s;&|(])(?:(?P<assign>[A-Za-z_]\w*)\+?=|(?:for|select)\s+(?P<loop>[A-Za-z_]\w*)\s)"
                       r"|\bread\s+(?:-\w+\s+)*(?P<read>[A-Za-z_]\w*(?:\s+[A-Za-z_]\w*)*)")


def references(command: str) -> list[str]:
    """The names referenced as ``$name`` or ``${name}`` in ``command`` (escaped ``\\$`` excluded),
    in order, without repeats."""
    names = []
    for match in _REFERENCE.finditer(command):
        name = match["braced"] or match["bare"]
        if name and name not in names:
            names.append(name)
    return names


def _assigned(command: str) -> set[str]:
    names = set()
    for match in _ASSIGNED.finditer(command):
        names.update(match["assign"] and [match["assign"]] or match["loop"] and [match["loop"]]
                     or (match["read"] or "").split())
    return names


def _shell_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return shlex.quote(text)


def substitute(command: str, cell: Mapping[str, Any]) -> str:
    """``command`` with each ``$name``/``${name}`` of a key of ``cell`` replaced by its value,
    shell-quoted (strings as they are, other values as JSON: ``0.1``, ``true``, ``[1, 2]``)."""

    def replace(match: re.Match) -> str:
        name = match["braced"] or match["bare"]
        if name is None or name not in cell:
            return match[0]
        return _shell_value(cell[name])

    return _REFERENCE.sub(replace, command)


@register
class BashExecutor(Executor):
    """Runs ``command`` with ``bash -c`` in the task's code folder.

    Config keys: ``command`` (a non-empty string, required). The stored config holds the
    command with the grid cell substituted.
    """

    type_name = "bash"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks ``command`` and its references and substitutes the grid cell.

        Raises:
            DagError: ``command`` is missing, not a string or blank; another key is given; a
                lower-case ``$name`` is neither a grid name nor assigned by the command.
        """
        unknown = sorted(set(spec) - {"command"})
        if unknown:
            raise ctx.error(unknown[0], "unknown key for a bash task; allowed: command")
        command = spec.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ctx.error("command", f"expected a non-empty string (the shell command), got {command!r}")
        cell = dict(ctx.grid_cell or {})
        assigned = _assigned(command)
        for name in references(command):
            if name not in cell and name.islower() and name not in assigned and name not in ctx.env:
                grid = ", ".join(sorted(map(str, cell))) or "none"
                raise ctx.error("command", f"${name} is not a grid name (grid names: {grid}), not in the "
                                f"task's env and not assigned by the command; other environment variables "
                                f"are upper-case")
        return {"command": substitute(command, cell)}

    @classmethod
    def command(cls, task: TaskContext) -> list[str]:
        """``["bash", "-c", command]``."""
        return ["bash", "-c", task.config["command"]]
