"""One task's child process: its own process group, its output pumped line by line into a
:class:`~mlcomp.worker.report.Reporter`, signals sent to the whole group.

Process-group handling follows rq's ``kill_horse``/luigi's worker: the child is started with
``start_new_session=True`` so its pid is also the group id, and every signal goes to the group,
which reaches grandchildren that a shell or a data loader started. When the child exits while
members of its group still hold its pipes, the group is killed: a task's tree ends with the task.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
from typing import Callable

from mlcomp.worker.report import Reporter

__all__ = ["TaskProcess", "LineSplitter", "describe_exit", "signal_group"]

READ_SIZE = 65536


def describe_exit(returncode: int) -> str:
    """``"exit code 3"`` or ``"killed by SIGKILL"`` for a ``Popen.returncode``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def signal_group(pgid: int, sig: int) -> bool:
    """Sends ``sig`` to process group ``pgid``; False when the group is already gone ("already
    dead" is not an error)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class TaskProcess:
    """Starts ``argv`` in a new session and pumps its stdout/stderr lines into ``reporter`` on a
    thread; when both pipes close, reaps the child and calls ``on_exit(self, returncode)`` on that
    thread.

    Args:
        argv: the command (``["bash", "-c", cmd]`` or ``[python, "-m", "mlcomp.worker.child"]``).
        cwd: working directory (the task's code copy).
        env: the complete environment of the child.
        reporter: receives each line with stream ``stdout``/``stderr``; flushed every
            ``reporter.flush_every`` seconds and when the child ends.
        on_exit: called once with the returncode after the last line was flushed.

    Raises:
        OSError: the command cannot be started (missing executable, bad cwd).
    """

    def __init__(self, argv: list[str], cwd, env: dict[str, str], reporter: Reporter,
                 on_exit: Callable[["TaskProcess", int], None]):
        self.reporter = reporter
        self.on_exit = on_exit
        self.last_error_line: str | None = None
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self._thread = threading.Thread(target=self._pump, name=f"task-pid-{self.pid}", daemon=True)

    def start(self) -> "TaskProcess":
        """Starts pumping output (call once the task's status says it runs)."""
        self._thread.start()
        return self

    def signal(self, sig: int) -> bool:
        """Sends ``sig`` to the task's whole process group; False if it is gone."""
        return signal_group(self.pid, sig)

    def alive(self) -> bool:
        """Whether the child itself has not exited yet."""
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Waits for the pump thread (hence for ``on_exit``) to finish."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _pump(self) -> None:
        streams = {self.popen.stdout.fileno(): "stdout", self.popen.stderr.fileno(): "stderr"}
        splitters = {fd: LineSplitter() for fd in streams}
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select(timeout=self.reporter.flush_every):
                    data = os.read(key.fd, READ_SIZE)
                    if not data:
                        selector.unregister(key.fd)
                    for line in splitters[key.fd].feed(data) if data else splitters[key.fd].close():
                        self._emit(streams[key.fd], line)
                self.reporter.maybe_flush()
                if selector.get_map() and self.popen.poll() is not None:
                    self.signal(signal.SIGKILL)  # the child is gone; its stragglers hold the pipes
        self.popen.stdout.close()
        self.popen.stderr.close()
        returncode = self.popen.wait()
        self.reporter.flush()
        self.on_exit(self, returncode)

    def _emit(self, stream: str, text: str) -> None:
        if stream == "stderr" and text.strip():
            self.last_error_line = text.strip()
        self.reporter.log(text, stream=stream)


class LineSplitter:
    """Cuts a byte stream into text lines the way a terminal shows them: a carriage return
    rewinds the line (a progress bar's updates collapse to its last state), a line longer than
    ``max_bytes`` is cut, bytes that are not UTF-8 are replaced."""

    def __init__(self, max_bytes: int = 16 * READ_SIZE):
        self.max_bytes = max_bytes
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by ``data``."""
        lines = (self._partial + data).split(b"\n")
        self._partial = _rewind(lines.pop())
        if len(self._partial) > self.max_bytes:
            lines.append(self._partial)
            self._partial = b""
        return [_text(line) for line in lines]

    def close(self) -> list[str]:
        """The last, unterminated line, if any."""
        rest, self._partial = self._partial, b""
        return [_text(rest)] if rest else []


def _rewind(raw: bytes) -> bytes:
    """What follows the last carriage return that has text after it (a trailing one is kept, so
    the next bytes overwrite the line)."""
    return raw[raw.rstrip(b"\r").rfind(b"\r") + 1:]


def _text(raw: bytes) -> str:
    return _rewind(raw).rstrip(b"\r").decode("utf-8", errors="replace")
