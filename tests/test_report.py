"""The Reporter: batched writes of logs, metrics, progress and checkpoints."""
from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from mlcomp.db import Checkpoint, Dag, LogLine, Metric, Project, SnapshotBlob, Task
from mlcomp.worker import Reporter
from mlcomp.worker.carry import fetch


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def task_id(store):
    with store.begin() as session:
        task = Task(dag=Dag(name="d", project=Project(name="p"), config=""), name="t", type="python")
        session.add(task)
        session.flush()
        return task.id


@pytest.fixture
def commits(store):
    """Counts the transactions committed through ``store``."""
    count = []
    engine = store.kw["bind"]
    listener = lambda conn: count.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    yield count
    event.remove(engine, "commit", listener)


def count(store, model, task_id):
    with store() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.task_id == task_id))


def test_nothing_is_written_until_the_interval_passes(store, task_id, commits):
    clock = FakeClock()
    reporter = Reporter(store, task_id, attempt=2, flush_every=1.0, clock=clock)
    for i in range(5):
        reporter.log(f"line {i}")
    reporter.metric("loss", 0.5, loader="train", stage="s1", epoch=1, step=1)
    assert count(store, LogLine, task_id) == 0 and not commits
    assert reporter.pending() == 6
    clock.now = 1.5
    assert reporter.maybe_flush() is True
    assert len(commits) == 1
    with store() as session:
        lines = session.scalars(select(LogLine).where(LogLine.task_id == task_id).order_by(LogLine.id)).all()
        assert [line.text for line in lines] == [f"line {i}" for i in range(5)]
        assert {(line.attempt, line.stream, line.level) for line in lines} == {(2, "system", "info")}
        metric = session.scalars(select(Metric)).one()
        assert (metric.name, metric.value, metric.loader, metric.stage, metric.epoch, metric.step, metric.kind,
                metric.attempt) == ("loss", 0.5, "train", "s1", 1, 1, "epoch", 2)
    assert reporter.maybe_flush() is False  # nothing waits


def test_a_full_buffer_flushes_at_once_in_few_transactions(store, task_id, commits):
    reporter = Reporter(store, task_id, flush_every=3600, max_items=100, clock=FakeClock())
    for step in range(1000):
        reporter.metric("loss", 1.0 / (step + 1), step=step, kind="batch")
    assert count(store, Metric, task_id) == 1000
    assert len(commits) == 10
    reporter.close()
    assert len(commits) == 10  # nothing left to write


def test_progress_keeps_the_latest_and_checkpoints_are_recorded(store, task_id):
    reporter = Reporter(store, task_id, flush_every=3600, clock=FakeClock())
    reporter.progress({"epoch": 1, "epochs": 3})
    reporter.progress({"epoch": 2, "epochs": 3})
    reporter.checkpoint("logdir/checkpoints/best.pth", stage="s1", epoch=2, metric=0.25, size=1234)
    reporter.flush()
    with store() as session:
        assert session.get(Task, task_id).progress == {"epoch": 2, "epochs": 3}
        row = session.scalars(select(Checkpoint)).one()
        assert (row.path, row.stage, row.epoch, row.metric, row.size) == (
            "logdir/checkpoints/best.pth", "s1", 2, 0.25, 1234)


def test_background_thread_flushes_and_close_writes_the_rest(store, task_id):
    with Reporter(store, task_id, flush_every=0.01) as reporter:
        reporter.log("early", level="warning", stream="stdout")
        reporter._stop.wait(0.2)  # let the thread run a few rounds
        assert count(store, LogLine, task_id) == 1
        reporter.log("late", level="error")
    assert count(store, LogLine, task_id) == 2


def test_from_env_reads_the_task_and_attempt(store, task_id):
    reporter = Reporter.from_env(store, {"MLCOMP_TASK_ID": str(task_id), "MLCOMP_ATTEMPT": "3"})
    assert (reporter.task_id, reporter.attempt) == (task_id, 3)
    with pytest.raises(KeyError):
        Reporter.from_env(store, {})


def test_bad_level_is_a_bug(store, task_id):
    with pytest.raises(ValueError, match="log level"):
        Reporter(store, task_id).log("x", level="loud")


def test_carried_checkpoints_keep_only_the_latest_content_of_each_path(store, task_id, tmp_path):
    checkpoints = tmp_path / "logdir/checkpoints"
    checkpoints.mkdir(parents=True)
    reporter = Reporter(store, task_id, flush_every=3600, clock=FakeClock(), carry_from=tmp_path)
    for epoch in (1, 2, 3):
        for name in ("last_full.pth", "best_full.pth", "best.pth"):
            kept = epoch if name == "last_full.pth" else min(epoch, 2)  # the best stays at epoch 2
            (checkpoints / name).write_bytes(f"{name} {kept}".encode())
            reporter.checkpoint(f"logdir/checkpoints/{name}", epoch=epoch)
        for name in ("last.pth", f"s1.{epoch}_full.pth"):  # not read by a later attempt: not carried
            (checkpoints / name).write_bytes(b"x")
            reporter.checkpoint(f"logdir/checkpoints/{name}", epoch=epoch)
        reporter.flush()
    with store() as session:
        stored = set(session.scalars(select(SnapshotBlob.content)))
        named = session.scalars(select(Checkpoint.sha256).where(Checkpoint.sha256.is_not(None))).all()
        assert stored == {b"last_full.pth 3", b"best_full.pth 2", b"best.pth 2"}
        assert len(named) == 5  # the best ones at epochs 2 and 3 (the same content)
        elsewhere = tmp_path / "other"
        assert fetch(session, task_id, elsewhere) == ["logdir/checkpoints/best.pth",
                                                       "logdir/checkpoints/best_full.pth",
                                                       "logdir/checkpoints/last_full.pth"]
    assert (elsewhere / "logdir/checkpoints/last_full.pth").read_bytes() == b"last_full.pth 3"
