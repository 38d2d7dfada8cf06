"""One task's child process and the files that outlive its worker.

A task's child never depends on its worker: it runs in its own session (its pid is also its
process-group id, so every signal reaches the grandchildren a shell or a data loader started),
its stdout and stderr go to files in the attempt's folder, and a small POSIX shell recorder around
the command writes the pid and, before exiting, the exit status there (:class:`AttemptFiles`). A
worker that is killed leaves the child running; the worker that starts next follows the same
files from the offsets stored with the log lines, and learns the true outcome of a child that
ended unwatched from its exit record, as a Slurm or Nomad agent does after a restart.

One thread, the :class:`Pump`, watches every task of a worker: it waits on each child's pidfd
(Linux; elsewhere it polls), reads new output into the task's
:class:`~mlcomp.worker.report.Reporter` at most every ``flush_every`` seconds, and handles each
exit on its own thread.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import select
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from mlcomp.worker import disk
from mlcomp.worker.reason import ReasonLine
from mlcomp.db.outage import transient
from mlcomp.worker.report import RETRY_EVERY, Reporter

__all__ = ["ATTEMPTS", "AttemptFiles", "TaskProcess", "Pump", "PUMP", "LineSplitter", "describe_exit", "signal_group",
           "RECORDER", "ensure_folder", "command_through_file"]

log = logging.getLogger(__name__)

READ_SIZE = 65536
STREAMS = ("stdout", "stderr")
ATTEMPTS = "attempts"
"""The folder of a task's attempts, inside its task folder."""

RECORDER = ('trap : TERM; d=$1; shift; echo $$ 1<> "$d/pid"; "$@" & c=$!; '
            'while wait $c; rc=$?; [ $rc -gt 128 ] && kill -0 $c 2>/dev/null; do :; done; '
            'echo $rc 1<> "$d/exit"; exit $rc')
"""The recorder each child runs in: ``/bin/sh -c RECORDER mlcomp-task FOLDER ARGV…``. It writes
its pid to ``FOLDER/pid``, runs ARGV in the background and waits for it (a SIGTERM to the group
reaches ARGV and only interrupts the wait), then writes ARGV's exit status (128 + N for signal N)
to ``FOLDER/exit`` and exits with it. Running ARGV in the background keeps the shell from printing
"Terminated" into the task's log. Both records are written over the :data:`PLACEHOLDER` that
:meth:`TaskProcess.spawn` put there (``1<>`` opens without truncating), so they need no new disk
block: a task that filled its file system still leaves its exit status. Only POSIX shell is used,
so the system's smallest shell runs it (dash starts in half of bash's CPU time: about 2 ms less
per task on a busy 2-core machine)."""

PLACEHOLDER = b" " * 15 + b"\n"
"""What the ``pid`` and ``exit`` records hold until the recorder writes over their start: room
for any pid or status and its newline (the readers take the first line; a blank one is none)."""

WATCHER_SIZE = 64
"""Bytes of a ``watcher`` record (its text padded with spaces), so each one replaces the last in
place."""

SHELL = "/bin/sh"
"""The recorder's shell (POSIX requires it at this path)."""


def describe_exit(returncode: int | None) -> str:
    """``"exit code 3"``, ``"killed by SIGKILL"`` (a negative ``Popen.returncode``) or ``"no exit
    record"`` (None: the process ended while no worker watched and left no status)."""
    if returncode is None:
        return "no exit record"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def from_shell_status(status: int) -> int:
    """A shell's exit status as a ``Popen.returncode``: 128 + N for a valid signal N becomes -N."""
    if status > 128 and status - 128 in signal.valid_signals():
        return 128 - status
    return status


def signal_group(pgid: int, sig: int) -> bool:
    """Sends ``sig`` to process group ``pgid``; False when the group is already gone ("already
    dead" is not an error)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class AttemptFiles:
    """The files of one attempt of a task: ``tasks_dir/TASK/attempts/N/`` holding ``stdout``,
    ``stderr``, ``pid`` (written by the recorder when it starts), ``exit`` (its exit status,
    written before it exits) and ``watcher`` (the worker process following it)."""

    folder: Path

    @classmethod
    def of(cls, tasks_dir, task_id: int, attempt: int) -> "AttemptFiles":
        """The files of attempt ``attempt`` (from 1) of task ``task_id``."""
        return cls(Path(tasks_dir) / str(task_id) / ATTEMPTS / str(attempt))

    def path(self, name: str) -> Path:
        """``stdout``, ``stderr``, ``pid`` or ``exit``."""
        return self.folder / name

    def _number(self, name: str) -> int | None:
        try:
            text = self.path(name).read_text()
        except FileNotFoundError:
            return None
        line, newline, _ = text.partition("\n")  # the record, then what is left of the placeholder
        return int(line) if newline and line.strip().lstrip("-").isdigit() else None

    def prepare(self) -> None:
        """Writes the :data:`PLACEHOLDER` of the ``pid`` and ``exit`` records and this process's
        ``watcher`` record before the child starts, so that every later record of the attempt is
        written over bytes the file system already holds, even once it is full.

        Raises:
            OSError: a file cannot be written (ENOSPC: the file system is full already).
        """
        for name in ("pid", "exit"):
            self.path(name).write_bytes(PLACEHOLDER)
        _overwrite(self.path("watcher"), _me().encode().ljust(WATCHER_SIZE))

    def exit_status(self) -> int | None:
        """The recorded exit as a ``Popen.returncode`` (negative for a signal), or None when the
        recorder wrote none (it runs still, or it was killed)."""
        status = self._number("exit")
        return None if status is None else from_shell_status(status)

    def recorded_pid(self) -> int | None:
        """The pid the recorder wrote, whether or not it still runs."""
        return self._number("pid")

    def live_pid(self) -> int | None:
        """The recorder's pid if that process still runs (its creation time matches the pid
        file's, so a reused pid is never taken for it), else None."""
        pid = self.recorded_pid()
        if pid is None:
            return None
        try:
            process = psutil.Process(pid)
            same = abs(process.create_time() - self.path("pid").stat().st_mtime) < 5.0
            return pid if same and process.status() != psutil.STATUS_ZOMBIE else None
        except (psutil.Error, OSError):
            return None

    def started(self) -> bool:
        """Whether a recorder ever started for this attempt (it wrote its pid)."""
        return self.recorded_pid() is not None

    def watch(self) -> bool:
        """Records that this process follows the attempt (``watcher``: pid and creation time,
        written over the last record in place). Returns False, with a warning logged, when it
        cannot be written (a full disk where no record was prepared): the attempt is followed all
        the same, only a second worker of this computer could then follow it too."""
        try:
            _overwrite(self.path("watcher"), _me().encode().ljust(WATCHER_SIZE))
        except OSError as e:
            log.warning("cannot record the watcher of %s: %s", self.folder, e)
            return False
        return True

    def watched_elsewhere(self) -> bool:
        """Whether another live process (a second worker of the same computer) follows it."""
        try:
            pid, created = self.path("watcher").read_text().split()
            return int(pid) != os.getpid() and psutil.Process(int(pid)).create_time() == float(created)
        except (OSError, ValueError, psutil.Error):
            return False


OnExit = Callable[[list[tuple["TaskProcess", "int | None"]]], None]
"""What a :class:`TaskProcess` calls when it ended: with the ``(process, returncode)`` pairs of
the processes of that callback that ended together."""


class TaskProcess:
    """A task's child, started by :meth:`spawn` or adopted by :meth:`adopt`; its output files are
    followed into ``reporter`` by the :class:`Pump` once :meth:`start` is called, and
    ``on_exit`` runs on the pump's thread after its last line is flushed.

    Args:
        pid: the recorder's pid (also its process-group id).
        files: the attempt's files.
        reporter: receives each line (stream ``stdout``/``stderr``) with the file offsets read.
        on_exit: called once with ``[(process, returncode), ...]``: this process and the others
            with the same callback that the pump saw end in the same round (tasks started
            together end together), each with its ``Popen.returncode``-style exit (None when
            the process ended with no exit record), so their ends can be recorded in one
            transaction; keep it short: other tasks' output waits meanwhile.
        popen: the Popen of a child this process started (it is reaped here), None if adopted.
        offsets: bytes of each stream already in the log (an adopted child's stored offsets).
        gone: the process ended before it was adopted (``pid`` may belong to another process
            by now: it is never signalled or waited on).
        pump: the pump that follows it (default: this process's :data:`PUMP`).
    """

    def __init__(self, pid: int, files: AttemptFiles, reporter: Reporter,
                 on_exit: "OnExit", *, popen: subprocess.Popen | None = None,
                 offsets: dict | None = None, gone: bool = False, pump: "Pump | None" = None):
        self.pid = pid
        self.gone = gone
        self.files = files
        self.reporter = reporter
        self.on_exit = on_exit
        self.popen = popen
        self.pump = pump or PUMP
        self.reason = ReasonLine()  # the failure reason among the stderr lines read
        self.offsets = {s: int((offsets or {}).get(s, 0)) for s in STREAMS}  # where unread lines start
        self.positions = dict(self.offsets)  # bytes read from each file
        self.splitters = {s: LineSplitter() for s in STREAMS}
        self.exit_fd = _ended_fd() if gone else _pidfd(pid)
        self.done = threading.Event()
        self.started = False
        self.no_space: str | None = None  # set by conclude() when a failed child's file system is full

    @classmethod
    def spawn(cls, argv: list[str], cwd, env: dict[str, str], files: AttemptFiles, reporter: Reporter,
              on_exit: "OnExit", pump: "Pump | None" = None) -> "TaskProcess":
        """Starts ``argv`` under the :data:`RECORDER` in a new session, its output into ``files``.

        Raises:
            OSError: the command cannot be started (bad cwd, the folder cannot be written).
        """
        disk.restore_reserves()  # one released on a full disk, once there is room again
        ensure_folder(files.folder.parent)
        try:
            files.folder.mkdir()
        except FileExistsError:  # started before (a gang's part whose start was not committed)
            pass
        files.prepare()  # the records the recorder writes over (an earlier start's are replaced)
        argv = command_through_file(argv, files.folder)
        with open(files.path("stdout"), "wb") as out, open(files.path("stderr"), "wb") as err:
            popen = subprocess.Popen([SHELL, "-c", RECORDER, "mlcomp-task", str(files.folder), *argv],
                                     cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     start_new_session=True)
        return cls(popen.pid, files, reporter, on_exit, popen=popen, pump=pump)

    @classmethod
    def adopt(cls, files: AttemptFiles, reporter: Reporter, on_exit: "OnExit",
              offsets: dict | None, pump: "Pump | None" = None) -> "TaskProcess":
        """Follows the child another worker started for this attempt, from ``offsets``. When it
        has ended already its exit is handled as soon as :meth:`start` is called, after the rest
        of its output is read."""
        pid = files.live_pid()
        gone = pid is None
        return cls(files.recorded_pid() if gone else pid, files, reporter, on_exit, offsets=offsets, gone=gone,
                   pump=pump)

    def start(self) -> "TaskProcess":
        """Starts following (call once the task's status says it runs)."""
        self.started = True
        self.pump.add(self)
        return self

    def signal(self, sig: int) -> bool:
        """Sends ``sig`` to the task's whole process group; False if it is gone."""
        return not self.gone and signal_group(self.pid, sig)

    def alive(self) -> bool:
        """Whether the recorder has not exited yet."""
        if self.gone:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        if self.exit_fd is not None:
            return not select.select([self.exit_fd], [], [], 0)[0]
        return self.files.live_pid() == self.pid

    def join(self, timeout: float | None = None) -> None:
        """Waits until ``on_exit`` has run (at most ``timeout`` seconds); returns at once for a
        process never started."""
        if self.started:
            self.done.wait(timeout)

    def read(self, final: bool = False) -> None:
        """Reads what the output files gained and reports their complete lines (``final``: the
        unterminated last lines too) with the offsets to follow them from after a restart: the
        start of the first line not complete yet, so nothing is lost and nothing repeated."""
        lines = []
        for stream in STREAMS:
            splitter = self.splitters[stream]
            try:
                with open(self.files.path(stream), "rb") as file:
                    file.seek(self.positions[stream])
                    while data := file.read(READ_SIZE):
                        lines += [(stream, line) for line in splitter.feed(data)]
                        self._advance(stream, data)
            except FileNotFoundError:
                pass
            if final:
                lines += [(stream, line) for line in splitter.close()]
                self.offsets[stream] = self.positions[stream]
        for stream, line in lines:
            if stream == "stderr":
                self.reason.feed(line)
        if lines:  # nothing new: the stored offsets stand (an ended task's are never read again)
            self.reporter.output(lines, dict(self.offsets))

    def _advance(self, stream: str, data: bytes) -> None:
        start = self.positions[stream]
        self.positions[stream] += len(data)
        if not self.splitters[stream].pending:
            self.offsets[stream] = self.positions[stream]
        elif (newline := data.rfind(b"\n")) >= 0:
            self.offsets[stream] = start + newline + 1

    def conclude(self) -> int | None:
        """After the recorder exited: reads the rest of the output, kills what is left of its
        group, reaps it (a child of ours) or reads its exit record, and notes a full file system
        under a failed child's files (:attr:`no_space`, :func:`mlcomp.worker.disk.no_space`);
        returns the exit for ``on_exit``, which the pump calls after :meth:`flushed`. A failure
        to read the output is logged, not raised: the end is recorded all the same."""
        try:
            self.read(final=True)
        except Exception:
            log.exception("task pid %s: its last output could not be read", self.pid)
        self.signal(signal.SIGKILL)  # stragglers: a task's tree ends with the task
        if self.popen is not None:
            returncode = from_shell_status(self.popen.wait())
        else:
            returncode = self.files.exit_status()
        if self.exit_fd is not None:
            os.close(self.exit_fd)
        if returncode != 0:
            self.no_space = disk.no_space(self.files.folder)
        return returncode

    def flushed(self) -> bool:
        """Writes the lines read and not stored yet; False when the store is unreachable. Any
        other failure is logged, not raised: the end is recorded all the same."""
        try:
            return self.reporter.flush()
        except Exception:
            log.exception("task pid %s: its last output could not be stored", self.pid)
            return True


ARG_LIMIT = 64 * 1024
"""Bytes of a ``bash -c`` command above which it is run from a file (:func:`command_through_file`):
Linux refuses one argument of 128 KiB or more (``MAX_ARG_STRLEN``) with "Argument list too long"."""
COMMAND_FILE = "command.sh"
"""The file in the attempt's folder that holds a long ``bash -c`` command."""


def command_through_file(argv: list[str], folder: Path) -> list[str]:
    """``argv`` as it is, or for ``["bash", "-c", COMMAND]`` whose COMMAND is longer than
    :data:`ARG_LIMIT` bytes, ``["bash", FOLDER/command.sh]`` with COMMAND written to that file, so
    a command of any length starts (bash reads a script file as it reads ``-c``'s string).

    Raises:
        OSError: the file cannot be written in ``folder``.
    """
    if len(argv) != 3 or argv[1] != "-c" or Path(argv[0]).name != "bash" or len(argv[2]) <= ARG_LIMIT // 4:
        return argv
    command = os.fsencode(argv[2])
    if len(command) <= ARG_LIMIT:
        return argv
    path = folder / COMMAND_FILE
    path.write_bytes(command)
    return [argv[0], str(path)]


def ensure_folder(path: Path) -> None:
    """Creates folder ``path`` (and its parents) if missing, with one system call when it or its
    parent exists: a launch makes a dozen file-system calls, and on some file systems each costs
    half a millisecond."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)


def _overwrite(path: Path, data: bytes) -> None:
    """Writes ``data`` at the start of file ``path`` (created if missing) without truncating it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@functools.cache
def _me() -> str:
    """This process as a watcher record: ``"PID CREATION_TIME\\n"``."""
    me = psutil.Process()
    return f"{me.pid} {me.create_time()}\n"


def _pidfd(pid: int) -> int | None:
    """A pidfd of ``pid`` (readable once it exits), or None where pidfds do not exist (the pump
    then polls); a pid already gone gets an always-readable descriptor."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return _ended_fd()


def _ended_fd() -> int:
    """The read end of a closed pipe: always readable, as the pidfd of an ended process."""
    read, write = os.pipe()
    os.close(write)
    return read


class Pump:
    """One thread that watches every running :class:`TaskProcess` of this process: it waits on
    their pidfds with a selector (the event loop of asyncio's pidfd child watcher, without
    asyncio), follows their output files every ``flush_every`` seconds, and handles each exit on
    its own thread, so a task's end is recorded (and the next task started) without a thread
    hand-off. The thread starts with the first process and ends when none is left.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._processes: set[TaskProcess] = set()
        self._unrecorded: dict[Callable, list] = {}  # ends whose recording waits for the store
        self._retry_at = 0.0  # when to record them again (monotonic seconds)
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    def add(self, process: TaskProcess) -> None:
        """Starts watching ``process`` (from any thread)."""
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
            if process.exit_fd is not None:
                self._selector.register(process.exit_fd, selectors.EVENT_READ, process)
            self._processes.add(process)
            if threading.current_thread() is not self._thread:
                self._wake()

    def _wake(self) -> None:
        """Interrupts the selector's wait so it sees a newly added process."""
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # wake-ups are already waiting to be read
            pass

    def _run(self, selector: selectors.BaseSelector) -> None:
        while True:
            with self._lock:
                if not self._processes and not self._unrecorded:
                    self._close(selector)
                    return
                timeout = min([p.reporter.flush_every for p in self._processes] + [RETRY_EVERY] * bool(self._unrecorded))
                processes = list(self._processes)
            ended = {p for p in processes if p.exit_fd is None and not p.alive()}
            for key, _ in selector.select(timeout):
                if key.data is None:
                    os.read(key.fd, 4096)  # a wake-up: a process was added
                else:
                    ended.add(key.data)
            with self._lock:
                processes = list(self._processes)
                for process in ended & self._processes:
                    self._processes.discard(process)
                    if process.exit_fd is not None:
                        selector.unregister(process.exit_fd)
            for process in processes:
                if process not in ended:
                    try:
                        if not process.reporter.outage.down:  # else the lines wait in the files
                            process.read()
                        process.reporter.maybe_flush()
                    except Exception:  # one task's reports must not stop the others
                        log.exception("task pid %s: output handling failed", process.pid)
            self._finish([p for p in processes if p in ended])

    def _finish(self, ended: list[TaskProcess]) -> None:
        """Concludes the ended processes, then records their exits: calls each ``on_exit`` once
        with the exits of its processes. Exits the store cannot take now (it is unreachable:
        :mod:`mlcomp.db.outage`) are recorded again every :data:`RETRY_EVERY` seconds until it
        can, lines first."""
        if not ended and time.monotonic() < self._retry_at:
            return
        exits, self._unrecorded = self._unrecorded, {}
        for process in ended:
            try:
                exits.setdefault(process.on_exit, []).append((process, process.conclude()))
            except Exception:  # one task's exit handling must not stop the others
                log.exception("task pid %s: exit handling failed", process.pid)
                process.done.set()
        for on_exit, ends in exits.items():
            if not self._record(on_exit, ends):
                self._unrecorded[on_exit] = ends
                self._retry_at = time.monotonic() + RETRY_EVERY

    @staticmethod
    def _record(on_exit: "OnExit", ends: list) -> bool:
        """Writes the last lines of ``ends``' processes and calls ``on_exit``; False when the
        store was unreachable (nothing recorded: tried again later)."""
        try:
            if not all([process.flushed() for process, _ in ends]):
                return False
            on_exit(ends)
        except Exception as e:
            if transient(e):
                return False
            log.exception("task pids %s: exit handling failed", [process.pid for process, _ in ends])
        for process, _ in ends:
            process.done.set()
        return True

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

    @property
    def pending(self) -> int:
        """Bytes of the unterminated line held back."""
        return len(self._partial)

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
