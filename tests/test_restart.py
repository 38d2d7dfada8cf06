"""Restarts lose nothing: ``kill -9`` of ``mlcomp server`` (or of a separate ``mlcomp worker``) at
random moments of a DAG with short and long tasks, each followed by a restart. No task that ran
to its end is marked failed, none runs twice within an attempt, none is left hanging, the DAG
ends in success with no action by the user, and the long task's log is complete."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from mlcomp import control
from mlcomp.db import LogLine, Task, TaskStatus, immediate, make_engine, make_sessionmaker, upgrade
from mlcomp.settings import Settings
from cluster import free_port, registered, start
from supervisor_helpers import wait_for

S = TaskStatus
KILLS = 10
LINES = 120  # the long task prints one line every 0.1 s


def dag_yaml(runs: Path, computer: str | None) -> str:
    """A long task printing LINES lines beside a chain of eight short ones, then a last task;
    every task appends "TASK_ID ATTEMPT" to ``runs`` when it starts."""
    record = f'echo "$MLCOMP_TASK_ID $MLCOMP_ATTEMPT" >> {runs}'
    pin = f", computer: {computer}" if computer else ""
    lines = ["info: {name: restarts, project: restarts, expdir: code}", "executors:",
             f"  long: {{type: bash, command: '{record}; for i in $(seq 1 {LINES}); do echo line $i; "
             f"sleep 0.1; done'{pin}}}"]
    for i in range(8):
        depends = f", depends: s{i - 1}" if i else ""
        lines.append(f"  s{i}: {{type: bash, command: '{record}; sleep 0.3; echo short {i}'{depends}{pin}}}")
    lines.append(f"  last: {{type: bash, command: '{record}; echo done', depends: [long, s7]{pin}}}")
    return "\n".join(lines) + "\n"


def kill_and_restart(store, launch, name: str, seed: int) -> subprocess.Popen:
    """Starts the process with ``launch()``, then KILLS times: waits until its worker has
    registered, lets it run a random 0–0.6 s, kills it with SIGKILL and starts it again; returns
    the last one, alive."""
    rng = random.Random(seed)
    process = launch()
    for _ in range(KILLS):
        started = time.time()
        wait_for(lambda: registered(store, name, started), timeout=60)
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = launch()
    return process


def check_dag(store, dag_id: int, runs: Path) -> None:
    """The DAG ended in success on first attempts, each task ran once, the long log is complete."""
    with store() as session:
        tasks = session.scalars(select(Task).where(Task.dag_id == dag_id)).all()
        assert {t.status for t in tasks} == {S.success}, [(t.name, t.status, t.reason) for t in tasks]
        assert {t.attempt for t in tasks} == {1}, [(t.name, t.attempt) for t in tasks]
        long = next(t for t in tasks if t.name == "long")
        log = list(session.scalars(select(LogLine.text).where(LogLine.task_id == long.id).order_by(LogLine.id)))
    assert log == [f"line {i}" for i in range(1, LINES + 1)]
    started = runs.read_text().split("\n")[:-1]
    assert sorted(started) == sorted(f"{t.id} 1" for t in tasks)  # each task started once


def submit(store, settings: Settings, tmp_path: Path, computer: str | None) -> tuple[int, Path]:
    runs = tmp_path / "runs.txt"
    (tmp_path / "code").mkdir()
    path = tmp_path / "restarts.yml"
    path.write_text(dag_yaml(runs, computer))
    with store.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, settings, path)
        return dag.id, runs


def wait_dag(store, dag_id: int, timeout: float = 90) -> None:
    def ended():
        with store() as session:
            statuses = set(session.scalars(select(Task.status).where(Task.dag_id == dag_id)))
        return statuses and not statuses & {S.not_ran, S.queued, S.in_progress, S.stopping}
    wait_for(ended, timeout=timeout)


def test_kill_9_of_the_server_loses_nothing(settings, store, tmp_path):
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url}
    env.pop("MLCOMP_BROKER_URL", None)
    dag_id, runs = submit(store, settings, tmp_path, None)
    server = kill_and_restart(store, lambda: start(env, "server", "--port", str(free_port()), "--name", "box"),
                              "box", seed=1)
    try:
        wait_dag(store, dag_id)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    check_dag(store, dag_id, runs)


@pytest.mark.postgres
@pytest.mark.redis
def test_kill_9_of_a_worker_on_postgresql_and_redis_loses_nothing(settings, pg_url, redis_url, tmp_path):
    broker, _ = redis_url
    name = f"remote-{uuid.uuid4().hex[:8]}"
    settings = Settings(root=settings.root, db_url=pg_url, broker_url=broker)
    engine = make_engine(pg_url)
    upgrade(engine)
    store = make_sessionmaker(engine)
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": pg_url, "MLCOMP_BROKER_URL": broker}
    server = start(env, "server", "--port", str(free_port()), "--name", f"srv-{name}")
    worker = None
    try:
        dag_id, runs = submit(store, settings, tmp_path, name)
        worker = kill_and_restart(store, lambda: start(env, "worker", "--name", name), name, seed=2)
        wait_dag(store, dag_id)
        check_dag(store, dag_id, runs)
    finally:
        for process in (worker, server):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        engine.dispose()


def test_a_worker_stopped_with_sigterm_leaves_its_task_running_for_the_next_one(settings, store, tmp_path):
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url}
    env.pop("MLCOMP_BROKER_URL", None)
    dag_id, runs = submit(store, settings, tmp_path, "box")
    worker = start(env, "worker", "--name", "box")
    supervisor = start(env, "server", "--port", str(free_port()), "--name", "srv")
    try:
        with store() as session:
            long_id = session.scalar(select(Task.id).where(Task.dag_id == dag_id, Task.name == "long"))
        wait_for(lambda: _log_lines(store, long_id) >= 3, timeout=60)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        with store() as session:
            assert session.get(Task, long_id).status is S.in_progress  # not stopped: it runs on
        worker = start(env, "worker", "--name", "box")
        wait_dag(store, dag_id)
    finally:
        for process in (worker, supervisor):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    check_dag(store, dag_id, runs)


def _log_lines(store, task_id: int) -> int:
    with store() as session:
        return len(session.scalars(select(LogLine.id).where(LogLine.task_id == task_id)).all())
