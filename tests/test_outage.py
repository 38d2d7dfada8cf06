"""The store and the broker may go away (issue: faults of the real parts lose nothing).

A private PostgreSQL cluster is stopped for three heartbeat TTLs under a printing task and a
training task on an ``mlcomp worker`` process: both end in success, with every line and metric row
once, the computer is never taken for dead, and the UI answers 503 meanwhile. A private Redis restarted under a worker that
reads the store only once an hour: the worker hears the next hand-over within seconds, and the one
published while Redis was away is covered by the "read the store" after the reconnect. The
reporter's journal is checked on its own: reports wait in it while the store is away and reach the
store exactly once, whoever replays them."""
import datetime as dt
import json
import sys
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from mlcomp.bus import Bus, computer_channel
from mlcomp.db import LogLine, Metric, ReportJournal, Task, TaskStatus
from mlcomp.db.outage import Outage, retrying, transient
from mlcomp.lifecycle import set_task_status
from mlcomp.worker import Worker
from mlcomp.worker.report import Reporter, replay
from ml_helpers import write_expdir
from services import PrivatePostgres, PrivateRedis
from supervisor_helpers import add_computer, add_task, make_dag, wait_for, wait_status

LINES = 300


@pytest.mark.slow
def test_a_printing_and_a_training_task_ride_out_postgresql_away_for_three_heartbeat_ttls(tmp_path):
    from cluster import Cluster

    dag = write_expdir(tmp_path / "exp", f"""\
        info: {{name: outage, project: faults, expdir: .}}
        executors:
          printer: {{type: bash, command: [{sys.executable}, -c, "import time\\nfor i in range({LINES}):\\n print(i, flush=True); time.sleep(0.05)"]}}
          train: {{type: train, config: [configs/train.yml, configs/slow.yml]}}
        """, seconds=0.25)
    with PrivatePostgres() as pg:
        cluster = Cluster(tmp_path / "computers", pg.url, None, heartbeat_ttl=4.0)
        try:
            name = cluster.add("a", gpus="0,1")
            with cluster.store.begin() as session:
                from mlcomp import control
                (row,) = control.submit_dag(session, cluster.settings, dag)
                ids = {t.name: t.id for t in row.tasks}
            cluster.supervise()

            def count(model, task_id):
                with cluster.store() as session:
                    return session.scalar(select(func.count()).select_from(model).where(model.task_id == task_id))
            wait_for(lambda: count(LogLine, ids["printer"]) >= 20 and count(Metric, ids["train"]) >= 5, timeout=60)
            from ui import create_app
            client = create_app(cluster.settings, {"TESTING": True}).test_client()
            pg.stop()
            away = client.get("/api/dags")  # the UI says so, and when to try again
            assert away.status_code == 503 and away.headers["Retry-After"] == "5", away.data
            assert "database is unreachable" in away.get_json()["error"]["message"]
            time.sleep(3 * cluster.settings.heartbeat_ttl)
            pg.start()
            printer = wait_status(cluster.store, ids["printer"], TaskStatus.success, TaskStatus.failed, timeout=120)
            train = wait_status(cluster.store, ids["train"], TaskStatus.success, TaskStatus.failed, timeout=120)
            assert (printer.status, train.status) == (TaskStatus.success, TaskStatus.success), (printer.reason,
                                                                                                train.reason)
            with cluster.store() as session:
                lines = list(session.scalars(select(LogLine.text).where(LogLine.task_id == ids["printer"])
                                             .order_by(LogLine.id)))
                metrics = session.execute(select(Metric.name, Metric.loader, Metric.stage, Metric.epoch, Metric.step,
                                                 Metric.kind).where(Metric.task_id == ids["train"])).all()
            assert lines == [str(i) for i in range(LINES)]
            assert len(metrics) == len(set(metrics))  # none twice
            epochs = {(stage, epoch) for name_, loader, stage, epoch, _, kind in metrics
                      if (name_, loader, kind) == ("loss", "valid", "epoch")}
            assert epochs == {("one", 1), ("one", 2), ("two", 3), ("two", 4)}  # none lost
            assert train.result and train.result["last_metrics"]
            log = (cluster.root(name) / "worker.log").read_text()
            assert log.count("the database is unreachable since") == 1, log
        finally:
            cluster.close()


@pytest.mark.redis
def test_a_worker_hears_hand_overs_again_within_seconds_after_redis_restarts(settings, store):
    import dataclasses

    with PrivateRedis() as redis:
        settings = dataclasses.replace(settings, broker_url=redis.url)
        sender = Bus(settings.db_url, redis.url)
        worker = Worker(settings, store, name="far", gpus=[0, 1], poll=3600, bus=Bus(settings.db_url, redis.url))

        def place(name: str) -> int:
            with store.begin() as session:
                task = add_task(session, make_dag(session, name), "t", executor_config={"command": "true"})
                task.computer, task.gpus = "far", [0]
                set_task_status(session, task, TaskStatus.queued, "placed on far")
                return task.id
        worker.start()
        try:
            time.sleep(0.3)  # after the monitor's first read at start
            first = place("before")
            wait_for(lambda: sender.publish(computer_channel("far"), [first]) or
                     wait_status(store, first, TaskStatus.success, timeout=1))
            redis.stop()
            lost = place("during")
            sender.publish(computer_channel("far"), [lost])  # nobody hears it
            time.sleep(1.5)
            redis.start()
            # the reconnected listener says "read the store": the lost hand-over starts, not an hour later
            assert wait_status(store, lost, TaskStatus.success, timeout=15).status is TaskStatus.success
            after = place("after")
            sender.publish(computer_channel("far"), [after])
            assert wait_status(store, after, TaskStatus.success, timeout=10).status is TaskStatus.success
        finally:
            worker.shutdown()


class Away:
    """A sessionmaker whose store is unreachable while ``away`` is set."""

    def __init__(self, store):
        self.store, self.away = store, False

    def begin(self):
        if self.away:
            raise OperationalError("connect", {}, ConnectionRefusedError("connection refused"))
        return self.store.begin()


def test_reports_wait_in_the_journal_while_the_store_is_away_and_reach_it_exactly_once(store, tmp_path):
    with store.begin() as session:
        task_id = add_task(session, make_dag(session), "t").id
    journal = tmp_path / "reports"
    maker = Away(store)
    reporter = Reporter(maker, task_id, journal=journal, computer="c", flush_every=3600)
    maker.away = True
    reporter.log("one")
    reporter.metric("loss", 0.5, loader="train", epoch=1, step=1)
    reporter.progress({"epoch": 1})
    assert reporter.flush() is False and reporter.outage.down and reporter.pending() == 3
    maker.away = False
    reporter.log("two")
    assert reporter.flush() is True and not reporter.outage.down and reporter.pending() == 0
    reporter.result({"score": 1.0})
    reporter.close()
    with store.begin() as session:  # the worker's replay after the child's end finds nothing new
        assert replay(session, journal, task_id, 1, "c") == 0
    with open(journal, "a") as file:  # a line the child appended but could not replay: the worker does
        file.write(json.dumps({"entry": "log", "level": "info", "stream": "system",
                               "time": "2026-01-01T00:00:00+00:00", "text": "three"}) + "\n")
        file.write('{"entry": "log", "text": "cut by a full di')  # no newline: not complete, left
    with store.begin() as session:
        assert replay(session, journal, task_id, 1, "c") == 1
    with store.begin() as session:
        assert replay(session, journal, task_id, 1, "c") == 0
        task = session.get(Task, task_id)
        assert list(session.scalars(select(LogLine.text).where(LogLine.task_id == task_id).order_by(LogLine.id))) \
            == ["one", "two", "three"]
        assert session.scalar(select(func.count()).select_from(Metric).where(Metric.task_id == task_id)) == 1
        assert (task.progress, task.result) == ({"epoch": 1}, {"score": 1.0})
        assert session.get(ReportJournal, (task_id, 1, "c")).replayed < journal.stat().st_size


def test_a_reporter_without_journal_puts_its_rows_back_when_the_store_is_away(store):
    with store.begin() as session:
        task_id = add_task(session, make_dag(session), "t").id
    maker = Away(store)
    reporter = Reporter(maker, task_id, flush_every=3600)
    maker.away = True
    reporter.output([("stdout", "a"), ("stdout", "b")], {"stdout": 4, "stderr": 0})
    assert reporter.flush() is False and reporter.pending() == 3  # two lines and the offsets
    maker.away = False
    reporter.output([("stdout", "c")], {"stdout": 6, "stderr": 0})
    assert reporter.flush() is True
    with store() as session:
        assert list(session.scalars(select(LogLine.text).where(LogLine.task_id == task_id).order_by(LogLine.id))) \
            == ["a", "b", "c"]


def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends(caplog):
    outage = Outage("worker w", clock=iter([100.0, 130.5]).__next__)
    error = OperationalError("connect", {}, ConnectionRefusedError("connection refused\nsecond line"))
    assert transient(error) and not transient(ValueError("a bug"))
    with caplog.at_level("WARNING"):
        assert outage.failed(error) and outage.failed(error) and not outage.failed(ValueError("a bug"))
        outage.ok()
        outage.ok()
    assert [r.getMessage() for r in caplog.records] == [
        "worker w: the database is unreachable since 1970-01-01 00:01:40 UTC (connection refused), retrying",
        "worker w: the database is reachable again after 30.5 s"]
    assert outage.last == (100.0, 130.5)
    tries = iter([error, error, 7])

    def work():
        value = next(tries)
        if isinstance(value, Exception):
            raise value
        return value
    assert retrying(work, Outage("x"), sleep=lambda _: None) == 7
    with pytest.raises(ValueError):
        retrying(lambda: int("x"), Outage("x"), sleep=lambda _: None)


def test_silence_counts_only_while_the_store_could_take_heartbeats(store, settings):
    from mlcomp.supervisor.supervisor import alive_computers

    beat = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    with store.begin() as session:
        add_computer(session, "a", heartbeat=beat)
    ttl = dt.timedelta(seconds=settings.heartbeat_ttl)
    outage = (beat + dt.timedelta(seconds=1), beat + 4 * ttl)  # nobody could beat meanwhile

    def alive(now, outage=outage):
        with store() as session:
            return [c.name for c in alive_computers(session, settings, now, outage=outage)]
    assert alive(beat + 4 * ttl, outage=None) == []  # without the outage: silent for 4 TTLs
    assert alive(beat + 4 * ttl) == ["a"]  # the store just came back: alive when it went
    assert alive(beat + 5 * ttl - dt.timedelta(seconds=1)) == ["a"]
    assert alive(beat + 5 * ttl + dt.timedelta(seconds=1)) == []  # no beat within a TTL of its return
    late = (beat + 2 * ttl, beat + 4 * ttl)  # the store went when "a" was silent already
    assert alive(beat + 4 * ttl, outage=late) == []
