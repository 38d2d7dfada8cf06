"""Resource history: what a computer, its GPUs and each running task use, sampled with every
worker heartbeat into ``resource_sample`` and rolled up for retention.

Each beat writes raw samples (``resolution`` 0) in the heartbeat's own transaction (one
transaction a beat): the computer's CPU % and RAM used, each GPU's utilization and memory used
(NVML, through :func:`mlcomp.worker.gpus.gpu_usage`) with the task holding it, and each running
task's process tree (CPU % summed over the processes, RSS in bytes, by psutil); an idle computer
writes only its own and its GPUs' rows, without looking its tasks up. Retention is round-robin in
the manner of RRDtool's consolidation (T. Oetiker): once a minute the worker averages its complete
buckets into 60 s samples and, every ten minutes, those into 600 s ones, in SQL (``INSERT …
SELECT … GROUP BY``), and every ten minutes deletes the samples older than their level's
:data:`RETENTION`. A reader (:func:`resource_history`) picks the finest level that holds the
window in at most ``max_points`` buckets and averages its rows per bucket in SQL, so a week of
5 s samples of 8 GPUs is drawn from about a thousand 600 s rows per series.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time as _time

import psutil
from sqlalchemy import delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from mlcomp import gang
from mlcomp.db import ResourceSample, Task, TaskStatus
from mlcomp.worker.gpus import gpu_usage

__all__ = ["LEVELS", "RETENTION", "ResourceRecorder", "compact", "resource_history"]

log = logging.getLogger(__name__)

LEVELS = (0, 60, 600)
"""The resolutions stored, in seconds (0: raw samples, one per heartbeat)."""
RETENTION = {0: 86_400, 60: 14 * 86_400, 600: 366 * 86_400}
"""Seconds each level is kept."""
COMPACT_EVERY = 60.0
"""Seconds between two roll-ups by a worker."""


class ResourceRecorder:
    """Samples one computer and writes the samples; kept by the worker between heartbeats (psutil
    measures CPU % since the previous call on the same process object).

    Args:
        computer: the computer's name.
        gpus: its detected GPUs, ``[{"index", "name", "memory"}]``.
        clock: Unix seconds (``time.time``).
    """

    def __init__(self, computer: str, gpus: list[dict], clock=_time.time):
        self.computer = computer
        self.gpus = gpus
        self.clock = clock
        self._processes: dict[int, psutil.Process] = {}
        self._compacted = 0.0
        self._rolled: dict[int, int] = {}  # level → the bucket boundary this recorder last rolled up to

    def usage(self) -> dict:
        """The computer's current use: ``{"cpu": percent, "memory": GB used, "memory_bytes",
        "gpus": [{"index", "utilization" (percent), "memory_used" (bytes)}]}``."""
        memory = psutil.virtual_memory().used
        return {"cpu": psutil.cpu_percent(), "memory": round(memory / 1e9, 2), "memory_bytes": memory,
                "gpus": gpu_usage(self.gpus)}

    def write(self, session: Session, usage: dict) -> None:
        """Writes ``usage`` (:meth:`usage`) and the running tasks' process use as raw samples in
        the caller's transaction (the heartbeat's, so that a beat is one transaction), and rolls
        up in it once every :data:`COMPACT_EVERY` seconds (:func:`compact`).

        With ``usage["tasks"] == 0`` (the count of tasks running here, as the heartbeat adds it)
        the computer is idle: its tasks are not looked up and no task sample is written, only the
        computer's and its GPUs'. The rows go through a savepoint: a failure is logged and undone,
        never raised, so the heartbeat written in the same transaction still commits (on
        PostgreSQL an error would otherwise abort the whole transaction).
        """
        now = int(self.clock())
        try:
            with session.begin_nested():
                self._write(session, usage, now)
        except Exception:
            log.exception("computer %s: writing resource samples failed", self.computer)

    def _write(self, session: Session, usage: dict, now: int) -> None:
        rows, holders, seen = [], {}, {}
        if usage.get("tasks") != 0:  # None: not told, look
            tasks = session.execute(select(Task.id, Task.pid, Task.computer, Task.gpus, Task.placement).where(
                or_(Task.computer == self.computer, Task.placement.is_not(None)),
                Task.status.in_([TaskStatus.in_progress, TaskStatus.stopping])))
            for task_id, pid, computer, gpus, placement in tasks:
                part = gang.part_of(self.computer, computer, gpus, placement)  # of a gang: this computer's part
                if part is None:
                    continue
                holders.update({gpu: task_id for gpu in part.gpus})
                tree = self._process_tree(gang.part_pid(part, pid, placement), seen)
                if tree is not None:
                    rows.append({"task_id": task_id, "gpu": None, "utilization": tree[0], "memory": tree[1]})
        self._processes = seen
        rows.append({"task_id": None, "gpu": None, "utilization": usage["cpu"], "memory": usage["memory_bytes"]})
        rows += [{"task_id": holders.get(g["index"]), "gpu": g["index"], "utilization": g["utilization"],
                  "memory": g["memory_used"]} for g in usage["gpus"]]
        session.execute(insert(ResourceSample), [{"computer": self.computer, "resolution": 0, "time": now, **row}
                                                 for row in rows])
        if now - self._compacted >= COMPACT_EVERY:
            compact(session, self.computer, now, self._rolled)
            self._compacted = now

    def _process_tree(self, pid: int | None, seen: dict) -> tuple[float, int] | None:
        """CPU % (since the previous beat, 0 at the first) and RSS bytes of ``pid`` and its
        descendants (:func:`descendants`), None when it is gone; the process objects measured go
        into ``seen``."""
        try:
            procs = descendants(psutil.Process(pid)) if pid else []
        except psutil.Error:
            return None
        if not procs:
            return None
        cpu, rss = 0.0, 0
        for proc in procs:
            known = self._processes.get(proc.pid)
            proc = known if known is not None and known.is_running() else proc  # is_running: same process
            try:
                cpu += proc.cpu_percent()
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
            seen[proc.pid] = proc
        return cpu, rss


def descendants(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and its descendants. On Linux each process's children are read from
    ``/proc/PID/task/TID/children`` (a few small files per task), since psutil's
    ``Process.children`` reads the whole process table on every call, which on a machine running
    hundreds of tasks cost a worker most of its CPU; elsewhere psutil's.

    Raises:
        psutil.NoSuchProcess: ``root`` is gone.
    """
    if not os.path.exists(f"/proc/{root.pid}/task"):
        return [root, *root.children(recursive=True)]
    found, pending = [root], [root.pid]
    while pending:
        pid = pending.pop()
        for tid in _listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as file:
                    children = [int(child) for child in file.read().split()]
            except OSError:  # the thread or process ended meanwhile
                continue
            for child in children:
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(child))
                    pending.append(child)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def compact(session: Session, computer: str, now: int, rolled: dict[int, int] | None = None) -> None:
    """Rolls ``computer``'s samples up one level at a time (raw → 60 s → 600 s): each complete
    bucket after the level's latest is averaged in SQL; then each level's rows older than its
    :data:`RETENTION` are deleted.

    Args:
        now: Unix seconds.
        rolled: the caller's memory between calls (a dict it keeps, updated here): a level whose
            bucket boundary (``now`` rounded down to the level) has not moved since the last call
            has no new complete bucket and is skipped without a query, and the retention deletes
            run only when the 600 s boundary moved (rows outlive their retention by at most
            10 minutes). A rolled-back call only delays the next roll-up: what is rolled up is
            read from the stored rows. None: every level, every time.
    """
    rs = ResourceSample
    moved = {}
    for level in LEVELS[1:]:
        boundary = now // level * level
        moved[level] = rolled is None or rolled.get(level) != boundary
        if rolled is not None:
            rolled[level] = boundary
    for source, level in zip(LEVELS, LEVELS[1:]):
        if not moved[level]:
            continue
        mine = (rs.computer == computer, rs.resolution == source)
        last = session.scalar(select(func.max(rs.time)).where(rs.computer == computer, rs.resolution == level))
        first = session.scalar(select(func.min(rs.time)).where(*mine))
        if first is None:
            continue
        start = last + level if last is not None else first // level * level
        end = now // level * level  # complete buckets only
        if end <= start:
            continue
        bucket = (rs.time // level * level).label("bucket")
        rows = (select(literal(computer), rs.task_id, rs.gpu, literal(level), bucket,
                       func.avg(rs.utilization), func.avg(rs.memory))
                .where(*mine, rs.time >= start, rs.time < end).group_by(rs.task_id, rs.gpu, bucket))
        session.execute(insert(rs).from_select(
            ["computer", "task_id", "gpu", "resolution", "time", "utilization", "memory"], rows))
    if not moved[LEVELS[-1]]:
        return
    for level in LEVELS:
        session.execute(delete(rs).where(rs.computer == computer, rs.resolution == level,
                                         rs.time < now - RETENTION[level]))


def _level(start: int, end: int, max_points: int, now: int) -> int:
    """The finest level holding ``[start, end]`` (retention) in at most ``max_points`` buckets
    of its size (raw samples count as 5 s)."""
    for level in LEVELS:
        if start >= now - RETENTION[level] and (end - start) / max(level, 5) <= max_points:
            return level
    return LEVELS[-1]


def resource_history(session: Session, *, start: int, end: int, now: int, computer: str | None = None,
                     task_id: int | None = None, max_points: int = 1000) -> list[dict]:
    """Resource series of a computer (itself and its GPUs) or of a task (its processes and the
    GPUs it held) over ``[start, end]`` Unix seconds, each at most ``max_points`` buckets
    averaged in SQL.

    Returns:
        ``[{"source": "cpu" | "gpu<i>" | "task", "gpu": i or None, "resolution": seconds,
        "x": [Unix seconds], "utilization": [percent], "memory": [bytes, rounded], "task_id": [holder or
        None]}]``: ``cpu`` the computer, ``task`` the task's process tree, ``gpu<i>`` GPU ``i``.

    Raises:
        ValueError: neither or both of ``computer`` and ``task_id`` given.
    """
    if (computer is None) == (task_id is None):
        raise ValueError("resource_history: give exactly one of computer and task_id")
    rs = ResourceSample
    level = _level(start, end, max_points, now)
    width = max(level, -(-(end - start) // max_points), 1)
    scope = ((rs.computer == computer, or_(rs.task_id.is_(None), rs.gpu.is_not(None))) if computer is not None
             else (rs.task_id == task_id,))
    bucket = (rs.time // width * width).label("bucket")
    rows = session.execute(
        select(rs.gpu, bucket, func.avg(rs.utilization), func.avg(rs.memory), func.max(rs.task_id))
        .where(*scope, rs.resolution == level, rs.time >= start // width * width, rs.time <= end)
        .group_by(rs.gpu, bucket).order_by(rs.gpu, bucket))
    series: dict = {}
    for gpu, at, utilization, memory, holder in rows:
        source = f"gpu{gpu}" if gpu is not None else ("cpu" if computer is not None else "task")
        s = series.setdefault(source, {"source": source, "gpu": gpu, "resolution": width, "x": [],
                                       "utilization": [], "memory": [], "task_id": []})
        s["x"].append(int(at))
        s["utilization"].append(None if utilization is None else round(float(utilization), 2))
        s["memory"].append(None if memory is None else round(memory))
        s["task_id"].append(holder if gpu is not None else None)
    return sorted(series.values(), key=lambda s: (s["gpu"] is not None, s["gpu"] or 0))
