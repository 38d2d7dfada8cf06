"""Resource history: raw samples per heartbeat (computer, GPUs with their holder, task process
trees) written in the heartbeat's transaction, the roll-up into 60 s and 600 s levels, retention,
and the SQL-bucketed reads."""
import os
import contextlib
import subprocess
import sys

import pytest
from sqlalchemy import event, func, select, text, update

from mlcomp.db import Computer, ResourceSample, TaskStatus, utcnow
from mlcomp.worker import resources
from mlcomp.worker.resources import RETENTION, ResourceRecorder, compact, resource_history
from supervisor_helpers import add_computer, add_task, make_dag

NOW = 1_800_000_000  # Unix seconds, a multiple of 600


def _usage(cpu=25.0, gpus=(), **extra):
    return {"cpu": cpu, "memory": 1.0, "memory_bytes": 1e9, "gpus": list(gpus), **extra}


def _beat(store, recorder, usage, computer="box"):
    """What the worker's heartbeat does: ONE transaction writing the samples and the computer row."""
    with store.begin() as session:
        recorder.write(session, usage)
        session.execute(update(Computer).where(Computer.name == computer).values(heartbeat=utcnow(), usage=usage))


@contextlib.contextmanager
def _statements(store):
    """Collects the SQL statements and the transactions begun on ``store``'s engine meanwhile."""
    engine, seen = store.kw["bind"], {"sql": [], "begin": 0}

    def statement(conn, cursor, sql, *args):
        seen["sql"].append(" ".join(sql.split()))

    def begin(conn):
        seen["begin"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "begin", begin)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "begin", begin)


@pytest.fixture
def busy(store):
    """A computer with 2 GPUs and a running task holding GPU 1, its pid a real child process."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with store.begin() as session:
        add_computer(session, "box", gpus=2)
        task = add_task(session, make_dag(session), "train", status=TaskStatus.in_progress, computer="box",
                        gpus=[1], pid=child.pid)
        task_id = task.id
    yield task_id
    child.kill()
    child.wait()


def _rows(store, **where):
    with store() as session:
        query = select(ResourceSample).filter_by(**where).order_by(ResourceSample.gpu, ResourceSample.task_id)
        return [(r.task_id, r.gpu, r.utilization, r.memory) for r in session.scalars(query)]


def test_a_beat_samples_the_computer_its_gpus_and_each_running_task(store, busy):
    recorder = ResourceRecorder("box", [{"index": 0}, {"index": 1}], clock=lambda: NOW)
    gpus = [{"index": 0, "utilization": 10, "memory_used": 1 << 30}, {"index": 1, "utilization": 90,
                                                                         "memory_used": 3 << 30}]
    _beat(store, recorder, _usage(gpus=gpus, tasks=1))
    rows = _rows(store, resolution=0)
    assert rows[:2] == [(None, None, 25.0, 1e9), (busy, None, 0.0, rows[1][3])]  # psutil's first reading is 0 %
    assert rows[1][3] > 1e6  # the sleeping child's RSS, in bytes
    assert rows[2:] == [(None, 0, 10.0, float(1 << 30)), (busy, 1, 90.0, float(3 << 30))]  # GPU 1 held by the task


def test_a_task_whose_process_is_gone_gets_no_process_sample(store, busy):
    with store.begin() as session:
        add_task(session, make_dag(session, "other"), "ghost", status=TaskStatus.in_progress, computer="box",
                 pid=2 ** 22 + 7)
    _beat(store, ResourceRecorder("box", [], clock=lambda: NOW), _usage())  # no "tasks": looked up
    assert [row[0] for row in _rows(store, resolution=0)] == [None, busy]


def test_an_idle_computer_reads_no_tasks_and_writes_no_task_samples(store, busy):
    recorder = ResourceRecorder("box", [{"index": 0}, {"index": 1}], clock=lambda: NOW)
    gpus = [{"index": 1, "utilization": 0, "memory_used": 0}]
    recorder._compacted = NOW  # compaction not due
    with _statements(store) as seen:
        _beat(store, recorder, _usage(gpus=gpus, tasks=0))  # the worker runs nothing (its task's pid aside)
    assert _rows(store, resolution=0) == [(None, None, 25.0, 1e9), (None, 1, 0.0, 0.0)]
    assert not [sql for sql in seen["sql"] if " FROM task" in sql]
    assert seen["begin"] == 1


def test_a_beat_with_its_samples_and_roll_up_is_one_transaction(any_store):
    store = any_store
    with store.begin() as session:
        add_computer(session, "box")
    _fill(store, NOW - 1200, NOW)  # twenty minutes of raw samples to roll up
    recorder = ResourceRecorder("box", [], clock=lambda: NOW)
    with _statements(store) as seen:
        _beat(store, recorder, _usage(tasks=0))
    assert seen["begin"] == 1  # samples, roll-up, retention and the computer row
    assert len(_rows(store, resolution=60)) == 2 * 20 and len(_rows(store, resolution=600)) == 2 * 2  # CPU, GPU 0
    with store() as session:
        assert session.get(Computer, "box").usage["tasks"] == 0


def test_a_failed_sample_write_is_undone_and_the_beat_still_commits(any_store, monkeypatch):
    store = any_store
    with store.begin() as session:
        add_computer(session, "box")

    def broken(session, *args):
        session.execute(text("SELECT * FROM no_such_table"))  # an SQL error: on PostgreSQL it aborts a transaction

    monkeypatch.setattr(resources, "compact", broken)
    _beat(store, ResourceRecorder("box", [], clock=lambda: NOW), _usage(cpu=42.0, tasks=0))
    assert _rows(store) == []  # the raw sample written before the roll-up failed is undone too
    with store() as session:
        assert session.get(Computer, "box").usage["cpu"] == 42.0


def test_a_recorder_skips_the_levels_without_a_new_complete_bucket(any_store):
    store = any_store
    _fill(store, NOW - 1200, NOW + 60)
    rolled = {}
    with store.begin() as session:
        compact(session, "box", NOW, rolled)
    with _statements(store) as seen, store.begin() as session:
        compact(session, "box", NOW + 60, rolled)  # a new minute, the same ten minutes
    queries = [sql.split()[0] for sql in seen["sql"] if sql.split()[0] in ("SELECT", "INSERT", "DELETE")]
    assert queries == ["SELECT", "SELECT", "INSERT"]  # the 60 s level only, no retention deletes
    assert len(_rows(store, resolution=60)) == 2 * 21 and len(_rows(store, resolution=600)) == 2 * 2


def _fill(store, start, end, every=5, gpus=1):
    """Raw samples of box from ``start`` to ``end`` (exclusive): CPU % = the minute of the hour."""
    with store.begin() as session:
        session.execute(ResourceSample.__table__.insert(), [
            {"computer": "box", "gpu": gpu, "resolution": 0, "time": t, "utilization": float(t // 60 % 60),
             "memory": 100.0 * (gpu or 0)}
            for t in range(start, end, every) for gpu in (None, *range(gpus))])


def test_compaction_averages_complete_buckets_once_and_applies_retention(any_store):
    store = any_store
    _fill(store, NOW - 2 * RETENTION[0], NOW + 30)  # two days of raw samples, the last minute incomplete
    with store.begin() as session:
        compact(session, "box", NOW + 30)
    with store.begin() as session:
        compact(session, "box", NOW + 45)  # nothing new is complete: nothing is added twice
    with store() as session:
        count = lambda level: session.scalar(select(func.count()).where(ResourceSample.resolution == level))
        oldest_raw = session.scalar(select(func.min(ResourceSample.time)).where(ResourceSample.resolution == 0))
        minute = session.execute(select(ResourceSample.utilization, ResourceSample.memory).where(
            ResourceSample.resolution == 60, ResourceSample.gpu == 0, ResourceSample.time == NOW - 120)).one()
        assert oldest_raw >= NOW + 30 - RETENTION[0]
        assert count(60) == 2 * (2 * RETENTION[0] // 60)  # every complete minute, CPU and GPU 0
        assert count(600) == 2 * (2 * RETENTION[0] // 600)
        assert minute == (float((NOW - 120) // 60 % 60), 0.0)


def test_history_reads_the_finest_level_holding_the_window_in_sql_buckets(any_store):
    store = any_store
    _fill(store, NOW - 3600, NOW, gpus=2)
    with store.begin() as session:
        compact(session, "box", NOW)
        read = lambda window, points: resource_history(session, computer="box", start=NOW - window, end=NOW,
                                                       now=NOW, max_points=points)
        raw, hour, coarse, week = read(300, 100), read(3600, 100), read(3600, 30), read(7 * 86400, 500)
    assert [s["source"] for s in hour] == ["cpu", "gpu0", "gpu1"]
    assert (raw[0]["resolution"], len(raw[0]["x"])) == (3, 60)  # raw samples, one per bucket
    assert (hour[0]["resolution"], len(hour[0]["x"])) == (60, 60)  # the 60 s level
    assert hour[0]["utilization"][:2] == [float((NOW - 3600) // 60 % 60), float((NOW - 3540) // 60 % 60)]
    assert (coarse[0]["resolution"], len(coarse[0]["x"])) == (600, 6)  # the 600 s level
    assert coarse[0]["utilization"][0] == pytest.approx(sum((NOW - 3600) // 60 % 60 + m for m in range(10)) / 10)
    assert week[0]["resolution"] == 1210 and len(week[0]["x"]) == 3  # six 600 s rows in 1210 s buckets
    assert hour[2]["memory"][0] == 100.0


def test_history_of_a_task_and_bad_scope(store, busy):
    _beat(store, ResourceRecorder("box", [{"index": 1}], clock=lambda: NOW),
          _usage(gpus=[{"index": 1, "utilization": 50, "memory_used": 7}], tasks=1))
    with store() as session:
        series = resource_history(session, task_id=busy, start=NOW - 60, end=NOW, now=NOW)
        assert [(s["source"], s["task_id"]) for s in series] == [("task", [None]), ("gpu1", [busy])]
        with pytest.raises(ValueError, match="exactly one of computer and task_id"):
            resource_history(session, start=0, end=1, now=1)


def test_descendants_are_the_process_tree_psutil_finds():
    import subprocess
    import time

    import psutil

    from mlcomp.worker.resources import descendants

    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sh -c 'sleep 30' & wait"], start_new_session=True)
    try:
        root = psutil.Process(shell.pid)
        deadline = time.monotonic() + 10
        while len(root.children(recursive=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = {p.pid for p in [root, *root.children(recursive=True)]}
        assert len(expected) == 4 and {p.pid for p in descendants(root)} == expected
    finally:
        os.killpg(shell.pid, 9)
        shell.wait()
