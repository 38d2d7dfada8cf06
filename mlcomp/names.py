"""The rules for text that comes in as a name, query or path, and for showing names in a terminal.

* :func:`control_character` finds a control character (NUL, newline, ESC, DEL, C1): refused in
  every name, ``--set`` item and UI query, form value or URL part (PostgreSQL cannot store a NUL;
  the others break logs, tables and files);
* :func:`name_problem` says what is wrong with a project or DAG name: allowed are letters, digits,
  ``_``, ``-``, ``.`` and space, starting with a letter, digit or ``_`` and without ``..``, so a
  name is also a safe folder name (``settings.data_dir / project``);
* :func:`shown` escapes what a terminal would act on (controls, bidi overrides such as U+202E) as
  Python's ``repr`` does, for CLI tables.
"""
from __future__ import annotations

import re

__all__ = ["control_character", "name_problem", "shown", "SAFE_NAME"]

SAFE_NAME = re.compile(r"\w[\w .-]*")
"""A project or DAG name (:func:`name_problem`): a letter, digit or ``_``, then those, ``.``,
``-`` and spaces."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_character(text: str, allow: str = "") -> str | None:
    """The first control character of ``text`` (Unicode category Cc: C0, DEL, C1) not in
    ``allow`` (e.g. ``"\\t\\n\\r"`` for free text), escaped as ``repr`` writes it (``'\\x00'``,
    ``'\\n'``), or None when there is none."""
    for match in _CONTROL.finditer(text):
        if match[0] not in allow:
            return repr(match[0])
    return None


def name_problem(name: str) -> str | None:
    """What makes ``name`` unfit as a project or DAG name (a sentence saying what is allowed), or
    None when it fits :data:`SAFE_NAME` and has no ``..`` (so no ``/``, no leading dot, no
    control or bidi characters)."""
    if SAFE_NAME.fullmatch(name) and ".." not in name:
        return None
    return ("allowed: letters, digits, '_', '-', '.' and spaces, starting with a letter, digit or '_', "
            "without '..'")


def shown(text: str) -> str:
    """``text`` with each character a terminal would not print as itself (controls such as a
    newline, format characters such as U+202E RIGHT-TO-LEFT OVERRIDE, separators other than a
    space) escaped as ``repr`` does (``\\n``, ``\\u202e``); other text, non-ASCII letters included,
    unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
