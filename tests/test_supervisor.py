"""The supervisor tick: readiness, skips, priorities, placement, waiting reasons, the dead-computer
sweep, grid roll-up, wake-ups, and two supervisors racing on PostgreSQL."""
import dataclasses
import threading
import time

import pytest
from sqlalchemy import select

from mlcomp.db import Computer, Task, TaskDependency, TaskStatus, immediate, utcnow
from mlcomp.bus import SUPERVISOR, Bus, computer_channel
from mlcomp.supervisor import Supervisor, set_task_status
from supervisor_helpers import Clock, RecordingBus, add_computer, add_task, make_dag, wait_for

S = TaskStatus


def supervisor(settings, store, clock=None, bus=None):
    return Supervisor(settings, store, bus or RecordingBus(), now=clock or Clock())


def finish(store, task_id, status=S.success):
    with store.begin() as session:
        task = session.get(Task, task_id)
        if task.status is S.queued:
            set_task_status(session, task, S.in_progress)
        set_task_status(session, task, status, f"test: {status.value}")


def statuses(store, *ids):
    with store.begin() as session:
        return [session.get(Task, i).status for i in ids]


def test_ready_tasks_go_by_priority_then_age_and_waiting_ones_say_why(settings, store):
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        dag = make_dag(session)
        old = add_task(session, dag, "old", gpu_min=1, gpu_max=1).id
        urgent = add_task(session, dag, "urgent", gpu_min=1, gpu_max=1, priority=5).id
        cpu_only = add_task(session, dag, "cpu").id
    sup = supervisor(settings, store)
    assert sorted(sup.tick()) == [(urgent, "a"), (cpu_only, "a")]
    assert sorted(sup.bus.placed()) == [(urgent, "a"), (cpu_only, "a")]
    with store.begin() as session:
        waiting = session.get(Task, old)
        assert waiting.status is S.not_ran
        assert waiting.waiting_reason == "no computer has room for 1 GPU, 1 CPU, 0 GB (a: 0 GPUs, 3 CPUs, 16 GB free)"
        placed = session.get(Task, urgent)
        assert (placed.status, placed.computer, placed.gpus) == (S.queued, "a", [0])
    finish(store, urgent)
    assert sup.tick() == [(old, "a")]


def test_dependencies_wait_then_run_or_are_skipped(settings, store):
    with store.begin() as session:
        add_computer(session, "a")
        dag = make_dag(session)
        first = add_task(session, dag, "first")
        second = add_task(session, dag, "second", depends=[first])
        bad = add_task(session, dag, "bad")
        after_bad = add_task(session, dag, "after_bad", depends=[bad, first])
        last = add_task(session, dag, "last", depends=[after_bad])
        ids = first.id, second.id, bad.id, after_bad.id, last.id
    sup = supervisor(settings, store)
    assert sorted(t for t, _ in sup.tick()) == [ids[0], ids[2]]
    finish(store, ids[0])
    finish(store, ids[2], S.failed)
    assert [t for t, _ in sup.tick()] == [ids[1]]
    sup.tick()
    assert statuses(store, *ids[3:]) == [S.skipped, S.skipped]
    with store.begin() as session:
        assert session.get(Task, ids[3]).reason == f"dependency 'bad' (task {ids[2]}) failed"
        assert session.get(Task, ids[4]).reason == f"dependency 'after_bad' (task {ids[3]}) skipped"


def test_dead_computers_have_their_tasks_failed_or_retried_elsewhere(settings, store):
    clock = Clock()
    with store.begin() as session:
        add_computer(session, "a", gpus=2)
        dag = make_dag(session)
        once = add_task(session, dag, "once", gpu_min=1, gpu_max=1, computer_pin="a").id
        again = add_task(session, dag, "again", gpu_min=1, gpu_max=1, retries=1).id
    sup = supervisor(settings, store, clock)
    assert len(sup.tick()) == 2
    clock.advance(settings.heartbeat_ttl + 1)
    with store.begin() as session:  # a fell silent; b comes up
        add_computer(session, "b", gpus=1, heartbeat=clock())
    assert sup.tick() == [(again, "b")]
    with store.begin() as session:
        failed, retried = session.get(Task, once), session.get(Task, again)
        assert failed.status is S.failed and failed.gpus == [0]
        assert failed.reason == ("computer 'a' silent since 2026-01-01 12:00:00 UTC (heartbeat_ttl 5 s, "
            "checked at 2026-01-01 12:00:06 UTC)")
        assert (retried.status, retried.attempt, retried.computer, retried.gpus) == (S.queued, 2, "b", [0])
        assert [a.status for a in retried.attempts] == [S.failed, S.queued]


def test_a_task_queued_too_long_is_dispatched_again(settings, store):
    clock = Clock()
    with store.begin() as session:
        add_computer(session, "a")
        task_id = add_task(session, make_dag(session), "t").id
    sup = supervisor(settings, store, clock)
    assert sup.tick() == [(task_id, "a")]
    clock.advance(settings.heartbeat_ttl - 1)
    with store.begin() as session:
        session.get(Computer, "a").heartbeat = clock()
    assert sup.tick() == []
    clock.advance(2)
    assert sup.tick() == [(task_id, "a")]  # never started: the hand-over was lost
    assert statuses(store, task_id) == [S.queued]


def test_a_grid_search_runs_its_cells_within_parallel_and_rolls_up(settings, store):
    with store.begin() as session:
        add_computer(session, "a", cpu=8)
        dag = make_dag(session)
        parent = add_task(session, dag, "grid", type="grid_search", executor_config={"parallel": 2})
        cells = [add_task(session, dag, f"grid x={i}", parent_id=parent.id).id for i in range(3)]
        after = add_task(session, dag, "after", depends=[parent]).id
        parent = parent.id
    sup = supervisor(settings, store)
    # the parent starts and, in the same tick, two of its cells are placed (parallel: 2)
    assert [t for t, _ in sup.tick()] == cells[:2]
    assert statuses(store, parent) == [S.in_progress]
    with store.begin() as session:
        assert session.get(Task, cells[2]).waiting_reason == \
            f"grid search 'grid' (task {parent}) runs at most 2 cells at once"
    finish(store, cells[0])
    assert [t for t, _ in sup.tick()] == cells[2:]
    finish(store, cells[1])
    finish(store, cells[2])
    assert sup.tick() == [(after, "a")]  # the parent ends and its dependent runs in one tick
    assert statuses(store, parent) == [S.success]


def test_a_failed_publish_loses_no_placement(settings, store):
    class Broken(RecordingBus):
        def publish(self, channel, ids=()):
            raise ConnectionError("Redis unreachable")

    with store.begin() as session:
        add_computer(session, "a")
        task_id = add_task(session, make_dag(session), "t").id
    with pytest.raises(ConnectionError):  # a real Bus logs it; the worker's read finds the task
        supervisor(settings, store, bus=Broken()).tick()
    with store.begin() as session:
        task = session.get(Task, task_id)
        assert (task.status, task.computer) == (S.queued, "a")


def test_each_computer_gets_one_message_with_its_tasks_and_stop_requests_once(settings, store):
    with store.begin() as session:
        add_computer(session, "a", gpus=2)
        add_computer(session, "b", gpus=1)
        dag = make_dag(session)
        ids = [add_task(session, dag, f"t{i}", gpu_min=1, gpu_max=1).id for i in range(3)]
    bus = RecordingBus()
    sup = supervisor(settings, store, bus=bus)
    sup.tick()
    assert sorted(bus.calls) == [("computer:a", ids[:2]), ("computer:b", ids[2:])]
    with store.begin() as session:
        set_task_status(session, session.get(Task, ids[0]), S.in_progress)
        set_task_status(session, session.get(Task, ids[0]), S.stopping, "stop requested")
    bus.calls.clear()
    sup.tick()
    sup.tick()
    assert bus.calls == [("computer:a", [])]  # told once: "read the store"


class CountingSupervisor(Supervisor):
    ticks = 0

    def tick(self):
        placed = super().tick()
        self.ticks += 1
        return placed


def test_a_started_supervisor_is_woken_at_once_and_hands_over_in_process(settings, store):
    with store.begin() as session:
        add_computer(session, "a", heartbeat=None)
        task_id = add_task(session, make_dag(session), "t").id
    handed = []
    bus = Bus.of(settings)
    worker = bus.subscribe(computer_channel("a"), handed.extend)  # an in-process worker of "a"
    sup = CountingSupervisor(settings, store, interval=3600).start()
    try:
        wait_for(lambda: sup.ticks)  # the first tick, at start, finds no live computer
        with store.begin() as session:
            immediate(session)  # a read-then-write transaction beside a running supervisor
            session.get(Computer, "a").heartbeat = utcnow()
        Bus(settings.db_url).publish(SUPERVISOR)  # another process's bus: through the socket
        assert wait_for(lambda: handed) == [task_id]
    finally:
        sup.shutdown()
        worker.close()
    ticks = sup.ticks
    Bus(settings.db_url).publish(SUPERVISOR)
    time.sleep(0.2)
    assert sup.ticks == ticks


def test_two_supervisors_never_give_a_gpu_twice(settings, any_store):
    pg_store = any_store  # row locks on PostgreSQL, BEGIN IMMEDIATE on SQLite
    with pg_store.begin() as session:
        add_computer(session, "a", gpus=4, cpu=64)
        add_computer(session, "b", gpus=4, cpu=64)
        dag = make_dag(session)
        ids = [add_task(session, dag, f"t{i}", gpu_min=1, gpu_max=1 + i % 3).id for i in range(24)]
    # scoped to the DAG, so both supervise at once (supervisors of every DAG share a lease:
    # tests/test_failover.py) and the race is the computer rows' locks
    sups = [Supervisor(settings, pg_store, RecordingBus(), now=Clock(), dag_ids=[dag.id]) for _ in range(2)]
    held = set()
    for _ in range(4):
        barrier = threading.Barrier(2)

        def race(sup):
            barrier.wait()
            sup.tick()

        threads = [threading.Thread(target=race, args=(s,)) for s in sups]
        [t.start() for t in threads]
        [t.join() for t in threads]
        with pg_store.begin() as session:
            active = session.scalars(select(Task).where(Task.status == S.queued)).all()
            pairs = [(t.computer, g) for t in active for g in t.gpus]
            assert len(pairs) == len(set(pairs)) <= 8
            assert all(t.gpus for t in active)
            held = {t.id for t in active}
        for task_id in sorted(held)[:3]:
            finish(pg_store, task_id)
    placed = [pair for s in sups for pair in s.bus.placed()]
    assert len(placed) == len(set(placed))
    assert statuses(pg_store, *ids).count(S.success) == 12


def test_a_supervisor_scoped_to_dags_runs_only_theirs(settings, store):
    with store.begin() as session:
        add_computer(session, "a")
        mine = add_task(session, make_dag(session, "mine"), "t").id
        add_task(session, make_dag(session, "other"), "t")
        dag_id = session.get(Task, mine).dag_id
    sup = Supervisor(settings, store, RecordingBus(), now=Clock(), dag_ids=[dag_id])
    assert sup.tick() == [(mine, "a")]
    assert sup.tick() == []


@pytest.mark.redis
def test_a_supervisor_on_another_machine_is_woken_through_redis(settings, store, redis_url):
    settings = dataclasses.replace(settings, broker_url=redis_url[0])
    with store.begin() as session:
        add_computer(session, "a", heartbeat=None)
        task_id = add_task(session, make_dag(session), "t").id
    remote = Bus(settings.db_url, settings.broker_url)  # the bus of a worker on another machine
    handed = []
    worker = remote.subscribe(computer_channel("a"), handed.extend)
    sup = CountingSupervisor(settings, store, interval=3600).start()
    try:
        wait_for(lambda: sup.ticks)  # the first tick, at start, finds no live computer
        with store.begin() as session:
            immediate(session)
            session.get(Computer, "a").heartbeat = utcnow()
        time.sleep(0.3)  # the supervisor's subscription is in place
        remote.publish(SUPERVISOR)
        assert wait_for(lambda: handed) == [task_id]
    finally:
        sup.shutdown()
        worker.close()


def test_a_tick_reads_light_rows_and_writes_in_bulk_with_ten_thousand_tasks(settings, store):
    """A tick's work is a fixed number of statements whatever the number of waiting tasks:
    waiting reasons go in one bulk UPDATE, written once, not again while they stay the same."""
    from sqlalchemy import event, insert

    with store.begin() as session:
        add_computer(session, "a", cpu=2)
        dag = make_dag(session)
        root = add_task(session, dag, "root")
        set_task_status(session, root, S.queued)
        set_task_status(session, root, S.in_progress)
        set_task_status(session, root, S.success)
        dag_id, root_id = dag.id, root.id
    with store.begin() as session:
        session.execute(insert(Task), [dict(dag_id=dag_id, name=f"t{i}", type="bash") for i in range(10_000)])
        ids = session.scalars(select(Task.id).where(Task.dag_id == dag_id, Task.id != root_id)).all()
        session.execute(insert(TaskDependency), [dict(task_id=i, depend_id=root_id) for i in ids])
    statements = []
    event.listen(store.kw["bind"], "before_cursor_execute", lambda *args: statements.append(args[2]))
    sup = supervisor(settings, store)
    assert len(sup.tick()) == 2  # two CPUs
    assert len(statements) < 30
    with store.begin() as session:
        reasons = session.scalars(select(Task.waiting_reason).where(Task.status == S.not_ran)).all()
    assert len(reasons) == 9_998 and set(reasons) == {"no computer has room for 0 GPUs, 1 CPU, 0 GB "
                                                       "(a: 0 GPUs, 0 CPUs, 16 GB free)"}
    statements.clear()
    assert sup.tick() == []
    assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]  # reasons unchanged
