"""The one line of a task's stderr that says why it failed.

A failed task's status line is "exit code 1: <reason>". The last line a process wrote to stderr
is often not the reason: a library warning (a URL, a deprecation note) or a shutdown message can
follow the traceback. :class:`ReasonLine` follows the stderr lines as they are read and prefers,
in this order, the exception line that ends the last Python traceback (the first line after
``Traceback (most recent call last):`` that is not indented: ``ValueError: bad lr``), or a line a
task's child wrote as its one-line user error (``mlcomp: …``), over the last non-empty line.
"""
from __future__ import annotations

__all__ = ["ReasonLine", "TRACEBACK_START", "USER_ERROR_PREFIX"]

TRACEBACK_START = "Traceback (most recent call last):"
"""The line Python prints before a traceback's frames (chained exceptions print it again)."""

USER_ERROR_PREFIX = "mlcomp: "
"""How a task's child (``mlcomp/worker/child.py``) prints a user error, on one line."""


class ReasonLine:
    """Follows a task's stderr line by line (call :meth:`feed` with each line, in order) and gives
    the best one-line failure reason seen so far as :attr:`value` (None before any non-empty line).
    """

    def __init__(self):
        self.value: str | None = None
        self._in_traceback = False
        self._found = False  # an exception or user-error line was seen

    def feed(self, line: str) -> None:
        """Takes the next stderr line (with or without its newline)."""
        text = line.rstrip()
        if not text.strip():
            return
        if text.startswith(TRACEBACK_START):
            self._in_traceback = True
        elif self._in_traceback and not text[0].isspace():
            self._in_traceback = False  # the exception line; later lines are not frames
            self._take(text.strip())
        elif text.startswith(USER_ERROR_PREFIX):
            self._take(text.strip())
        elif not self._found:
            self.value = text.strip()

    def _take(self, text: str) -> None:
        self._found = True
        self.value = text
