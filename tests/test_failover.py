"""Supervisor fail-over (:mod:`mlcomp.supervisor.lease`): of two supervisors of every DAG on one
store only the lease holder places tasks; when it dies the other takes over within
``heartbeat_ttl``, placing no task twice and giving no GPU twice; a clean shutdown hands over at
once; supervisors scoped to DAGs take no part; and two real ``mlcomp server`` processes fail over
after ``kill -9``."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import delete, select, update

from mlcomp import control
from mlcomp.db import Computer, Task, TaskStatus, immediate, make_engine, make_sessionmaker, upgrade
from mlcomp.db.models import SupervisorLease
from mlcomp.supervisor import Supervisor, set_task_status
from mlcomp.supervisor.lease import LEASE, lease_seconds, process_token
from supervisor_helpers import Clock, add_computer, add_task, make_dag, wait_for

S = TaskStatus


class FakeBus:
    """Records what a supervisor publishes; subscriptions are accepted and do nothing."""

    def __init__(self):
        self.messages: list[tuple[str, list[int]]] = []

    def publish(self, channel, ids=()):
        self.messages.append((channel, list(ids)))

    def subscribe(self, channel, callback):
        return self

    def close(self):
        pass


def supervisor(settings, store, clock, **kwargs) -> Supervisor:
    return Supervisor(settings, store, bus=FakeBus(), now=clock, **kwargs)


def beat_computers(store, now: dt.datetime) -> None:
    """The workers' heartbeats: every computer is alive at ``now``."""
    with store.begin() as session:
        immediate(session)
        session.execute(update(Computer).values(heartbeat=now))


def start_queued(store) -> None:
    """The workers start every queued task (so none is handed over again as stale)."""
    with store.begin() as session:
        immediate(session)
        for task in session.scalars(select(Task).where(Task.status == S.queued)):
            set_task_status(session, task, S.in_progress, "test: started")


def finish_some(store, count: int) -> None:
    with store.begin() as session:
        immediate(session)
        running = session.scalars(select(Task).where(Task.status == S.in_progress).order_by(Task.id)).all()
        for task in running[:count]:
            set_task_status(session, task, S.success, "test: done")


def gpus_held_once(store) -> None:
    """No GPU is held by two active tasks."""
    with store() as session:
        active = session.scalars(select(Task).where(Task.status.in_([S.queued, S.in_progress]))).all()
    pairs = [(t.computer, g) for t in active for g in t.gpus or []]
    assert len(pairs) == len(set(pairs)), pairs


def lease_row(store):
    with store() as session:
        return session.execute(select(SupervisorLease.holder, SupervisorLease.expires, SupervisorLease.process)
                               .where(SupervisorLease.name == LEASE)).one()


def test_only_the_holder_places_and_the_standby_takes_over_within_heartbeat_ttl(settings, any_store, caplog):
    caplog.set_level(logging.INFO, logger="mlcomp.supervisor.lease")
    store, clock, ttl = any_store, Clock(), settings.heartbeat_ttl
    with store.begin() as session:
        add_computer(session, "a", gpus=2, cpu=64)
        add_computer(session, "b", gpus=2, cpu=64)
        dag = make_dag(session)
        ids = [add_task(session, dag, f"t{i}", gpu_min=1, gpu_max=1).id for i in range(24)]
    first, second = supervisor(settings, store, clock), supervisor(settings, store, clock)
    placed: list[tuple[str, float, int]] = []  # (who, seconds since T0, task id)
    died, step = 6.0, 0.5  # the first supervisor ticks for 6 s, then dies without a word
    t = 0.0
    while t <= died + 2 * ttl:
        beat_computers(store, clock())
        for name, sup in (("first", first), ("second", second)):
            if name == "first" and t >= died:
                continue
            if t % (ttl / 3) < step:  # each one's heartbeat, every heartbeat_ttl / 3 s
                sup.heartbeat()
            placed += [(name, t, task_id) for task_id, _ in sup.tick()]  # a tick every interval
            gpus_held_once(store)
        start_queued(store)
        finish_some(store, 1)
        clock.advance(step)
        t += step
    by_first = [p for p in placed if p[0] == "first"]
    by_second = [p for p in placed if p[0] == "second"]
    assert by_first and all(when < died for _, when, _ in by_first)
    assert by_second and all(when >= died for _, when, _ in by_second)
    # it takes over within heartbeat_ttl of the holder's last tick (the lease is heartbeat_ttl / 2)
    assert by_second[0][1] - (died - step) <= ttl
    assert by_second[0][1] - (died - step) > lease_seconds(settings) - 2 * step  # not before the lease lapsed
    task_ids = [task_id for _, _, task_id in placed]
    assert len(task_ids) == len(set(task_ids)) == 24 and set(task_ids) == set(ids)  # none placed twice
    assert lease_row(store).holder == second.id and second.lease.held
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"Supervisor {first.id}: active") for line in lines)
    assert sum(line.startswith(f"Supervisor {second.id}: standing by") for line in lines) == 1
    assert any(line.startswith(f"Supervisor {second.id}: active") and f"taken over from {first.id}" in line
               for line in lines)


def test_a_clean_shutdown_hands_over_at_once(settings, any_store):
    store, clock = any_store, Clock()
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        dag = make_dag(session)
        one, two = (add_task(session, dag, name, gpu_min=1, gpu_max=1).id for name in ("one", "two"))
    first, second = supervisor(settings, store, clock), supervisor(settings, store, clock)
    assert first.tick() == [(one, "a")]
    start_queued(store)
    finish_some(store, 1)
    assert second.tick() == []  # stands by
    first.shutdown()
    assert ("supervisor", []) in first.bus.messages  # the supervisors are woken
    assert lease_row(store).holder is None
    assert second.tick() == [(two, "a")]  # at once: the clock has not moved
    assert first.tick() == []  # a released supervisor that ticks again finds the lease taken


@pytest.mark.postgres
def test_supervisors_of_some_dags_take_no_part(settings, pg_store):
    store, clock = pg_store, Clock()
    with store.begin() as session:
        add_computer(session, "a", cpu=8)
        mine = add_task(session, make_dag(session, "mine"), "t").id
        other = add_task(session, make_dag(session, "other"), "t").id
        dag_id = session.get(Task, mine).dag_id
    holder = supervisor(settings, store, clock)
    scoped = supervisor(settings, store, clock, dag_ids=[dag_id])
    assert scoped.lease is None
    assert scoped.tick() == [(mine, "a")]
    assert holder.tick() == [(other, "a")]
    assert lease_row(store).holder == holder.id


@pytest.mark.postgres
def test_a_standby_on_the_holders_machine_takes_over_at_once_when_its_process_ended(settings, pg_store, caplog):
    """The lease names the holder's process; on the same machine a standby can tell that it has
    ended (``kill -9`` of a server restarted at once) and does not wait for the lease to lapse."""
    if process_token() is None:
        pytest.skip("needs /proc (Linux)")
    store, clock = pg_store, Clock()
    with store.begin() as session:
        add_computer(session, "a")
        task_id = add_task(session, make_dag(session), "t").id
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    token = process_token(child.pid)

    def held_by(holder: str, process: str) -> None:
        with store.begin() as session:
            immediate(session)
            session.execute(update(SupervisorLease).values(
                holder=holder, process=process, expires=clock() + dt.timedelta(seconds=lease_seconds(settings))))

    sup = supervisor(settings, store, clock)
    try:
        held_by("alive", process_token())  # this process: it runs
        assert sup.tick() == []
        held_by("child", token)
        assert sup.tick() == []  # the child runs
    finally:
        child.kill()
        child.wait()
    with caplog.at_level(logging.INFO, logger="mlcomp.supervisor.lease"):
        assert sup.tick() == [(task_id, "a")]  # the lease has not expired, but its holder has ended
    assert lease_row(store).holder == sup.id
    assert "taken over from child, whose process on this machine has ended" in caplog.text


def _server(env: dict, root, name: str, log) -> subprocess.Popen:
    from cluster import free_port, start

    env = {**env, "MLCOMP_ROOT": str(root)}
    root.mkdir(parents=True, exist_ok=True)
    return start(env, "server", "--port", str(free_port()), "--name", name, "--gpus", "", log=log)


def _pid(store) -> int | None:
    """The pid of the lease holder (a supervisor's id is HOST:PID:RANDOM)."""
    holder = lease_row(store).holder
    return int(holder.split(":")[-2]) if holder else None


@pytest.mark.postgres
@pytest.mark.slow
def test_two_servers_on_one_database_fail_over_after_kill_9(settings, pg_url, tmp_path):
    """Two ``mlcomp server`` processes (their own roots and ports) on one PostgreSQL database: one
    supervises, the other stands by; after ``kill -9`` of the first the second places and runs a
    task within ``heartbeat_ttl`` (on one machine the second sees at once that the first's process
    has ended; with a short ``heartbeat_ttl`` a busy machine could stall a renewal past the lease,
    hence 6 s, a 3 s lease)."""
    ttl = 6.0
    engine = make_engine(pg_url)
    upgrade(engine)
    store = make_sessionmaker(engine)
    env = {**os.environ, "MLCOMP_DB_URL": pg_url, "MLCOMP_HEARTBEAT_TTL": str(ttl)}
    env.pop("MLCOMP_BROKER_URL", None)
    servers = {}
    try:
        servers["one"] = _server(env, tmp_path / "one", "one", tmp_path / "one.log")
        wait_for(lambda: _pid(store) == servers["one"].pid, timeout=30)
        servers["two"] = _server(env, tmp_path / "two", "two", tmp_path / "two.log")
        wait_for(lambda: _computers(store) == {"one", "two"}, timeout=30)
        time.sleep(1.5)  # a tick or more of the second server: it stands by
        assert _pid(store) == servers["one"].pid, _logs(tmp_path)

        servers["one"].send_signal(signal.SIGKILL)
        servers["one"].wait(10)
        killed = dt.datetime.now(dt.timezone.utc)
        (tmp_path / "code").mkdir()
        dag_file = tmp_path / "failover.yml"
        dag_file.write_text("info: {name: failover, project: failover, expdir: code}\n"
                            "executors:\n  t: {type: bash, command: 'echo placed', computer: two}\n")
        submit_settings = dataclasses.replace(settings, root=tmp_path / "client", db_url=pg_url, heartbeat_ttl=ttl)
        with store.begin() as session:
            immediate(session)
            (dag,) = control.submit_dag(session, submit_settings, dag_file)
            task_id = session.scalar(select(Task.id).where(Task.dag_id == dag.id))

        def ended():
            with store() as session:
                task = session.get(Task, task_id)
                return task if task.status.finished else None

        task = wait_for(ended, timeout=30)
        assert task.status is S.success, (task.reason, _logs(tmp_path))
        queued = task.queued if task.queued.tzinfo else task.queued.replace(tzinfo=dt.timezone.utc)
        assert (queued - killed).total_seconds() < ttl, _logs(tmp_path)  # within heartbeat_ttl of the kill
        assert _pid(store) == servers["two"].pid
        assert "active: holds the supervisor lease (taken over from" in (tmp_path / "two.log").read_text()
    finally:
        for process in servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        engine.dispose()


def _logs(folder) -> str:
    return "\n".join(f"{path.name}: {path.read_text()[-2000:]}" for path in sorted(folder.glob("*.log")))


def _computers(store) -> set[str]:
    with store() as session:
        return set(session.scalars(select(Computer.name)))


def test_a_missing_lease_row_is_made_again(settings, any_store):
    store, clock = any_store, Clock()
    with store.begin() as session:
        immediate(session)
        add_computer(session, "a")
        task_id = add_task(session, make_dag(session), "t").id
        session.execute(delete(SupervisorLease))
    first, second = supervisor(settings, store, clock), supervisor(settings, store, clock)
    assert first.tick() == [(task_id, "a")]
    assert second.tick() == []
    assert lease_row(store).holder == first.id
