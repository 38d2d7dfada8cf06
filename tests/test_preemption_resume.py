"""A task on one computer that paused for a preemption resumes from the exact batch on any
computer: the checkpoints a resume reads carried through the store (mlcomp.worker.carry.keep and
fetch), which attempts fetch them, the worker storing them at the end of a preempted task and
not of a stopped or failed one, a preempted train task resumed on another computer of a cluster with the
weights of an uninterrupted run, and a victim whose computer went silent while it paused."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch
from sqlalchemy import select

from executors import get_executor
from mlcomp import control
from mlcomp.db import Checkpoint, Preemption, SnapshotBlob, Task, TaskStatus, immediate, utcnow
from mlcomp.runner.checkpoint import load_checkpoint
from mlcomp.worker.carry import fetch, keep
from mlcomp.worker.context import fetches_carried
from ml_helpers import write_expdir
from supervisor_helpers import Clock, RecordingBus, add_computer, add_task, make_dag, wait_for, wait_status

S = TaskStatus
LAST_FULL, BEST, LAST = ("logdir/checkpoints/last_full.pth", "logdir/checkpoints/best.pth",
                         "logdir/checkpoints/last.pth")


# -- the store's part ----------------------------------------------------------------------------
def record(store, task_id, folder, path, content: bytes, attempt=1) -> None:
    """A checkpoint written in ``folder`` and its record, as the train executor reports one."""
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_bytes(content)
    with store.begin() as session:
        session.add(Checkpoint(task_id=task_id, attempt=attempt, path=path, size=len(content), created=utcnow()))


def blobs(store) -> set[bytes]:
    with store() as session:
        return set(session.scalars(select(SnapshotBlob.content)))


def stored_sha(store, task_id, path=LAST_FULL) -> str | None:
    with store() as session:
        return session.scalars(select(Checkpoint.sha256).where(Checkpoint.task_id == task_id, Checkpoint.path == path)
                               .order_by(Checkpoint.id.desc())).first()


@pytest.fixture
def task_id(store):
    with store.begin() as session:
        return add_task(session, make_dag(session), "train", type="train").id


def test_keep_stores_what_a_resume_reads_once_per_path_and_replaces_it(store, task_id, tmp_path):
    here = tmp_path / "a"
    for path, content in ((LAST_FULL, b"position 1"), (BEST, b"best 1"), (LAST, b"model 1")):
        record(store, task_id, here, path, content)
    with store.begin() as session:
        assert keep(session, task_id, here) == [BEST, LAST_FULL]  # last.pth: no resume reads it
        assert keep(session, task_id, here) == []  # the same content: nothing to do
    assert blobs(store) == {b"position 1", b"best 1"}
    record(store, task_id, here, LAST_FULL, b"position 2")
    (here / BEST).unlink()  # a file gone stays as stored
    with store.begin() as session:
        assert keep(session, task_id, here) == [LAST_FULL]
    assert blobs(store) == {b"position 2", b"best 1"}  # one copy per path: the latest


def test_fetch_writes_a_missing_or_stale_copy_and_keeps_one_a_later_attempt_wrote(store, task_id, tmp_path):
    here, there = tmp_path / "a", tmp_path / "b"
    record(store, task_id, here, LAST_FULL, b"paused at batch 7")
    with store.begin() as session:
        keep(session, task_id, here)
    with store() as session:
        assert fetch(session, task_id, there) == [LAST_FULL]  # missing
        assert fetch(session, task_id, there) == []  # the same bytes
    (there / LAST_FULL).write_bytes(b"an older attempt's")
    with store() as session:
        assert fetch(session, task_id, there) == [LAST_FULL]  # stale: the stored one is the newest record
    assert (there / LAST_FULL).read_bytes() == b"paused at batch 7"
    record(store, task_id, there, LAST_FULL, b"attempt 2, epoch 3", attempt=2)  # written on b, then b failed
    with store() as session:
        assert fetch(session, task_id, there) == []  # may be newer than the stored one: kept
        assert fetch(session, task_id, tmp_path / "c") == [LAST_FULL]  # better than nothing
    assert (there / LAST_FULL).read_bytes() == b"attempt 2, epoch 3"


@pytest.mark.parametrize("kind, attempt, resume_from, group, fetches", [
    ("train", 1, None, None, False), ("train", 2, None, None, True), ("train", 3, "last", None, True),
    ("train", 2, "best", None, False), ("bash", 2, None, None, False), ("bash", 2, None, {"rank": 0}, True)])
def test_later_attempts_of_resumable_executors_resuming_from_last_and_of_gangs_fetch(kind, attempt, resume_from,
                                                                                     group, fetches):
    context = SimpleNamespace(attempt=attempt, resume_from=resume_from, group=group)
    assert fetches_carried(context, get_executor(kind)) is fetches


# -- the worker's part ---------------------------------------------------------------------------
JOB = """\
import sys
import time
from pathlib import Path


def end(task, code):
    path = Path(task.folder) / "logdir/checkpoints/last_full.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"batch 7 of epoch 2")
    task.reporter.checkpoint("logdir/checkpoints/last_full.pth", size=18)
    task.reporter.flush()
    if code is None:
        time.sleep(60)  # until the worker stops it
    sys.exit(code)
"""


def preempt(store, task_id) -> None:
    """Asks the running task to pause for a new task, as the supervisor's preemption does."""
    from mlcomp.lifecycle import set_task_status

    wait_for(lambda: stored_records(store, task_id))
    with store.begin() as session:
        immediate(session)
        task = session.get(Task, task_id)
        urgent = Task(dag_id=task.dag_id, name="urgent", type="bash", executor_config={"command": "true"})
        session.add(urgent)
        session.flush()
        task.preempted_by = urgent.id
        session.add(Preemption(task_id=task_id, attempt=1, by_task_id=urgent.id, requested=utcnow()))
        set_task_status(session, task, S.stopping, f"preempted by task {urgent.id}")


def stored_records(store, task_id) -> list:
    with store() as session:
        return session.scalars(select(Checkpoint.id).where(Checkpoint.task_id == task_id)).all()


@pytest.mark.parametrize("code, status, stored", [(None, S.paused, True), (75, S.stopped, False),
                                                  (1, S.failed, False)], ids=["preempted", "stopped", "failed"])
def test_the_worker_stores_the_checkpoint_of_a_preempted_task_only(settings, store, code, status, stored):
    """A task paused for a preemption is placed again by the supervisor, maybe on another computer:
    its checkpoint goes to the store; a stopped or failed task's does not (a user resumes it)."""
    from mlcomp.worker import Worker
    from test_worker import add_task as queue_task

    task_id = queue_task(store, type="python", config={"function": "job:end", "kwargs": {"code": code}},
                         code={"job.py": JOB}, settings=settings)
    worker = Worker(settings, store, name="pc", gpus=[0], poll=0.05).start()
    try:
        if code is None:
            preempt(store, task_id)
            worker.wake()
        assert wait_status(store, task_id, S.paused, S.stopped, S.failed, S.success).status is status
    finally:
        worker.shutdown()
    content = (settings.tasks_dir / str(task_id) / LAST_FULL).read_bytes()
    assert stored_sha(store, task_id) == (hashlib.sha256(content).hexdigest() if stored else None)
    assert blobs(store) == ({content} if stored else set())


# -- a preempted train task resumes on another computer ------------------------------------------
TRAIN_DAG = """\
info: {name: low, project: p, expdir: .}
executors:
  train: {type: train, config: [configs/train.yml, configs/slow.yml], gpu: 1}
"""


def submit(store, settings, path) -> dict[str, int]:
    with store.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, settings, path)
        return {t.name: t.id for t in dag.tasks}


def epoch_steps(store, task_id) -> list[tuple[int, int]]:
    """The (attempt, epoch) of each valid accuracy the task reported."""
    from test_pipeline import epoch_metrics

    return [(attempt, step) for attempt, step, _ in epoch_metrics(store, task_id)]


def reference_weights(expdir, logdir) -> dict[str, torch.Tensor]:
    """The final weights of the task's config run straight through in this process (without the
    callback that only sleeps)."""
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config

    run_config(load_config(expdir / "configs/train.yml", base=expdir), logdir=logdir)
    return load_checkpoint(logdir / "checkpoints/last.pth")["model_state_dict"]


def assert_same_weights(path, reference: dict) -> None:
    mine = load_checkpoint(path)["model_state_dict"]
    assert mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine)


URGENT_DAG = """\
info: {name: urgent, project: p, expdir: ., priority: 10}
executors:
  urgent: {type: bash, gpu: 1, command: 'while [ ! -e GO ]; do sleep 0.1; done'}
"""


@pytest.mark.postgres
@pytest.mark.redis
def test_a_preempted_train_task_resumes_on_another_computer_from_the_exact_batch(cluster, tmp_path,
                                                                                 one_torch_thread):
    """Attempt 1 runs on a, the only computer, and is preempted inside epoch 2 by a task that then
    holds a's one GPU; b comes, with its own root folder: attempt 2 runs there from the checkpoint
    a wrote at the pause, and the weights equal those of the run straight through."""
    store = cluster.store
    a = cluster.add("a")
    low = submit(store, cluster.settings, write_expdir(tmp_path / "exp", TRAIN_DAG, seconds=0.1))["train"]
    cluster.supervise()
    wait_for(lambda: epoch_steps(store, low), timeout=120)  # inside epoch 2
    go = tmp_path / "GO"
    (tmp_path / "urgent").mkdir()
    (tmp_path / "urgent/dag.yml").write_text(URGENT_DAG.replace("GO", str(go)))
    urgent = submit(store, cluster.settings, tmp_path / "urgent/dag.yml")["urgent"]
    assert wait_status(store, urgent, S.in_progress, timeout=60).computer == a
    paused = wait_status(store, low, S.paused, timeout=10)
    assert (paused.reason, paused.attempt) == (f"preempted by task {urgent}", 1)
    at_a = cluster.tasks_dir(a) / str(low) / LAST_FULL
    assert not load_checkpoint(at_a)["position"]["epoch_done"]  # paused inside an epoch
    assert stored_sha(store, low) == hashlib.sha256(at_a.read_bytes()).hexdigest()
    b = cluster.add("b")
    done = wait_status(store, low, S.success, S.failed, S.stopped, timeout=120)
    assert (done.status, done.attempt, done.computer) == (S.success, 2, b), done.reason
    steps = epoch_steps(store, low)
    assert [step for _, step in steps] == [1, 2, 3, 4] and steps[1][0] == 2  # epoch 2 ended on b
    assert_same_weights(cluster.tasks_dir(b) / str(low) / "logdir/checkpoints/last.pth",
                        reference_weights(tmp_path / "exp", tmp_path / "ref"))
    go.touch()
    assert wait_status(store, urgent, S.success, S.failed, timeout=60).status is S.success


# -- a victim whose computer goes silent while it pauses -----------------------------------------
def test_a_victim_whose_computer_went_silent_while_pausing_ends_paused_and_comes_back(settings, store):
    from mlcomp.lifecycle import set_task_status
    from mlcomp.supervisor import Supervisor

    clock = Clock()
    with store.begin() as session:
        add_computer(session, "a", gpus=2)
        dag = make_dag(session)
        low = add_task(session, dag, "low", type="train", gpu_min=1, gpu_max=1, preemptible=True).id
        other = add_task(session, dag, "other", gpu_min=1, gpu_max=1, preemptible=False).id
    sup = Supervisor(settings, store, RecordingBus(), now=clock)
    assert sorted(sup.tick()) == [(low, "a"), (other, "a")]
    with store.begin() as session:
        for task_id in (low, other):
            set_task_status(session, session.get(Task, task_id), S.in_progress, now=clock())
        urgent = add_task(session, session.get(Task, low).dag, "urgent", gpu_min=1, gpu_max=1, priority=10).id
        control.stop_task(session, other)  # stopping without a preemption
    sup.tick()
    assert get(store, low).status is S.stopping and get(store, low).preempted_by == urgent
    clock.advance(settings.heartbeat_ttl + 1)  # a falls silent; b comes up with one GPU
    with store.begin() as session:
        add_computer(session, "b", gpus=1, heartbeat=clock())
    assert sup.tick() == [(urgent, "b")]  # first in the queue
    paused, stopped = get(store, low), get(store, other)
    assert paused.status is S.paused and paused.preempted_by == urgent
    assert paused.reason.startswith(f"preempted by task {urgent}; computer 'a' went silent (computer 'a' silent "
                                    f"since 2026-01-01 12:00:00 UTC"), paused.reason
    assert stopped.status is S.stopped and stopped.reason.startswith("computer 'a' silent since")
    with store() as session:
        (row,) = session.scalars(select(Preemption)).all()
    assert (row.task_id, row.attempt, row.by_task_id) == (low, 1, urgent) and row.paused is not None
    with store.begin() as session:  # c comes up: the paused task is placed by itself, as a new attempt
        add_computer(session, "c", gpus=1, heartbeat=clock())
    assert sup.tick() == [(low, "c")]
    task = get(store, low)
    assert (task.status, task.attempt, task.resume_from, task.preempted_by) == (S.queued, 2, None, None)


def get(store, task_id) -> Task:
    with store() as session:
        return session.get(Task, task_id)
