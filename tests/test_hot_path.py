"""The dispatch hot path: ticks woken by task ends (no interval), one pump thread for every task's
pipes, the in-process SQLite writer lock, attempt rows kept by upsert, and the embedded
supervisor's dispatcher chosen before its first tick."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from mlcomp import control
from mlcomp.db import Attempt, Computer, Dag, LogLine, Task, TaskStatus, immediate, utcnow
from mlcomp.bus import Bus, computer_channel
from mlcomp.supervisor import run_local, set_task_status
from supervisor_helpers import add_computer, add_task, make_dag, wait_for

S = TaskStatus


def dag_done(store, dag_id):
    with store.begin() as session:
        return control.dag_status(session, dag_id).finished


def test_a_chain_runs_on_task_ends_alone(settings, store, tmp_path):
    """With an hour between fallback ticks, each task of a chain starts because its predecessor's
    end ticked the supervisor in the worker's thread."""
    (tmp_path / "chain.yml").write_text("info: {name: chain, project: tests}\nexecutors:\n"
                                        + "".join(f"  t{i}: {{type: bash, command: 'echo {i}'"
                                                  f"{f', depends: t{i - 1}' if i else ''}}}\n" for i in range(4)))
    with run_local(settings, [], sessionmaker=store, interval=3600):
        with store.begin() as session:
            (dag,) = control.submit_dag(session, settings, tmp_path / "chain.yml")
            dag_id = dag.id
        control.wake(settings)  # the submission; each later task starts on its predecessor's end
        wait_for(lambda: dag_done(store, dag_id))
        pumps = [t for t in threading.enumerate() if t.name == "mlcomp-task-pump"]
    assert len(pumps) <= 1
    with store.begin() as session:
        tasks = session.scalars(select(Task).where(Task.dag_id == dag_id).order_by(Task.id)).all()
        assert [t.status for t in tasks] == [S.success] * 4
        assert all(a.finished <= b.started for a, b in zip(tasks, tasks[1:]))  # one after the other
        assert [session.scalar(select(LogLine.text).where(LogLine.task_id == t.id)) for t in tasks] == \
            ["0", "1", "2", "3"]


def test_parallel_tasks_share_one_pump_thread(settings, store, tmp_path):
    lines = 300
    (tmp_path / "wide.yml").write_text(
        "info: {name: wide, project: tests}\nexecutors:\n"
        + "".join(f"  w{i}: {{type: bash, command: 'for j in $(seq {lines}); do echo {i}-$j; done; sleep 2'}}\n"
                  for i in range(2)))
    with run_local(settings, [], name="pc", sessionmaker=store) as local:
        with store.begin() as session:
            immediate(session)  # a read-then-write transaction beside a running supervisor
            session.get(Computer, "pc").cpu = 2  # two slots: a task asks for 1 CPU
            (dag,) = control.submit_dag(session, settings, tmp_path / "wide.yml")
            dag_id = dag.id
        pumps = lambda: [t.name for t in threading.enumerate()].count("mlcomp-task-pump")  # noqa: E731
        # a child is followed from its spawn, and handed to the pump once its start is committed
        wait_for(lambda: len(local.worker.running()) == 2 and pumps() > 0)
        assert pumps() == 1
        wait_for(lambda: dag_done(store, dag_id))
    with store.begin() as session:
        for task in session.scalars(select(Task).where(Task.dag_id == dag_id)):
            assert task.status is S.success
            texts = session.scalars(select(LogLine.text).where(LogLine.task_id == task.id).order_by(LogLine.id)).all()
            assert texts == [f"{task.name[1:]}-{j}" for j in range(1, lines + 1)]


def test_a_failed_writer_transaction_lets_the_next_writer_in(store):
    with pytest.raises(RuntimeError):
        with store.begin() as session:
            immediate(session)
            raise RuntimeError("rolled back")
    done = threading.Event()

    def write():
        with store.begin() as session:
            immediate(session)
            make_dag(session, "after")
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    assert done.is_set()


def test_writers_of_one_process_take_turns(store):
    with store.begin() as session:
        dag_id = make_dag(session).id
    errors = []

    def write(i):
        try:
            for j in range(10):
                with store.begin() as session:
                    immediate(session)
                    add_task(session, session.get(Dag, dag_id), f"t{i}-{j}")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    with store.begin() as session:
        assert len(session.scalars(select(Task.id).where(Task.dag_id == dag_id)).all()) == 40


def test_attempt_rows_follow_the_task_through_a_retry(store):
    with store.begin() as session:
        add_computer(session, "a")
        task = add_task(session, make_dag(session), "t", retries=1)
        set_task_status(session, task, S.queued)
        task_id = task.id
    with store.begin() as session:
        task = session.get(Task, task_id)
        set_task_status(session, task, S.in_progress, "running")
        set_task_status(session, task, S.failed, "boom")  # retry_or_fail's first half
        set_task_status(session, task, S.not_ran, "retry 1/1")  # a new attempt, in the same transaction
        set_task_status(session, task, S.queued, "again")
    with store.begin() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.task_id == task_id).order_by(Attempt.number)).all()
        assert [(a.number, a.status, a.reason) for a in attempts] == [(1, S.failed, "boom"), (2, S.queued, "again")]
        assert attempts[0].started is not None and attempts[0].finished is not None
        assert attempts[1].started is None and attempts[1].finished is None


def test_run_local_hands_a_task_pinned_elsewhere_to_that_computer_from_its_first_tick(settings, store, tmp_path):
    (tmp_path / "pinned.yml").write_text("info: {name: pinned, project: tests}\nexecutors:\n"
                                         "  far: {type: bash, command: 'true', computer: remote}\n")
    with store.begin() as session:
        add_computer(session, "remote", cpu=4, heartbeat=None)
        (dag,) = control.submit_dag(session, settings, tmp_path / "pinned.yml")
        task_id = dag.tasks[0].id
    handed = []
    remote = Bus.of(settings).subscribe(computer_channel("remote"), handed.extend)
    with store.begin() as session:
        session.get(Computer, "remote").heartbeat = utcnow()
    try:
        with run_local(settings, [], name="here", sessionmaker=store, interval=3600):
            wait_for(lambda: handed)
    finally:
        remote.close()
    assert handed == [task_id]
    with store.begin() as session:
        task = session.get(Task, task_id)
        assert task.status is S.queued and task.computer == "remote"  # not taken back


def test_schema_revision_is_the_migrations_head():
    from alembic.script import ScriptDirectory

    from mlcomp.db.session import SCHEMA_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_REVISION]


def test_a_store_at_head_opens_without_alembic(tmp_path):
    """The first open migrates a new database; later opens (every CLI command) skip Alembic, and
    so does a task's Python child."""
    import subprocess
    import sys

    code = ("import sys; import mlcomp.worker.child; from mlcomp.settings import Settings\n"
            "from mlcomp.db import open_store, Dag\n"
            "from sqlalchemy import select\n"
            "store = open_store(Settings.from_env())\n"
            "with store() as session: session.execute(select(Dag)).all()\n"
            "print('alembic' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", "MLCOMP_ROOT": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
            for _ in range(2)]
    assert [(r.returncode, r.stdout.strip()) for r in runs] == [(0, "True"), (0, "False")], runs
