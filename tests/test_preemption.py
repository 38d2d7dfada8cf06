"""Preemption (mlcomp.supervisor.preempt): the pure planner's rules, the supervisor's tick with the
worker's side played by hand, and real children through an embedded supervisor and worker: a
train task preempted ends with the weights of an uninterrupted run, a bash task restarts, a stop
during the pause, a restarted server, and a gang paused and resumed on other computers."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from mlcomp import control, gang
from mlcomp.db import Attempt, Preemption, Task, TaskStatus, immediate
from mlcomp.errors import StateError
from mlcomp.lifecycle import set_task_status
from mlcomp.supervisor import Supervisor
from mlcomp.supervisor.allocate import Free
from mlcomp.supervisor.preempt import Plan, Running, Waiter, plan
from ml_helpers import write_expdir
from supervisor_helpers import T0, Clock, RecordingBus, add_computer, add_task, make_dag, wait_for, wait_status

S = TaskStatus


# -- the planner ---------------------------------------------------------------------------------
def Run(id: int, computer: str, gpus: list, **fields) -> Running:  # noqa: N802 (reads as the row it builds)
    """A running preemptible task of priority 0 started at T0, with ``fields`` changed."""
    defaults = dict(priority=0, preemptible=True, status=S.in_progress, preempted_by=None, started=T0,
                    last_preempted=None, placement=None, cpu=1, memory=0.0, project="p")
    return Running(id=id, computer=computer, gpus=gpus, **{**defaults, **fields})


def free(**gpus_free) -> dict[str, Free]:
    return {name: Free(name, list(gpus), 8, 64.0) for name, gpus in gpus_free.items()}


def waiter(id=100, priority=10, gpus=1, **request) -> Waiter:
    return Waiter(id=id, priority=priority, gpu_min=gpus, gpu_max=gpus, cpu=1, memory=0.0, **request)


NOW = T0 + dt.timedelta(hours=1)


def test_a_lower_priority_preemptible_task_is_preempted_never_an_equal_or_higher_one():
    running = [Run(1, "a", [0], priority=10), Run(2, "a", [1], priority=3)]
    assert plan([waiter(priority=10)], free(a=[]), running, NOW, 60) == [Plan(100, (2,), ())]
    assert plan([waiter(priority=3)], free(a=[]), running, NOW, 60) == []  # equal: never
    assert plan([waiter(priority=2)], free(a=[]), running, NOW, 60) == []


def test_not_preemptible_recently_preempted_and_stopping_tasks_are_left_alone():
    running = [Run(1, "a", [0], preemptible=False), Run(2, "a", [1], last_preempted=NOW - dt.timedelta(seconds=30)),
               Run(3, "a", [2], status=S.stopping)]
    assert plan([waiter()], free(a=[]), running, NOW, 60) == []
    running[1].last_preempted = NOW - dt.timedelta(seconds=61)  # min_run has passed
    assert plan([waiter()], free(a=[]), running, NOW, 60) == [Plan(100, (2,), ())]


def test_the_fewest_victims_then_the_lowest_priority_then_the_fewest_gpus_then_the_newest():
    later = T0 + dt.timedelta(minutes=5)
    running = [Run(1, "a", [0], priority=1), Run(2, "a", [1], priority=1), Run(3, "b", [0, 1], priority=2),
               Run(4, "c", [0, 1, 2], priority=0)]
    # two GPUs: one task of b or c beats two of a; c's priority is lower
    assert plan([waiter(gpus=2)], free(a=[], b=[], c=[]), running, NOW, 60) == [Plan(100, (4,), ())]
    running[3].priority = 2  # b and c tie on priority: b frees fewer GPUs
    assert plan([waiter(gpus=2)], free(a=[], b=[], c=[]), running, NOW, 60) == [Plan(100, (3,), ())]
    running[1].started = later  # one GPU: a's two tie on priority and GPUs; the newest goes
    assert plan([waiter(gpus=1)], free(a=[], b=[], c=[]), running, NOW, 60) == [Plan(100, (2,), ())]
    # a free GPU beside one victim's GPU is enough
    assert plan([waiter(gpus=2)], free(a=[2], b=[], c=[]), running, NOW, 60) == [Plan(100, (2,), ())]


def test_victims_must_free_one_computer_unless_the_waiting_task_may_spread():
    running = [Run(1, "a", [0]), Run(2, "b", [0])]
    assert plan([waiter(gpus=2)], free(a=[], b=[]), running, NOW, 60) == []
    spread = waiter(gpus=2, distr=True, single_node=False)
    assert plan([spread], free(a=[], b=[]), running, NOW, 60) == [Plan(100, (1, 2), ())]
    assert plan([waiter(computer_pin="b")], free(a=[], b=[]), running, NOW, 60) == [Plan(100, (2,), ())]


def test_a_gang_victim_frees_every_part():
    placement = gang.record([gang.Part("a", (0,), 0), gang.Part("b", (0,), 1)], "a")
    running = [Run(1, "a", [0], placement=placement), Run(2, "c", [0])]
    two = waiter(gpus=2, distr=True, single_node=False)
    assert plan([two], free(a=[], b=[], c=[]), running, NOW, 60) == [Plan(100, (1,), ())]


def test_tasks_pausing_for_a_task_count_as_freed_and_are_not_asked_again():
    running = [Run(1, "a", [0], status=S.stopping, preempted_by=100), Run(2, "a", [1])]
    assert plan([waiter()], free(a=[]), running, NOW, 60) == [Plan(100, (), (1,))]
    # the next waiting task may not count on them: it preempts the other
    assert plan([waiter(), waiter(id=101)], free(a=[]), running, NOW, 60) == [Plan(100, (), (1,)),
                                                                             Plan(101, (2,), ())]


def test_each_victim_is_taken_once_and_hopeless_requests_take_none():
    running = [Run(1, "a", [0])]
    assert plan([waiter(gpus=4), waiter(id=101), waiter(id=102)], free(a=[]), running, NOW, 60) == [
        Plan(101, (1,), ())]


# -- the tick, the worker's part played by hand --------------------------------------------------
def start(store, task_id):
    with store.begin() as session:
        set_task_status(session, session.get(Task, task_id), S.in_progress)


def end_as_worker(store, task_id, returncode=75):
    """What the worker records when the child of ``task_id`` exits (its outcome)."""
    from mlcomp.worker.launch import outcome

    with store.begin() as session:
        task = session.get(Task, task_id)
        result = outcome(returncode, stop_requested=task.status is S.stopping, preempted_by=task.preempted_by)
        set_task_status(session, task, result.status, result.reason)


def get(store, task_id) -> Task:
    with store() as session:
        return session.get(Task, task_id)


def supervisor(settings, store, clock):
    return Supervisor(settings, store, RecordingBus(), now=clock)


@pytest.fixture
def busy(settings, store):
    """One computer with one GPU running a preemptible low-priority task; an urgent one submitted."""
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        dag = make_dag(session)
        low = add_task(session, dag, "low", type="train", gpu_min=1, gpu_max=1, preemptible=True).id
    clock = Clock(T0)
    sup = supervisor(settings, store, clock)
    assert sup.tick() == [(low, "a")]
    start(store, low)
    with store.begin() as session:
        urgent = add_task(session, session.get(Task, low).dag, "urgent", gpu_min=1, gpu_max=1, priority=10).id
    return sup, clock, low, urgent


def test_a_tick_asks_the_victim_to_pause_and_tells_its_computer(settings, store, busy):
    sup, clock, low, urgent = busy
    sup.bus.calls.clear()
    assert sup.tick() == []
    task = get(store, low)
    assert (task.status, task.preempted_by, task.reason) == (S.stopping, urgent, f"preempted by task {urgent}")
    assert ("computer:a", []) in sup.bus.calls
    assert get(store, urgent).waiting_reason == f"waits for task {low} to pause (preempted for it)"
    with store() as session:
        row = session.scalars(select(Preemption)).one()
    assert (row.task_id, row.attempt, row.by_task_id, row.paused, row.resumed) == (low, 1, urgent, None, None)
    sup.tick()  # while it drains nothing more happens, and the reason stays
    assert get(store, urgent).waiting_reason == f"waits for task {low} to pause (preempted for it)"
    with store() as session:
        assert len(session.scalars(select(Preemption)).all()) == 1


def test_the_victim_pauses_the_urgent_task_runs_then_the_victim_resumes_as_a_new_attempt(settings, store, busy):
    sup, clock, low, urgent = busy
    sup.tick()
    end_as_worker(store, low, 75)
    paused = get(store, low)
    assert (paused.status, paused.reason, paused.preempted_by) == (S.paused, f"preempted by task {urgent}", urgent)
    assert sup.tick() == [(urgent, "a")]
    start(store, urgent)
    with store.begin() as session:
        set_task_status(session, session.get(Task, urgent), S.success)
    assert sup.tick() == [(low, "a")]  # ready again: placed as a new attempt
    task = get(store, low)
    assert (task.status, task.attempt, task.preempted_by, task.resume_from) == (S.queued, 2, None, None)
    with store() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.task_id == low).order_by(Attempt.number)).all()
        row = session.scalars(select(Preemption)).one()
    assert [(a.number, a.status) for a in attempts] == [(1, S.paused), (2, S.queued)]
    assert row.paused is not None and row.resumed is not None


def test_nothing_is_preempted_with_the_fifo_scheduler(settings, store, busy):
    sup, clock, low, urgent = busy
    sup.settings = dataclasses.replace(settings, scheduler="fifo")
    sup.tick()
    assert get(store, low).status is S.in_progress


@pytest.mark.parametrize("when", ["pausing", "paused"])
def test_a_stop_while_pausing_or_paused_ends_stopped(settings, store, busy, when):
    sup, clock, low, urgent = busy
    sup.tick()
    if when == "paused":
        end_as_worker(store, low, 75)
    with store.begin() as session:
        control.stop_task(session, low)
    if when == "pausing":
        end_as_worker(store, low, 75)
    task = get(store, low)
    assert (task.status, task.preempted_by, task.attempt) == (S.stopped, None, 1)
    assert sup.tick() == [(urgent, "a")]
    with store.begin() as session:
        control.resume_task(session, low)  # resumed by hand, it resumes as any stopped task
    assert get(store, low).status is S.not_ran


def test_a_task_over_its_project_quota_preempts_nothing(settings, store):
    with store.begin() as session:
        add_computer(session, "a", gpus=1)
        dag = make_dag(session)
        low = add_task(session, dag, "low", type="train", gpu_min=1, gpu_max=1, preemptible=True,
                       status=S.in_progress, computer="a", gpus=[0]).id
        add_task(session, dag, "urgent", gpu_min=1, gpu_max=1, priority=10)
    sup = supervisor(dataclasses.replace(settings, gpu_quota={"p": 1}), store, Clock(T0))  # p holds its one GPU
    sup.tick()
    assert get(store, low).status is S.in_progress


def test_preemption_transitions_are_refused_for_a_task_never_preempted(settings, store, busy):
    sup, clock, low, urgent = busy
    with store.begin() as session:
        task = session.get(Task, low)
        set_task_status(session, task, S.stopping, "stop requested")
        with pytest.raises(StateError, match="it was not preempted"):
            set_task_status(session, task, S.paused)


def test_a_new_supervisor_on_the_same_store_continues_the_preemption(settings, store, busy):
    sup, clock, low, urgent = busy
    sup.tick()
    sup.shutdown()  # the server restarts while the victim pauses
    again = supervisor(settings, store, clock)
    again.tick()
    with store() as session:
        assert len(session.scalars(select(Preemption)).all()) == 1
    end_as_worker(store, low, 75)
    assert again.tick() == [(urgent, "a")]
    assert get(store, low).status is S.paused


# -- real children: an embedded supervisor and worker, and a cluster of workers ------------------
TRAIN_DAG = """\
info: {name: low, project: p, expdir: .}
executors:
  train: {type: train, config: [configs/train.yml, configs/slow.yml], gpu: 1}
"""

URGENT_DAG = """\
info: {name: urgent, project: p, expdir: ., priority: 10}
executors:
  urgent: {type: bash, gpu: GPUS, distr: true, single_node: false, command: 'COMMAND'}
"""


def submit(store, settings, path) -> dict[str, int]:
    with store.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, settings, path)
        return {t.name: t.id for t in dag.tasks}


def urgent_dag(folder, command="true", gpus=1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dag.yml").write_text(URGENT_DAG.replace("COMMAND", command).replace("GPUS", str(gpus)))
    return folder / "dag.yml"


def attempts(store, task_id) -> list[tuple[int, TaskStatus, str]]:
    with store() as session:
        return [(a.number, a.status, a.reason) for a in session.scalars(
            select(Attempt).where(Attempt.task_id == task_id).order_by(Attempt.number))]


def preemptions(store) -> list[Preemption]:
    with store() as session:
        return session.scalars(select(Preemption).order_by(Preemption.id)).all()


def test_a_preempted_train_task_ends_with_the_weights_of_an_uninterrupted_run(settings, store, tmp_path,
                                                                              one_torch_thread):
    import torch
    from mlcomp.runner.checkpoint import load_checkpoint
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config
    from mlcomp.supervisor import run_local
    from test_pipeline import epoch_metrics

    low = submit(store, settings, write_expdir(tmp_path / "exp", TRAIN_DAG, seconds=0.08))["train"]
    with run_local(settings, [0], sessionmaker=store, interval=0.2):
        wait_for(lambda: len(epoch_metrics(store, low)) >= 1, timeout=60)  # inside epoch 2
        urgent = submit(store, settings, urgent_dag(tmp_path / "urgent"))["urgent"]
        done = wait_status(store, low, S.success, S.failed, S.stopped, timeout=90)
    assert done.status is S.success and done.attempt == 2, done.reason
    assert attempts(store, low)[0][1:] == (S.paused, f"preempted by task {urgent}")
    (row,) = preemptions(store)
    ran = get(store, urgent)
    assert (row.task_id, row.attempt, row.by_task_id, ran.status) == (low, 1, urgent, S.success)
    assert row.requested <= row.paused <= ran.started <= row.resumed
    reference = run_config(load_config(tmp_path / "exp/configs/train.yml", tmp_path / "exp/configs/slow.yml",
                                       base=tmp_path / "exp"), logdir=tmp_path / "reference")
    assert done.result["last_metrics"] == reference.epoch_metrics
    mine = load_checkpoint(settings.tasks_dir / str(low) / "logdir/checkpoints/last.pth")["model_state_dict"]
    theirs = load_checkpoint(tmp_path / "reference/checkpoints/last.pth")["model_state_dict"]
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


BASH_DAG = """\
info: {name: low, project: p, expdir: .}
executors:
  loop: {type: bash, gpu: 1, preemptible: PREEMPTIBLE,
         command: 'echo start $MLCOMP_ATTEMPT; if [ $MLCOMP_ATTEMPT = 1 ]; then sleep 600; fi'}
"""


def test_a_preemptible_bash_task_restarts_from_scratch_and_a_default_one_is_never_preempted(settings, store,
                                                                                            tmp_path):
    from mlcomp.db import LogLine
    from mlcomp.supervisor import run_local

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/dag.yml").write_text(BASH_DAG.replace("PREEMPTIBLE", "false"))
    (tmp_path / "go").mkdir()
    (tmp_path / "go/dag.yml").write_text(BASH_DAG.replace("PREEMPTIBLE", "true"))
    with run_local(settings, [0], sessionmaker=store, interval=0.2):
        kept = submit(store, settings, tmp_path / "keep/dag.yml")["loop"]
        wait_status(store, kept, S.in_progress)
        urgent = submit(store, settings, urgent_dag(tmp_path / "urgent"))["urgent"]
        reason = wait_for(lambda: get(store, urgent).waiting_reason, timeout=10)  # a tick has passed
        assert "have room for" in reason and get(store, kept).status is S.in_progress, reason
        with store.begin() as session:
            control.stop_task(session, kept)  # it would run for 600 s: never preempted
        wait_status(store, urgent, S.success, timeout=30)
        loop = submit(store, settings, tmp_path / "go/dag.yml")["loop"]
        wait_status(store, loop, S.in_progress)
        urgent = submit(store, settings, urgent_dag(tmp_path / "urgent2"))["urgent"]
        done = wait_status(store, loop, S.success, S.failed, S.stopped, timeout=60)
    assert done.status is S.success and done.attempt == 2, done.reason
    assert attempts(store, loop)[0][1:] == (S.paused, f"preempted by task {urgent}")
    assert get(store, kept).status is S.stopped
    with store() as session:
        lines = session.scalars(select(LogLine.text).where(LogLine.task_id == loop).order_by(LogLine.id)).all()
    assert [line for line in lines if line.startswith("start")] == ["start 1", "start 2"]


GANG_DAG = """\
info: {name: gang, project: p, expdir: .}
executors:
  gang: {type: bash, gpu: 2, distr: true, single_node: false, preemptible: true,
         command: 'echo rank $MLCOMP_FIRST_RANK attempt $MLCOMP_ATTEMPT; [ $MLCOMP_ATTEMPT != 1 ] || sleep 600'}
"""


@pytest.mark.postgres
@pytest.mark.redis
def test_a_preempted_gang_pauses_every_rank_and_resumes_on_other_computers(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    (tmp_path / "gang").mkdir()
    (tmp_path / "gang/dag.yml").write_text(GANG_DAG)
    gang_id = submit(cluster.store, cluster.settings, tmp_path / "gang/dag.yml")["gang"]
    cluster.supervise()
    running = wait_status(cluster.store, gang_id, S.in_progress, timeout=60)
    assert sorted(p["computer"] for p in running.placement["parts"]) == sorted([a, b])
    go = tmp_path / "GO"
    urgent = submit(cluster.store, cluster.settings, urgent_dag(
        tmp_path / "urgent", f"while [ ! -e {go} ]; do sleep 0.1; done", gpus=2))["urgent"]
    wait_status(cluster.store, urgent, S.in_progress, timeout=60)
    paused = attempts(cluster.store, gang_id)[0]
    assert paused[1:] == (S.paused, f"preempted by task {urgent} (all 2 computers' ranks ended)")
    c, d = cluster.add("c"), cluster.add("d")  # the urgent task holds a and b: the gang resumes there
    done = wait_status(cluster.store, gang_id, S.success, S.failed, S.stopped, timeout=60)
    assert done.status is S.success and done.attempt == 2, done.reason
    assert sorted(p["computer"] for p in done.placement["parts"]) == sorted([c, d])
    go.touch()
    assert wait_status(cluster.store, urgent, S.success, S.failed, timeout=60).status is S.success
    (row,) = preemptions(cluster.store)
    assert (row.task_id, row.by_task_id) == (gang_id, urgent) and row.paused and row.resumed
