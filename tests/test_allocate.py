"""Placement: GPUs by index, ranges, CPUs, memory, pins, and the reasons a task waits; the pool that
places a tick's tasks as the plain scan does; the bulk status changes a placing tick uses."""
import copy
import random
from types import SimpleNamespace

import pytest
from sqlalchemy import event, select

from mlcomp.db import Attempt, Computer, Task, TaskStatus, make_engine, make_sessionmaker, upgrade
from mlcomp.errors import StateError
from mlcomp.gang import Part
from mlcomp.lifecycle import queue_many, set_status_many, set_task_status
from mlcomp.settings import Settings
from mlcomp.supervisor import Supervisor
from mlcomp.supervisor.allocate import Free, FreePool, Placement, describe_request, free_resources, place
from supervisor_helpers import T0, Clock, add_computer, add_task, make_dag


def computer(name, gpus=4, cpu=8, memory=32.0):
    return SimpleNamespace(name=name, gpus=[{"index": i} for i in range(gpus)], cpu=cpu, memory=memory)


def task(gpu=0, gpu_max=None, cpu=1, memory=0.0, pin=None, on=None, gpus=()):
    return SimpleNamespace(gpu_min=gpu, gpu_max=gpu if gpu_max is None else gpu_max, cpu=cpu, memory=memory,
                           computer_pin=pin, computer=on, gpus=list(gpus))


def test_free_resources_subtract_active_tasks_only_on_their_computer():
    free = free_resources([computer("a"), computer("b")], [
        task(cpu=2, memory=4, on="a", gpus=[1, 3]), task(cpu=1, on="gone", gpus=[0])])
    assert free["a"] == Free("a", [0, 2], 6, 28.0)
    assert free["b"] == Free("b", [0, 1, 2, 3], 8, 32.0)


def test_one_two_and_a_range_on_two_computers_get_disjoint_indices():
    free = free_resources([computer("a"), computer("b")], [])
    one, two, ranged = place(task(1), free), place(task(2), free), place(task(2, 4), free)
    assert one == Placement("a", [0])
    assert two == Placement("a", [1, 2])  # a still has 3 free, the first that fits
    assert ranged == Placement("b", [0, 1, 2, 3])  # b offers 4, a only 1
    assert place(task(2, 4), free) == "no computer has room for 2-4 GPUs, 1 CPU, 0 GB " \
        "(a: 1 GPU, 6 CPUs, 32 GB free; b: 0 GPUs, 7 CPUs, 32 GB free)"
    assert place(task(1, 4), free) == Placement("a", [3])


def test_never_over_allocates_cpu_or_memory():
    free = free_resources([computer("a", gpus=0, cpu=2, memory=3)], [])
    assert isinstance(place(task(cpu=1, memory=2), free), Placement)
    assert isinstance(place(task(cpu=1, memory=2), free), str)
    assert isinstance(place(task(cpu=1), free), Placement)
    assert place(task(cpu=1), free).startswith("no computer has room for 0 GPUs, 1 CPU")


def test_a_pin_is_kept():
    free = free_resources([computer("a"), computer("b")], [])
    assert place(task(1, pin="b"), free) == Placement("b", [0])
    assert place(task(1, pin="c"), free) == "pinned computer 'c' is not alive (known alive: a, b)"


def gang(gpu, gpu_max=None, cpu=1, memory=0.0):
    """A distributed task that may span computers (distr: true, single_node: false)."""
    spread = task(gpu, gpu_max, cpu, memory)
    spread.distr, spread.single_node = True, False
    return spread


def test_a_gang_fits_on_one_computer_when_one_has_room():
    free = free_resources([computer("a"), computer("b")], [])
    assert place(gang(3), free) == Placement("a", [0, 1, 2])


def test_a_gang_is_spread_over_the_fewest_computers_largest_first_in_one_placement():
    free = free_resources([computer("a", gpus=1), computer("b", gpus=3), computer("c", gpus=2)], [])
    where = place(gang(5), free)
    assert where == Placement("b", [0, 1, 2], (Part("b", (0, 1, 2), 0), Part("c", (0, 1), 3)))
    assert free["a"].gpus == [0] and free["b"].gpus == [] and free["c"].gpus == []
    assert free["b"].cpu == free["c"].cpu == 7  # the task's CPUs on each computer


def test_a_ranged_gang_takes_up_to_its_maximum():
    free = free_resources([computer("a", gpus=2), computer("b", gpus=2)], [])
    assert place(gang(3, 8), free).parts == (Part("a", (0, 1), 0), Part("b", (0, 1), 2))


def test_a_gang_that_does_not_fit_waits_and_takes_nothing():
    free = free_resources([computer("a", gpus=1), computer("b", gpus=1, cpu=1)], [])
    before = {name: (list(f.gpus), f.cpu) for name, f in free.items()}
    reason = place(gang(2, cpu=2), free)  # b has a GPU but not the 2 CPUs each part needs
    assert reason.startswith("no computers together have room for 2 GPUs, 2 CPUs, 0 GB per computer")
    assert {name: (list(f.gpus), f.cpu) for name, f in free.items()} == before
    assert isinstance(place(task(2), free), str)  # without single_node: false no spreading at all


def test_free_resources_take_every_part_of_a_gang():
    held = task(cpu=2, memory=1, on="a", gpus=[0])
    held.placement = {"parts": [{"computer": "a", "gpus": [0], "first_rank": 0},
                                {"computer": "b", "gpus": [1, 2], "first_rank": 1}]}
    free = free_resources([computer("a"), computer("b")], [held])
    assert free["a"] == Free("a", [1, 2, 3], 6, 31.0) and free["b"] == Free("b", [0, 3], 6, 31.0)


def test_no_computer_alive():
    assert "no computer is alive" in place(task(), {})


@pytest.mark.parametrize("request_,words", [
    (task(0), "0 GPUs, 1 CPU, 0 GB"), (task(1, cpu=2, memory=1.5), "1 GPU, 2 CPUs, 1.5 GB"),
    (task(2, 4), "2-4 GPUs, 1 CPU, 0 GB")])
def test_describe_request(request_, words):
    assert describe_request(request_) == words


def test_a_gang_record_names_each_computer_part_and_the_group_it_joins():
    from mlcomp import gang as g

    spread = [Part("a", (0, 1), 0), Part("b", (3,), 2)]
    record = g.record(spread, "10.0.0.1")
    assert g.parts(record) == spread and record["world_size"] == 3
    assert g.computers_of("a", record) == ["a", "b"] and g.computers_of("a", None) == ["a"]
    assert g.part_of("b", "a", [0, 1], record) == Part("b", (3,), 2)
    assert g.part_of("c", "a", [0, 1], record) is None
    assert g.part_of("a", "a", [5], None) == Part("a", (5,), 0)  # one computer: the whole task
    group = g.rank_group({**record, "master_port": 29501}, spread[1])
    assert g.group_from_env(g.group_env(group)) == {"world_size": 3, "first_rank": 2,
                                                    "master_addr": "10.0.0.1", "master_port": 29501}
    assert g.group_from_env({}) is None


def test_the_placement_record_is_typed_and_changed_only_into_new_records():
    from mlcomp import gang as g

    stored = g.record([Part("a", (0, 1), 0), Part("b", (3,), 2)], "10.0.0.1")
    placed = g.PlacementRecord.from_json(stored)
    assert placed.parts == (Part("a", (0, 1), 0), Part("b", (3,), 2)) and placed.master_port is None
    later = placed.with_port(29501).with_pid("b", 4242).with_ended("b", "success", "done")
    assert placed.master_port is None and dict(placed.pids) == {} and not placed.ended  # unchanged
    assert later.to_json() == {**stored, "master_port": 29501, "pids": {"b": 4242}, "ended": {"b": ["success", "done"]}}
    assert g.PlacementRecord.from_json(later.to_json()) == later and not later.all_ended()
    assert later.with_ended("a", "success", "ok").all_ended()
    assert g.part_pid(Part("b", (3,), 2), 7, later.to_json()) == 4242 and g.part_pid(Part("a", (0,), 0), 7, None) == 7
    with pytest.raises(ValueError, match="master_addr"):
        g.PlacementRecord.from_json({"parts": [], "world_size": 1})


def test_rendezvous_ports():
    from mlcomp import gang as g

    assert g.parse_ports("29500-29599") == (29500, 29599) and g.parse_ports("7000") == (7000, 7000)
    for bad in ("x-1", "10-5", "0-3", "1-70000"):
        with pytest.raises(ValueError):
            g.parse_ports(bad)
    assert g.pick_port(range(100, 105), used={100}, bindable=lambda p: p != 101) == 102
    assert g.pick_port(range(100, 102), used={100}, bindable=lambda p: False) is None


# --- FreePool: the same choices as place(), without a scan of every computer per task ---------------


def random_request(rng, names):
    """A request of any shape: GPUs (one, several, a range), CPUs, memory, a pin, a gang."""
    low = rng.choice([0, 0, 1, 1, 1, 2, 3, 4, 8, 12])
    high = low + rng.choice([0, 0, 0, 1, 2, 6])
    request = task(low, high, cpu=rng.choice([0, 1, 1, 2, 8, 40]), memory=rng.choice([0.0, 0.0, 1.5, 16.0, 200.0]),
                   pin=rng.choice([None] * 12 + names[:2] + ["gone"]))
    request.distr, request.single_node = rng.random() < 0.3, rng.random() < 0.5
    return request


def random_fleet(rng):
    count = rng.choice([0, 1, 2, 3, 7, 16, 33])
    names = rng.sample([f"n{i:03d}" for i in range(100)], count)  # not in name order
    computers = [computer(name, gpus=rng.choice([0, 1, 2, 4, 8, 8, 16]), cpu=rng.choice([1, 4, 16, 64]),
                          memory=rng.choice([8.0, 64.0, 512.0])) for name in names]
    held = [task(cpu=rng.choice([0, 1, 3]), memory=rng.choice([0.0, 4.0]), on=c.name,
                 gpus=rng.sample(range(len(c.gpus)), rng.randint(0, len(c.gpus))))
            for c in computers if rng.random() < 0.5]
    return free_resources(computers, held), names


@pytest.mark.parametrize("seed", range(40))
def test_a_pool_places_exactly_as_place_does(seed):
    """Random fleets and request sequences: the pool and the plain scan give the same placements
    and waiting reasons, and leave the same free resources, step by step."""
    rng = random.Random(seed)
    for _ in range(4):
        free, names = random_fleet(rng)
        scanned = copy.deepcopy(free)
        pool = FreePool(free)
        for _ in range(40):
            request = random_request(rng, names)
            assert pool.place(request) == place(request, scanned)
            assert free == scanned


def test_a_pool_fills_the_first_computer_first_and_ranges_take_the_most():
    free = free_resources([computer("b", gpus=2), computer("a", gpus=2), computer("c", gpus=4)], [])
    pool = FreePool(free)
    assert pool.place(task(1)) == Placement("a", [0])  # all offer 1: the first name
    assert pool.place(task(1, 4)) == Placement("c", [0, 1, 2, 3])  # c offers the most
    assert pool.place(task(2, 3)) == Placement("b", [0, 1])  # b offers 2, a only 1
    assert pool.place(task(1, 8)) == Placement("a", [1])
    assert pool.place(task(1)) == "no computer has room for 1 GPU, 1 CPU, 0 GB " \
        "(a: 0 GPUs, 6 CPUs, 32 GB free; b: 0 GPUs, 7 CPUs, 32 GB free; c: 0 GPUs, 7 CPUs, 32 GB free)"
    assert pool.place(task(0, cpu=7)) == Placement("b", [])  # a has 6 CPUs left
    assert pool.place(task(1, pin="z")).startswith("pinned computer 'z' is not alive")
    assert "no computer is alive" in FreePool({}).place(task())


def test_a_pool_skips_computers_short_of_cpu_or_memory_and_keeps_gangs_whole():
    free = free_resources([computer("a", gpus=8, cpu=1), computer("b", gpus=8, memory=4.0),
                           computer("c", gpus=2)], [])
    pool = FreePool(free)
    assert pool.place(task(1, cpu=2, memory=8.0)) == Placement("c", [0])
    spread = gang(6, cpu=2, memory=8.0)  # only c has the CPUs and memory, with 1 GPU: it waits
    assert pool.place(spread).startswith("no computers together have room for 6 GPUs, 2 CPUs, 8 GB")
    assert [len(f.gpus) for f in free.values()] == [8, 8, 1]
    assert pool.place(gang(10)).parts == (Part("a", tuple(range(8)), 0), Part("b", (0, 1), 8))
    assert pool.place(task(1)) == Placement("b", [2])  # the tree saw what the gang took
    assert pool.place(task(7)) == "no computer has room for 7 GPUs, 1 CPU, 0 GB " \
        "(a: 0 GPUs, 0 CPUs, 32 GB free; b: 5 GPUs, 6 CPUs, 4 GB free; c: 1 GPU, 6 CPUs, 24 GB free)"


def test_a_pool_places_a_wave_in_time_that_grows_with_tasks_plus_computers():
    """800 one-GPU tasks on 100 computers of 8 GPUs: every GPU once, computers filled in name
    order, and each placement visits a few tree nodes, not every computer."""
    free = free_resources([computer(f"n{i:03d}", gpus=8, cpu=64, memory=512) for i in range(100)], [])
    pool = FreePool(free)
    wave = [pool.place(task(1)) for _ in range(800)]
    assert [(w.computer, w.gpus) for w in wave] == [(f"n{i // 8:03d}", [i % 8]) for i in range(800)]
    assert pool.place(task(1)).startswith("no computer has room for 1 GPU")


# --- the bulk status changes a placing tick uses, and the tick's statements ---------------------------

S = TaskStatus
TASK_FIELDS = ("name", "status", "attempt", "computer", "gpus", "placement", "reason", "waiting_reason", "queued",
               "started", "finished", "updated")
ATTEMPT_FIELDS = ("number", "status", "computer", "gpus", "started", "finished", "reason")


def _life(store, dag_name, mode):
    """The same story told with set_task_status one by one (``mode`` "single"), set_status_many
    ("bulk") or queue_many for the waiting tasks not loaded ("rows"): fresh tasks placed, a running
    task retried in place, a failed one resumed and placed in one transaction."""
    later = Clock()
    later.advance(60)
    with store.begin() as session:
        if session.get(Computer, "a") is None:
            add_computer(session, "a", gpus=4)
        dag = make_dag(session, dag_name)
        fresh, running, failed, other = (add_task(session, dag, n, waiting_reason="waits") for n in "abcd")
        for task in (running, failed):
            task.computer, task.gpus = "a", [3]
            set_task_status(session, task, S.queued, "placed", T0)
            set_task_status(session, task, S.in_progress, "running", T0)
        set_task_status(session, failed, S.failed, "exit 1", T0)
        ids = [t.id for t in (fresh, running, failed, other)]
    placed = {ids[0]: 0, ids[3]: 1, ids[2]: 2}
    with store.begin() as session:
        if mode == "rows":
            running, failed = session.get(Task, ids[1]), session.get(Task, ids[2])
            set_status_many(session, [failed], S.not_ran, "resume", later())
            set_task_status(session, running, S.queued, None, later())
            rows = session.execute(select(Task.id, Task.name, Task.status, Task.attempt, Task.resume_from)
                                   .where(Task.id.in_(placed)).order_by(Task.id)).mappings().all()
            queue_many(session, [dict(row, computer="a", gpus=[placed[row["id"]]], placement=None,
                                      reason="placed on a") for row in rows], later())
            assert failed.status is S.queued and failed.gpus == [2]  # held in the session: kept current
        else:
            fresh, running, failed, other = (session.get(Task, i) for i in ids)
            change = set_status_many if mode == "bulk" else lambda s, tasks, new, why, now: [
                set_task_status(s, t, new, why if isinstance(why, str) else why.get(t.id), now) for t in tasks]
            change(session, [failed], S.not_ran, "resume", later())
            for task in (fresh, other, failed):
                task.computer, task.gpus = "a", [placed[task.id]]
            change(session, [fresh, running, failed, other], S.queued, {i: "placed on a" for i in placed}, later())
    with store.begin() as session:
        tasks = [session.get(Task, i) for i in ids]
        attempts = [session.scalars(select(Attempt).where(Attempt.task_id == i).order_by(Attempt.number)).all()
                    for i in ids]
        return ([tuple(getattr(t, f) for f in TASK_FIELDS[1:]) for t in tasks],
                [[tuple(getattr(a, f) for f in ATTEMPT_FIELDS) for a in rows] for rows in attempts])


def test_set_status_many_and_queue_many_do_what_set_task_status_does_one_by_one(any_store):
    one_by_one = _life(any_store, "single", "single")
    assert _life(any_store, "bulk", "bulk") == one_by_one
    assert _life(any_store, "rows", "rows") == one_by_one
    tasks, attempts = one_by_one
    fields = {f: i for i, f in enumerate(TASK_FIELDS[1:])}
    assert [t[fields["status"]] for t in tasks] == [S.queued] * 4
    assert [t[fields["attempt"]] for t in tasks] == [1, 2, 2, 1]
    assert tasks[0][fields["waiting_reason"]] is None and tasks[1][fields["queued"]] is not None
    assert [(t[fields["computer"]], t[fields["gpus"]]) for t in tasks] == [("a", [0]), ("a", [3]), ("a", [2]),
                                                                          ("a", [1])]
    assert [[a[1] for a in rows] for rows in attempts] == [[S.queued], [S.in_progress, S.queued],
                                                           [S.failed, S.queued], [S.queued]]


def test_queue_many_refuses_tasks_that_are_not_waiting(store):
    with store.begin() as session:
        dag = make_dag(session)
        ids = [add_task(session, dag, name).id for name in ("a", "b")]
    row = dict(id=ids[0], name="a", status=S.not_ran, attempt=1, resume_from=None, computer=None, gpus=[],
               placement=None, reason="placed")
    with pytest.raises(StateError, match=rf"task {ids[0]} \('a'\) cannot be queued from queued"):
        with store.begin() as session:
            queue_many(session, [dict(row, status=S.queued)])
    with pytest.raises(StateError, match=rf"task {ids[1]} \('b'\) cannot go from skipped to queued"):
        with store.begin() as session:  # b's object in the session says skipped: nothing is written
            set_task_status(session, session.get(Task, ids[1]), S.skipped, "test")
            queue_many(session, [row, dict(row, id=ids[1], name="b")])
    with store.begin() as session:
        session.execute(Task.__table__.delete().where(Task.id == ids[0]))
    with pytest.raises(StateError, match="1 of 2 tasks to queue no longer exist"):
        with store.begin() as session:  # read, then deleted: the transaction is void
            queue_many(session, [row, dict(row, id=ids[1], name="b")])
    with store.begin() as session:
        assert session.get(Task, ids[0]) is None and session.get(Task, ids[1]).status is S.not_ran


def test_set_status_many_changes_nothing_when_one_transition_is_illegal(store):
    with store.begin() as session:
        dag = make_dag(session)
        waiting, done = add_task(session, dag, "waiting"), add_task(session, dag, "done")
        set_task_status(session, done, S.queued)
        set_task_status(session, done, S.in_progress)
        set_task_status(session, done, S.success)
        with pytest.raises(StateError, match=rf"task {done.id} \('done'\) cannot go from success to queued"):
            set_status_many(session, [waiting, done], S.queued, "placed")
        assert waiting.status is S.not_ran and waiting.queued is None
        with pytest.raises(ValueError, match="listed twice"):
            set_status_many(session, [waiting, waiting], S.queued)
        assert set_status_many(session, [], S.queued) == []
        assert session.scalars(select(Attempt).where(Attempt.task_id == waiting.id)).all() == []


class QuietBus:
    """Drops the supervisor's messages to workers."""

    def publish(self, channel, ids=()):
        pass

    dispatch = publish


def _tick_statements(tmp_path, computers, tasks):
    """Statements a placing tick runs on a fresh store of ``computers`` computers of 2 GPUs and
    ``tasks`` waiting one-GPU tasks (checking it places one task on every GPU)."""
    root = tmp_path / f"wave{computers}"
    settings = Settings(root=root, db_url=f"sqlite:///{root / 'mlcomp.db'}", heartbeat_ttl=5.0)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    store = make_sessionmaker(engine)
    with store.begin() as session:
        for i in range(computers):
            add_computer(session, f"c{i:02d}", gpus=2, cpu=64, memory=64)
        dag = make_dag(session)
        for i in range(tasks):
            add_task(session, dag, f"t{i}", gpu_min=1, gpu_max=1)
    statements = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listen)
    try:
        placed = Supervisor(settings, store, QuietBus(), now=Clock()).tick()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert len(placed) == 2 * computers
    with store.begin() as session:
        queued = session.scalars(select(Task).where(Task.status == S.queued))
        assert sorted((t.computer, t.gpus[0]) for t in queued) == [(f"c{i:02d}", g) for i in range(computers)
                                                                    for g in (0, 1)]
    engine.dispose()
    return len(statements)


def test_a_placing_tick_runs_as_many_statements_for_a_big_wave_as_for_a_small_one(tmp_path):
    """Placing and queueing tasks is set-based: no statement per task or per computer."""
    assert _tick_statements(tmp_path, computers=20, tasks=100) == _tick_statements(tmp_path, computers=2, tasks=10)


def test_a_waiting_reason_lists_at_most_five_computers_and_sums_the_rest():
    from mlcomp.supervisor.allocate import fleet_state

    free = {f"c{i:03d}": Free(f"c{i:03d}", [0] if i in (7, 42) else [], 1, 16.0) for i in range(100)}
    reason = place(task(gpu=2), free)
    assert reason.startswith("no computer has room for 2 GPUs, 1 CPU, 0 GB (c007: 1 GPU, 1 CPU, 16 GB free; "
                             "c042: 1 GPU, 1 CPU, 16 GB free; c000: 0 GPUs")
    assert reason.endswith("; and 95 more computers: 0 GPUs free)")
    assert fleet_state(list(free.values())[:5]).count(";") == 4  # five: each named
