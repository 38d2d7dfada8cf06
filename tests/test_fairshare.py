"""Fair share between projects, GPU quotas and priorities (mlcomp.supervisor.fairshare): the decay
formula, the placement order as a pure function, the cached usage against a fresh computation,
the queue against the order a tick takes, and `mlcomp dag priority`."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import MetaData, func, select

from mlcomp import control
from mlcomp.cli import cli
from mlcomp.db import Attempt, Dag, Preemption, Project, Task, TaskStatus, make_engine, open_store, upgrade
from mlcomp.errors import ConfigError, NotFoundError, StateError
from mlcomp.lifecycle import set_status_many, set_task_status
from mlcomp.settings import Settings
from mlcomp.supervisor import Supervisor
from mlcomp.supervisor.allocate import Free, FreePool
from mlcomp.supervisor.fairshare import FairShare, Standing, decayed, factors, plan
from mlcomp.supervisor.queue import queue
from mlcomp.supervisor.ready import classify
from mlcomp.usage import gpu_hours
from supervisor_helpers import T0, Clock, RecordingBus, add_computer, add_task

S = TaskStatus
HOUR = dt.timedelta(hours=1)
DAGS = Path(__file__).resolve().parent.parent / "dags"

Row = collections.namedtuple("Row", "id name status waiting_reason project priority created gpu_min gpu_max cpu "
                                    "memory computer_pin single_node distr")


def row(task_id: int, project: str, priority: int = 0, gpus: int | tuple[int, int] = 1) -> Row:
    low, high = gpus if isinstance(gpus, tuple) else (gpus, gpus)
    return Row(task_id, f"t{task_id}", S.not_ran, None, project, priority, T0 + dt.timedelta(seconds=task_id),
               low, high, 1, 0.0, None, True, False)


def pool(*gpus: int) -> FreePool:
    return FreePool({f"c{i}": Free(f"c{i}", list(range(n)), 64, 1e6) for i, n in enumerate(gpus)})


def placed(decisions) -> list[int]:
    return [d.row.id for d in decisions if not isinstance(d.where, str)]


def fair(tmp_path, **values) -> Settings:
    return Settings(root=tmp_path, db_url="sqlite://", **values)


IDLE = Standing({}, {})


# --- the formula -----------------------------------------------------------------------------

def test_decayed_usage_is_the_integral_of_the_halving_weight():
    h = 100.0
    # 2 GPUs from 300 s to 100 s ago: 2·100/ln2·(2^-1 - 2^-3) = 108.2021…
    assert decayed(2, T0 - dt.timedelta(seconds=300), T0 - dt.timedelta(seconds=100), T0, h) == pytest.approx(
        200 / math.log(2) * 0.375)
    assert decayed(2, T0 - dt.timedelta(seconds=300), T0 - dt.timedelta(seconds=100), T0, h) == pytest.approx(108.2021,
                                                                                                            abs=1e-4)
    # running for one half-life: 100/ln2·(1 - 1/2) = 72.13…; without decay it would be 100
    assert decayed(1, T0 - dt.timedelta(seconds=100), T0, T0, h) == pytest.approx(72.1348, abs=1e-4)
    # a midpoint sum of the weight agrees with the closed form
    start, end, n = 50.0, 400.0, 10000
    step = (end - start) / n
    riemann = 3 * sum(2 ** (-(start + (i + 0.5) * step) / h) for i in range(n)) * step
    assert decayed(3, T0 - dt.timedelta(seconds=end), T0 - dt.timedelta(seconds=start), T0, h) == pytest.approx(riemann)
    assert decayed(1, T0 + HOUR, T0 + 2 * HOUR, T0, h) == 0  # times after now count as now


def test_the_fair_share_factor_is_slurms_classic_one():
    f = factors({"a": 300.0, "b": 100.0}, {}, ["a", "b"])
    assert f == pytest.approx({"a": 2 ** -1.5, "b": 2 ** -0.5})  # U/ΣU over S/ΣS = 0.75/0.5 and 0.25/0.5
    assert factors({"a": 300.0, "b": 100.0}, {"a": 3.0}, []) == pytest.approx({"a": 0.5, "b": 0.5})  # both at share
    assert factors({}, {"x": 2.0}, ["a"]) == {"a": 1.0, "x": 1.0}  # nothing used: all 1
    assert factors({"a": 10.0}, {}, ["a", "b"])["b"] == 1.0  # a project that used nothing


# --- the order (pure) ------------------------------------------------------------------------

def test_priority_goes_before_fair_share(tmp_path):
    decisions = plan([row(1, "a"), row(2, "b", priority=5)], Standing({"b": 1e6}, {}), fair(tmp_path), pool(1))
    assert placed(decisions) == [2]
    assert decisions[0].row.id == 2 and decisions[1].where.startswith("no computer has room for 1 GPU")


def test_the_project_furthest_below_its_share_goes_first(tmp_path):
    rows = [row(1, "a"), row(2, "a"), row(3, "b")]
    assert placed(plan(rows, Standing({"a": 1000.0}, {}), fair(tmp_path), pool(1))) == [3]
    assert placed(plan(rows, Standing({"a": 1000.0, "b": 2000.0}, {}), fair(tmp_path), pool(1))) == [1]
    # a weighs 4: 200 / 4 < 100 / 1, so a is further below its share than b
    weighted = fair(tmp_path, shares={"a": 4.0})
    assert placed(plan(rows, Standing({"a": 200.0, "b": 100.0}, {}), weighted, pool(1))) == [1]
    assert placed(plan(rows, Standing({"a": 200.0, "b": 100.0}, {}), fair(tmp_path), pool(1))) == [3]


def test_a_first_wave_on_an_idle_fleet_goes_round_robin(tmp_path):
    rows = [row(i, "a") for i in range(1, 5)] + [row(i, "b") for i in range(5, 9)] + [row(9, "c")]
    assert [d.row.id for d in plan(rows, IDLE, fair(tmp_path), pool(4, 1))] == [1, 5, 9, 2, 6, 3, 4, 7, 8]
    assert placed(plan(rows, IDLE, fair(tmp_path), pool(4, 1))) == [1, 5, 9, 2, 6]
    # ties by GPUs held over share: b holds 2 already, a none and weighs 2
    held = plan(rows, Standing({}, {"b": 2}), fair(tmp_path, shares={"a": 2.0}), pool(3))
    assert placed(held) == [1, 9, 2]
    fifo = plan(rows, Standing({"b": 0.0, "a": 1e6}, {}), fair(tmp_path, scheduler="fifo"), pool(4, 1))
    assert placed(fifo) == [1, 2, 3, 4, 5]  # priority, then arrival: no fair share


def test_a_project_at_its_quota_waits_and_the_others_still_place(tmp_path):
    rows = [row(i, "a") for i in range(1, 5)] + [row(5, "b"), row(6, "b", gpus=0)]
    decisions = plan(rows, Standing({}, {"a": 1}), fair(tmp_path, gpu_quota={"a": 2}), pool(8))
    assert placed(decisions) == [5, 1, 6]
    reasons = {d.row.id: d.where for d in decisions if isinstance(d.where, str)}
    assert reasons == {i: "project 'a' holds 2 of its gpu_quota of 2 GPUs" for i in (2, 3, 4)}
    # fifo keeps quotas
    assert placed(plan(rows, IDLE, fair(tmp_path, scheduler="fifo", gpu_quota={"a": 1}), pool(8))) == [1, 5, 6]
    # a request over what is left waits with the count; a range is cut to what is left
    wide = plan([row(1, "a", gpus=2), row(2, "a", gpus=(1, 4))], Standing({}, {"a": 2}),
                fair(tmp_path, gpu_quota={"a": 3}), pool(8))
    assert wide[0].where == "project 'a' holds 2 of its gpu_quota of 3 GPUs; the task asks for 2"
    assert wide[1].where.gpus == [0] and wide[1].row.gpu_max == 4


# --- usage from the store --------------------------------------------------------------------

def project_dag(session, project: str) -> Dag:
    found = session.scalars(select(Project).where(Project.name == project)).one_or_none()
    dag = Dag(name=f"dag {project}", project=found or Project(name=project), config="")
    session.add(dag)
    session.flush()
    return dag


def ran(session, dag, start, end, gpus=(0,), status=S.success, placement=None) -> Task:
    """A task whose one attempt held ``gpus`` on computer ``a`` from ``start`` to ``end``."""
    number = session.scalar(select(func.count()).select_from(Task))
    task = add_task(session, dag, f"t{number}", status=status, computer="a", gpus=list(gpus),
                    placement=placement, started=start, finished=end)
    session.add(Attempt(task_id=task.id, number=1, status=status, computer="a", gpus=list(gpus),
                        started=start, finished=end))
    return task


def test_the_usage_is_read_only_when_it_can_change_a_decision(tmp_path, monkeypatch):
    """A tick whose ready tasks are one project's (a chain's next task) reads no usage; two
    projects at one priority, or a project with a quota, do."""
    reads = []
    monkeypatch.setattr(FairShare, "standing", lambda self, session, now: reads.append(now) or IDLE)
    one, two = [row(1, "a"), row(2, "a", priority=5)], [row(1, "a"), row(2, "b")]
    for settings, rows, read in [(fair(tmp_path), one, False), (fair(tmp_path), two, True),
                                 (fair(tmp_path, scheduler="fifo"), two, False),
                                 (fair(tmp_path, gpu_quota={"a": 2}), one, True)]:
        reads.clear()
        assert FairShare(settings).standing_for(None, rows, T0) == IDLE
        assert reads == ([T0] if read else []), (settings.scheduler, settings.gpu_quota, rows)


def test_the_cached_usage_equals_a_fresh_computation(settings, any_store):
    store = any_store
    h = settings.fairshare_half_life
    gang = {"parts": [{"computer": "a", "gpus": [0, 1], "first_rank": 0},
                      {"computer": "b", "gpus": [0], "first_rank": 2}], "world_size": 3}
    with store.begin() as session:
        add_computer(session, "a", gpus=4)
        add_computer(session, "b", gpus=4)
        a, b = project_dag(session, "a"), project_dag(session, "b")
        ran(session, a, T0 - 3 * HOUR, T0 - HOUR / 4, gpus=(0, 1))  # within LATE: read twice, counted once
        ran(session, b, T0 - 5 * HOUR, T0 - HOUR, placement=gang)  # a gang: 3 GPUs
        ran(session, b, T0 - 2 * HOUR, T0 - HOUR, status=S.paused)  # ended paused (a preemption, a rung)
        ran(session, a, T0 - HOUR, None, status=S.in_progress)  # running
        ran(session, a, T0 + HOUR, T0 + 2 * HOUR)  # ends after the first look
    cached = FairShare(settings)
    with store.begin() as session:
        first = cached.standing(session, T0)
    expected = {"a": decayed(2, T0 - 3 * HOUR, T0 - HOUR / 4, T0, h) + decayed(1, T0 - HOUR, T0, T0, h),
                "b": decayed(3, T0 - 5 * HOUR, T0 - HOUR, T0, h) + decayed(1, T0 - 2 * HOUR, T0 - HOUR, T0, h)}
    assert first.usage == pytest.approx(expected)
    assert first.held == {"a": 1}
    later = T0 + 3 * HOUR
    with store.begin() as session:  # more attempts end; the running one still runs
        ran(session, b, T0 + HOUR, T0 + 2 * HOUR, gpus=(0, 1, 2))
        ran(session, a, T0 - HOUR, T0 - HOUR / 2)  # written late: it ended before the first look
    with store.begin() as session:
        incremental = cached.standing(session, later)
        fresh = FairShare(settings).standing(session, later)
    assert incremental.usage == pytest.approx(fresh.usage, rel=1e-12)
    assert fresh.usage["a"] == pytest.approx(
        decayed(2, T0 - 3 * HOUR, T0 - HOUR / 4, later, h) + decayed(1, T0 - HOUR, later, later, h)
        + decayed(1, T0 + HOUR, T0 + 2 * HOUR, later, h) + decayed(1, T0 - HOUR, T0 - HOUR / 2, later, h))
    with store.begin() as session:  # the same time again changes nothing
        assert cached.standing(session, later).usage == pytest.approx(fresh.usage, rel=1e-12)


def ends(session) -> dict[tuple[int, int], dt.datetime | None]:
    """(task id, attempt number) → the attempt's end, timezone-aware."""
    rows = session.execute(select(Attempt.task_id, Attempt.number, Attempt.finished))
    return {(task, number): end and end.replace(tzinfo=dt.timezone.utc) for task, number, end in rows}


@pytest.mark.parametrize("bulk", [False, True], ids=["one", "bulk"])
def test_an_attempt_that_ends_paused_ends_when_it_pauses(settings, store, bulk):
    """A search trial paused at a rung and a task paused by a preemption: their attempts end at
    the pause, not when the task goes on in a new attempt, and the usage counts them to it."""
    pause = T0 - HOUR
    with store.begin() as session:
        add_computer(session, "a", gpus=2)
        dag = project_dag(session, "p")
        trial = add_task(session, dag, "trial", computer="a", gpus=[0])
        preempted = add_task(session, dag, "preempted", computer="a", gpus=[1])
        urgent = add_task(session, dag, "urgent")
        for status, at in [(S.queued, T0 - 3 * HOUR), (S.in_progress, T0 - 2 * HOUR)]:
            set_status_many(session, [trial, preempted], status, now=at)
        preempted.preempted_by = urgent.id
        session.add(Preemption(task_id=preempted.id, attempt=1, by_task_id=urgent.id, requested=pause))
        set_task_status(session, preempted, S.stopping, now=pause)
        if bulk:
            set_status_many(session, [trial, preempted], S.paused, now=pause)
        else:
            set_task_status(session, trial, S.paused, now=pause)
            set_task_status(session, preempted, S.paused, now=pause)
        ids = trial.id, preempted.id
    with store.begin() as session:
        assert ends(session) == {(ids[0], 1): pause, (ids[1], 1): pause}
        assert [session.get(Task, i).finished for i in ids] == [None, None]  # the tasks go on
        set_task_status(session, session.get(Task, ids[0]), S.not_ran, "promoted", T0 - HOUR / 2)
        set_task_status(session, session.get(Task, ids[1]), S.queued, "placed again", T0 - HOUR / 2)
    with store.begin() as session:
        assert ends(session) == {(ids[0], 1): pause, (ids[1], 1): pause, (ids[0], 2): None, (ids[1], 2): None}
        usage = FairShare(settings).standing(session, T0).usage
        assert usage == pytest.approx({"p": 2 * decayed(1, T0 - 2 * HOUR, pause, T0, settings.fairshare_half_life)})
        assert sum(gpu_hours(session, T0).projects["p"]) == pytest.approx(2.0)  # 2 attempts × 1 GPU × 1 hour


@pytest.mark.parametrize("same_transaction", [False, True], ids=["later", "same-transaction"])
def test_a_trial_pruned_after_its_pause_keeps_the_pause_as_its_end(settings, store, same_transaction):
    """The first end of an attempt stands: a trial paused at a rung and pruned hours later held
    its GPU until the pause, not until the pruning."""
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        trial = add_task(session, project_dag(session, "p"), "trial", computer="a", gpus=[0])
        for status, at in [(S.queued, T0 - 3 * HOUR), (S.in_progress, T0 - 2 * HOUR), (S.paused, T0 - HOUR)]:
            set_task_status(session, trial, status, now=at)
        if same_transaction:
            set_task_status(session, trial, S.pruned, "never promoted", T0)
        trial_id = trial.id
    with store.begin() as session:
        if not same_transaction:
            set_task_status(session, session.get(Task, trial_id), S.pruned, "never promoted", T0)
    with store.begin() as session:
        assert ends(session) == {(trial_id, 1): T0 - HOUR}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request, settings):
    """The URL of an empty SQLite or PostgreSQL database."""
    return settings.db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_the_migration_gives_the_attempts_that_ended_paused_their_end(empty_url):
    """At ``report_journal`` only a search trial ended paused: the migration to ``shared_gpus``
    ends such an attempt when its task last changed while it is the current one, else when the
    next attempt started; one promoted whose next attempt has not started keeps no end."""
    engine = make_engine(empty_url)
    upgrade(engine, "report_journal")
    with engine.begin() as connection:
        tables = MetaData()
        tables.reflect(connection, only=["project", "dag", "task", "attempt"])
        project, dag, task, attempt = (tables.tables[name] for name in ("project", "dag", "task", "attempt"))
        connection.execute(project.insert(), {"id": 1, "name": "p", "created": T0})
        connection.execute(dag.insert(), {"id": 1, "name": "d", "project_id": 1, "config": "", "created": T0})
        common = dict(dag_id=1, type="train", priority=0, executor_config={}, gpu_min=1, gpu_max=1, cpu=1, memory=0.0,
                      distr=False, single_node=True, env={}, retries=0, gpus=[0], created=T0, updated=T0)
        connection.execute(task.insert(), [
            dict(common, id=1, name="at a rung", status="paused", attempt=1, updated=T0 - HOUR),
            dict(common, id=2, name="promoted", status="in_progress", attempt=2),
            dict(common, id=3, name="promoted, waiting", status="not_ran", attempt=2),
            dict(common, id=4, name="done", status="success", attempt=1)])
        run = dict(computer="a", gpus=[0], started=T0 - 3 * HOUR, finished=None)
        connection.execute(attempt.insert(), [
            dict(run, task_id=1, number=1, status="paused"),
            dict(run, task_id=2, number=1, status="paused"),
            dict(run, task_id=2, number=2, status="in_progress", started=T0 - 2 * HOUR),
            dict(run, task_id=3, number=1, status="paused"),
            dict(run, task_id=3, number=2, status="not_ran", started=None),
            dict(run, task_id=4, number=1, status="success", finished=T0 - HOUR / 2)])
    upgrade(engine)
    with engine.connect() as connection:
        found = ends(connection)
    engine.dispose()
    assert found == {(1, 1): T0 - HOUR, (2, 1): T0 - 2 * HOUR, (2, 2): None, (3, 1): None, (3, 2): None,
                     (4, 1): T0 - HOUR / 2}


# --- the supervisor and the queue ------------------------------------------------------------

def test_the_queue_is_the_order_the_tick_places_in(settings, store):
    settings = dataclasses.replace(settings, gpu_quota={"c": 1})
    clock = Clock()
    with store.begin() as session:
        add_computer(session, "a", gpus=3, cpu=16)
        a, b, c = (project_dag(session, p) for p in "abc")
        ran(session, a, T0 - 2 * HOUR, T0 - HOUR)  # a used GPUs lately: b and c go first
        ids = {name: add_task(session, dag, name, gpu_min=1, gpu_max=1).id
               for name, dag in [("a1", a), ("a2", a), ("b1", b), ("b2", b), ("c1", c), ("c2", c)]}
        ids["urgent"] = add_task(session, a, "urgent", gpu_min=1, gpu_max=1, priority=9).id
    with store.begin() as session:
        entries = queue(session, settings, clock())
    assert [e.task for e in entries] == ["urgent", "b1", "c1", "b2", "c2", "a1", "a2"]
    assert [e.position for e in entries] == list(range(1, 8))
    first = entries[0]
    assert (first.task_id, first.dag, first.project, first.priority, first.request, first.status, first.reason) == (
        ids["urgent"], "dag a", "a", 9, "1 GPU, 1 CPU, 0 GB", "not_ran", None)
    assert entries[4].reason == "project 'c' holds 1 of its gpu_quota of 1 GPU"
    assert entries[3].reason.startswith("no computer has room for 1 GPU")
    sup = Supervisor(settings, store, RecordingBus(), now=clock)
    assert sup.tick() == [(ids[e.task], "a") for e in entries if e.reason is None]
    with store.begin() as session:
        assert session.get(Task, ids["c2"]).waiting_reason == "project 'c' holds 1 of its gpu_quota of 1 GPU"
        assert queue(session, settings, clock())[0].task == "b2"


def test_a_task_paused_by_preemption_is_ready_again_in_its_place(settings, store):
    with store.begin() as session:
        dag = project_dag(session, "p")
        old = add_task(session, dag, "old", status=S.paused, gpu_min=1, gpu_max=1)
        newer = add_task(session, dag, "newer", gpu_min=1, gpu_max=1)
        old.preempted_by = newer.id
        add_task(session, dag, "trial at a rung", status=S.paused)  # a search's pause: not waiting
    with store.begin() as session:
        assert [r.name for r in classify(session).ready] == ["old", "newer"]


# --- dag priority ----------------------------------------------------------------------------

def test_set_dag_priority_changes_the_tasks_that_have_not_finished(store):
    with store.begin() as session:
        dag = project_dag(session, "p")
        waiting = add_task(session, dag, "waiting").id
        running = add_task(session, dag, "running", status=S.in_progress).id
        done = add_task(session, dag, "done", status=S.success).id
        other = project_dag(session, "q")
        finished = add_task(session, other, "done", status=S.failed)
        dag_id, other_id = dag.id, other.id
    with store.begin() as session:
        changed = control.set_dag_priority(session, dag_id, -7)
        assert sorted(t.id for t in changed) == [waiting, running]
    with store.begin() as session:
        assert [session.get(Task, i).priority for i in (waiting, running, done)] == [-7, -7, 0]
        with pytest.raises(NotFoundError, match="dag 999 does not exist"):
            control.set_dag_priority(session, 999, 1)
        with pytest.raises(ConfigError, match=r"priority 2147483648: allowed: an int from -2147483647 to 2147483647"):
            control.set_dag_priority(session, dag_id, 2 ** 31)
        with pytest.raises(ConfigError, match="priority True"):
            control.set_dag_priority(session, dag_id, True)
        with pytest.raises(StateError, match=f"dag {other_id} has no waiting, queued, running or paused task"):
            control.set_dag_priority(session, other_id, 1)
    assert finished.priority == 0


def test_the_dag_priority_command(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("MLCOMP_ROOT", str(root))
    monkeypatch.delenv("MLCOMP_DB_URL", raising=False)
    runner = CliRunner()
    submitted = runner.invoke(cli, ["dag", "submit", str(DAGS / "bash.yml")])
    assert submitted.exit_code == 0, submitted.output
    dag_id = int(submitted.output.split()[0])
    result = runner.invoke(cli, ["dag", "priority", str(dag_id), "-5"])
    assert result.exit_code == 0, result.output
    assert result.output == f"dag {dag_id}: priority -5 set on 8 task(s)\n"
    store = open_store(Settings.from_env())
    with store() as session:
        assert set(session.scalars(select(Task.priority).where(Task.dag_id == dag_id))) == {-5}
    missing = runner.invoke(cli, ["dag", "priority", "999", "1"])
    assert isinstance(missing.exception, NotFoundError) and "dag 999 does not exist" in str(missing.exception)
    big = runner.invoke(cli, ["dag", "priority", str(dag_id), str(2 ** 31)])
    assert isinstance(big.exception, ConfigError) and "allowed: an int from -2147483647" in str(big.exception)
