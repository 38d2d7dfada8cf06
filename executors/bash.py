"""The ``bash`` task type: one shell command, run directly by the worker (``["bash", "-c", cmd]``,
no Python process in between), or one program without a shell (the list form).

```yaml
executors:
  sweep:
    type: bash
    command: python fit.py --lr $lr --depth ${depth}
    grid:
      - lr: [0.1, 0.01]
      - depth: [2, 3]
  export:
    type: bash
    command: [python, export.py, --out, "models/net v2.pt"]   # no shell: run as this argv
```

Grid values replace ``$name`` and ``${name}`` at submission, shell-quoted (``shlex.quote``), so
the stored command is exactly what runs. Other references are left to bash: upper-case names
(environment variables: ``$HOME``, ``$CUDA_VISIBLE_DEVICES``), names the command assigns itself
(``x=1``, ``for i in …``, ``read line``), names of the task's ``env:`` and any other parameter
expansion (``${x:-1}``, ``$1``). A lower-case ``$name`` that is none of these is taken for a
misspelt grid name and rejected.

A list of strings is the *exec form* (a Dockerfile's ``CMD ["python", "fit.py"]``, a Kubernetes
container's ``command:``): the program runs as that argv with no shell, so no quoting, globbing or
expansion happens and no bash process starts (1.5 ms less per task on a 2-core machine). Grid
values replace ``$name`` and ``${name}`` inside its items as plain text; any other ``$name`` is
rejected, since no shell would expand it.
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


def _text(value: Any) -> str:
    """A grid value as text: strings as they are, other values as JSON (``0.1``, ``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value)


def substitute(command: str, cell: Mapping[str, Any]) -> str:
    """``command`` with each ``$name``/``${name}`` of a key of ``cell`` replaced by its value,
    shell-quoted (strings as they are, other values as JSON: ``0.1``, ``true``, ``[1, 2]``)."""

    def replace(match: re.Match) -> str:
        name = match["braced"] or match["bare"]
        if name is None or name not in cell:
            return match[0]
        return shlex.quote(_text(cell[name]))

    return _REFERENCE.sub(replace, command)


@register
class BashExecutor(Executor):
    """Runs ``command`` with ``bash -c`` in the task's code folder, or a list ``command`` as the
    argv itself (the exec form, no shell).

    Config keys: ``command`` (a non-empty string, or a non-empty list of strings; required). The
    stored config holds the command with the grid cell substituted.
    """

    type_name = "bash"

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks ``command`` and its references and substitutes the grid cell.

        Raises:
            DagError: ``command`` is missing, blank or neither a string nor a list of strings;
                another key is given; a lower-case ``$name`` of the string form is neither a grid
                name nor assigned by the command; a ``$name`` of the list form is not a grid name.
        """
        unknown = sorted(set(spec) - {"command"})
        if unknown:
            raise ctx.error(unknown[0], "unknown key for a bash task; allowed: command")
        command = spec.get("command")
        if isinstance(command, list):
            return {"command": _exec_form(command, ctx)}
        if not isinstance(command, str) or not command.strip():
            raise ctx.error("command", f"expected a non-empty string (the shell command) or a list of strings "
                            f"(a program and its arguments, run without a shell), got {command!r}")
        cell = dict(ctx.grid_cell or {})
        assigned = _assigned(command)
        for name in references(command):
            if name not in cell and name.islower() and name not in assigned and name not in ctx.env:
                raise ctx.error("command", f"${name} is not a grid name (grid names: {_names(cell)}), not in the "
                                f"task's env and not assigned by the command; other environment variables "
                                f"are upper-case")
        return {"command": substitute(command, cell)}

    @classmethod
    def command(cls, task: TaskContext) -> list[str]:
        """``["bash", "-c", command]``, or the list form's argv as it is."""
        command = task.config["command"]
        return list(command) if isinstance(command, list) else ["bash", "-c", command]


def _exec_form(argv: list, ctx: SubmitContext) -> list[str]:
    """The list form's argv with the grid cell's values in place of ``$name``/``${name}``.

    Raises:
        DagError: the list is empty, an item is not a string, the program is blank, or an item
            references a name that is not a grid name.
    """
    if not argv or not all(isinstance(item, str) for item in argv) or not argv[0].strip():
        raise ctx.error("command", f"expected a non-empty list of strings (a program and its arguments), "
                        f"got {argv!r}")
    cell = dict(ctx.grid_cell or {})
    for index, item in enumerate(argv):
        for name in references(item):
            if name not in cell:
                raise ctx.error(("command", index), f"${name} is not a grid name (grid names: {_names(cell)}); "
                                f"the list form runs without a shell, which would expand other names: "
                                f"write the command as a string")
    return [_REFERENCE.sub(lambda m: _plain_value(cell, m), item) for item in argv]


def _names(cell: Mapping[str, Any]) -> str:
    return ", ".join(sorted(map(str, cell))) or "none"


def _plain_value(cell: Mapping[str, Any], match: re.Match) -> str:
    name = match["braced"] or match["bare"]
    return match[0] if name is None else _text(cell[name])
