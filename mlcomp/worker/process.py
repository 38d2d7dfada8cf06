"""One task's child process: its own process group, its output pumped line by line into a
:class:`~mlcomp.worker.report.Reporter` by one selector thread shared by all tasks
(:class:`Pump`), signals sent to the whole group.

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
import logging
from typing import Callable

from mlcomp.worker.report import Reporter

__all__ = ["TaskProcess", "Pump", "PUMP", "LineSplitter", "describe_exit", "signal_group"]

log = logging.getLogger(__name__)

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
    """Starts ``argv`` in a new session; its stdout/stderr lines go to ``reporter``, read by the
    :class:`Pump` thread shared by all task processes; when both pipes close, the pump reaps the
    child and calls ``on_exit(self, returncode)`` on its thread.

    Args:
        argv: the command (``["bash", "-c", cmd]`` or ``[python, "-m", "mlcomp.worker.child"]``).
        cwd: working directory (the task's code copy).
        env: the complete environment of the child.
        reporter: receives each line with stream ``stdout``/``stderr``; flushed every
            ``reporter.flush_every`` seconds and when the child ends.
        on_exit: called once with the returncode after the last line was flushed. It runs on
            the pump's thread, so other tasks' output waits while it runs: keep it short.
        pump: the pump that reads the pipes (default: this process's :data:`PUMP`).

    Raises:
        OSError: the command cannot be started (missing executable, bad cwd).
    """

    def __init__(self, argv: list[str], cwd, env: dict[str, str], reporter: Reporter,
                 on_exit: Callable[["TaskProcess", int], None], pump: "Pump | None" = None):
        self.reporter = reporter
        self.on_exit = on_exit
        self.pump = pump or PUMP
        self.last_error_line: str | None = None
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.streams = {self.popen.stdout.fileno(): "stdout", self.popen.stderr.fileno(): "stderr"}
        self.splitters = {fd: LineSplitter() for fd in self.streams}
        self.done = threading.Event()
        self.started = False

    def start(self) -> "TaskProcess":
        """Starts pumping output (call once the task's status says it runs)."""
        self.started = True
        self.pump.add(self)
        return self

    def signal(self, sig: int) -> bool:
        """Sends ``sig`` to the task's whole process group; False if it is gone."""
        return signal_group(self.pid, sig)

    def alive(self) -> bool:
        """Whether the child itself has not exited yet."""
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Waits until ``on_exit`` has run (at most ``timeout`` seconds); returns at once for a
        process never started."""
        if self.started:  # the pump leaves its table before on_exit ends: wait for done itself
            self.done.wait(timeout)

    def read(self, fd: int) -> bool:
        """Reads what ``fd`` holds and emits its complete lines; False at end of file."""
        data = os.read(fd, READ_SIZE)
        lines = self.splitters[fd].feed(data) if data else self.splitters[fd].close()
        for line in lines:
            self._emit(self.streams[fd], line)
        return bool(data)

    def finish(self) -> None:
        """After both pipes closed: reaps the child, flushes the reporter, calls ``on_exit``."""
        self.popen.stdout.close()
        self.popen.stderr.close()
        returncode = self.popen.wait()
        try:
            self.reporter.flush()
            self.on_exit(self, returncode)
        finally:
            self.done.set()

    def _emit(self, stream: str, text: str) -> None:
        if stream == "stderr" and text.strip():
            self.last_error_line = text.strip()
        self.reporter.log(text, stream=stream)


class Pump:
    """One thread that reads the pipes of every running :class:`TaskProcess` with a selector
    (the event loop of asyncio's child watchers, without asyncio), instead of a thread per task:
    starting a task costs no thread start, and a task's exit is handled on the thread that saw
    it. The thread starts with the first process and ends when none is left.

    When a child has exited but members of its group still hold its pipes, the group is killed,
    so a task's tree ends with the task.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._processes: dict[int, TaskProcess] = {}  # by pid
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    def add(self, process: TaskProcess) -> None:
        """Starts reading ``process``'s pipes (from any thread)."""
        with self._lock:
            if self._thread is None:
                self._selector = selectors.DefaultSelector()
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
                self._selector.register(self._wake_r, selectors.EVENT_READ)
                self._thread = threading.Thread(target=self._run, args=(self._selector,),
                                                name="mlcomp-task-pump", daemon=True)
                self._thread.start()
            for fd in process.streams:
                self._selector.register(fd, selectors.EVENT_READ, process)
            self._processes[process.pid] = process
            if threading.current_thread() is not self._thread:
                self._wake()

    def _wake(self) -> None:
        """Interrupts the selector's wait so it sees newly registered pipes."""
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # wake-ups are already waiting to be read
            pass

    def _run(self, selector: selectors.BaseSelector) -> None:
        while True:
            with self._lock:
                if not self._processes:
                    self._close(selector)
                    return
                timeout = min(p.reporter.flush_every for p in self._processes.values())
            for key, _ in selector.select(timeout):
                if key.data is None:
                    os.read(key.fd, 4096)  # a wake-up: new pipes are registered
                elif not self._read(key.data, key.fd):
                    with self._lock:
                        selector.unregister(key.fd)
            with self._lock:
                processes = list(self._processes.values())
            for process in processes:
                try:
                    self._tend(selector, process)
                except Exception:  # one task's reports or exit handling must not stop the others
                    log.exception("task pid %s: exit handling failed", process.pid)

    @staticmethod
    def _read(process: TaskProcess, fd: int) -> bool:
        """``process.read(fd)``; a failure is logged so the pump goes on for every task: a pipe
        that cannot be read counts as closed, a report that cannot be written (the store
        unreachable for a flush) keeps the pipe."""
        try:
            return process.read(fd)
        except Exception as e:
            log.exception("task pid %s: reading or reporting its output failed", process.pid)
            return not isinstance(e, OSError)

    def _tend(self, selector: selectors.BaseSelector, process: TaskProcess) -> None:
        """Flushes ``process``'s reports when due; finishes it once both pipes closed; kills its
        group when the child is gone but stragglers hold the pipes."""
        with self._lock:
            open_fds = [fd for fd in process.streams if fd in selector.get_map()]
        if open_fds:
            process.reporter.maybe_flush()
            if process.popen.poll() is not None:
                process.signal(signal.SIGKILL)
            return
        with self._lock:
            del self._processes[process.pid]
        process.finish()

    def _close(self, selector: selectors.BaseSelector) -> None:
        selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._thread = self._selector = None


PUMP = Pump()
"""The pump of this process's task processes."""


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
