"""One distributed task across several computers, on a harness of real ``mlcomp worker``
processes that share only PostgreSQL and Redis (``cluster`` fixture): gang placement that waits
holding nothing, two gloo ranks on two computers ending with the weights of the same two ranks
on one computer, a killed worker failing the whole group and freeing every GPU, killed workers
started again adopting their ranks, a stop before a part started, every rendezvous port taken,
and stop and resume on other computers through the store."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from mlcomp import control
from mlcomp.db import Attempt, LogLine, Metric, Task, TaskStatus, immediate
from mlcomp.lifecycle import ACTIVE
from mlcomp.runner.checkpoint import load_checkpoint
from ml_helpers import write_expdir
from supervisor_helpers import wait_for, wait_status

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
S = TaskStatus


def submit(cluster, path: Path) -> dict[str, int]:
    """Submits the DAG file ``path``; its task ids by name."""
    with cluster.store.begin() as session:
        immediate(session)
        (dag,) = control.submit_dag(session, cluster.settings, path)
        return {t.name: t.id for t in dag.tasks}


def task(cluster, task_id: int) -> Task:
    with cluster.store() as session:
        return session.get(Task, task_id)


def log(cluster, task_id: int) -> list[str]:
    with cluster.store() as session:
        return list(session.scalars(select(LogLine.text).where(LogLine.task_id == task_id).order_by(LogLine.id)))


def holding(cluster) -> list[tuple]:
    """The tasks that hold resources now: (name, computer, gpus, placement)."""
    with cluster.store() as session:
        return session.execute(select(Task.name, Task.computer, Task.gpus, Task.placement)
                               .where(Task.status.in_(ACTIVE))).all()


WAITS = """\
info: {name: waits, project: p, expdir: .}
executors:
  blocker: {type: bash, gpu: 1, computer: {B}, command: 'while [ ! -e {GO} ]; do sleep 0.1; done'}
  gang: {type: bash, gpu: 2, distr: true, single_node: false,
         command: 'echo rank $MLCOMP_FIRST_RANK of $MLCOMP_WORLD_SIZE at $MLCOMP_MASTER_ADDR on $CUDA_VISIBLE_DEVICES'}
  other: {type: bash, gpu: 1, command: 'while [ ! -e {GO} ]; do sleep 0.1; done'}
"""


def test_with_one_computer_free_a_two_computer_task_waits_and_holds_nothing(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    go = tmp_path / "go"
    dag = tmp_path / "waits.yml"
    dag.write_text(WAITS.replace("{B}", b).replace("{GO}", str(go)))
    ids = submit(cluster, dag)
    cluster.supervise()
    # placed in that order in one tick: the gang finds one computer free, waits, and `other` gets a's GPU
    wait_status(cluster.store, ids["other"], S.in_progress, timeout=60)
    waiting = task(cluster, ids["gang"])
    assert waiting.status is S.not_ran and waiting.computer is None and waiting.placement is None
    assert waiting.waiting_reason.startswith("no computers together have room for 2 GPUs"), waiting.waiting_reason
    assert sorted((name, computer, gpus) for name, computer, gpus, _ in holding(cluster)) == \
        [("blocker", b, [0]), ("other", a, [0])]
    go.write_text("")
    done = wait_status(cluster.store, ids["gang"], S.success, S.failed, timeout=60)
    assert done.status is S.success, done.reason
    assert [p["computer"] for p in done.placement["parts"]] == [a, b]
    assert sorted(log(cluster, ids["gang"])) == [f"rank 0 of 2 at {cluster.addresses[a]} on 0",
                                                 f"rank 1 of 2 at {cluster.addresses[a]} on 0"]
    assert holding(cluster) == []


TRAIN = """\
info: {name: NAME, project: p, expdir: .}
executors:
  ref: {type: train, config: CONFIGS, gpu: 2, distr: true, cpu: 2, computer: SOLO}
  gang: {type: train, config: CONFIGS, gpu: 2, distr: true, single_node: false, cpu: 1}
"""
"""The same two-rank run on one computer (``ref``, pinned to the one with two GPUs, placed first,
so the gang cannot fit there) and on two (``gang``); one torch thread per rank in both."""


def train_dag(tmp_path: Path, solo: str, name: str, seconds: float = 0.0) -> Path:
    configs = "[configs/train.yml, configs/slow.yml]" if seconds else "configs/train.yml"
    return write_expdir(tmp_path / name, TRAIN.replace("NAME", name).replace("CONFIGS", configs)
                        .replace("SOLO", solo), seconds=seconds)


def weights(cluster, computer: str, task_id: int, name: str = "last.pth") -> dict[str, torch.Tensor]:
    """The model weights a task's rank 0 saved on ``computer`` (its own root folder)."""
    path = cluster.tasks_dir(computer) / str(task_id) / "logdir" / "checkpoints" / name
    return load_checkpoint(path)["model_state_dict"]


def assert_same_weights(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left), "the weights differ"


def test_two_gloo_ranks_on_two_computers_end_with_the_weights_of_two_ranks_on_one(cluster, tmp_path):
    solo, a, b = cluster.add("solo", gpus="0,1"), cluster.add("a"), cluster.add("b")
    ids = submit(cluster, train_dag(tmp_path, solo, "same"))
    cluster.supervise()
    ref = wait_status(cluster.store, ids["ref"], S.success, S.failed, timeout=240)
    done = wait_status(cluster.store, ids["gang"], S.success, S.failed, timeout=240)
    assert ref.status is S.success and done.status is S.success, (ref.reason, done.reason)
    assert done.placement["parts"] == [{"computer": a, "gpus": [0], "first_rank": 0},
                                       {"computer": b, "gpus": [0], "first_rank": 1}]
    # a free port of rank 0's range (the reference run beside it may hold the first one)
    assert done.placement["master_addr"] == cluster.addresses[a] and 29500 <= done.placement["master_port"] <= 29599
    assert done.result["last_metrics"] == ref.result["last_metrics"]
    assert_same_weights(weights(cluster, a, done.id), weights(cluster, solo, ref.id))
    assert not (cluster.tasks_dir(b) / str(done.id) / "logdir" / "checkpoints").exists()  # only rank 0 writes
    assert holding(cluster) == []


GANG = """\
info: {name: NAME, project: p, expdir: .}
executors:
  gang: {type: train, config: [configs/train.yml, configs/slow.yml], gpu: 2, distr: true, single_node: false,
         cpu: 1}
"""


def test_sigkill_of_one_worker_fails_the_whole_group_within_30_s_and_frees_every_gpu(cluster, tmp_path):
    from mlcomp.worker.process import AttemptFiles
    from ui.queries import list_computers

    a, b = cluster.add("a"), cluster.add("b")
    ids = submit(cluster, write_expdir(tmp_path / "kill", GANG.replace("NAME", "kill"), seconds=1.0))
    cluster.supervise()
    wait_for(lambda: epoch_points(cluster, ids["gang"]), timeout=240)  # both computers' ranks train
    with cluster.store() as session:  # the UI's computers page shows the gang on both computers
        shown = {c["name"]: [(t["id"], t["gpus"]) for t in c["tasks"]] for c in list_computers(session)["computers"]}
    assert shown == {a: [(ids["gang"], [0])], b: [(ids["gang"], [0])]}
    killed = time.monotonic()
    cluster.kill(b)  # the worker only: its rank runs on, unwatched
    failed = wait_status(cluster.store, ids["gang"], S.failed, S.success, S.stopped, timeout=30)
    assert failed.status is S.failed and time.monotonic() - killed <= 30
    assert failed.reason.startswith(f"computer {b!r} silent since"), failed.reason
    assert holding(cluster) == []  # every GPU of both computers is free
    rank0 = AttemptFiles.of(cluster.tasks_dir(a), ids["gang"], 1)
    wait_for(lambda: rank0.live_pid() is None, timeout=30)  # a's worker killed its ranks
    orphan = AttemptFiles.of(cluster.tasks_dir(b), ids["gang"], 1)
    wait_for(lambda: orphan.live_pid() is None, timeout=60)  # b's rank lost its peers and ended


def epoch_points(cluster, task_id: int) -> list:
    with cluster.store() as session:
        return session.scalars(select(Metric.step).where(Metric.task_id == task_id, Metric.kind == "epoch")).all()


def test_stop_and_resume_on_other_computers_ends_with_the_weights_of_an_uninterrupted_run(cluster, tmp_path):
    """Attempt 1 runs on a (rank 0) and b and is stopped inside an epoch; a's worker goes away
    and c comes, so attempt 2 runs on b (rank 0) and c, neither of which has the checkpoint a
    wrote (solo, which ran the reference, goes away too): it comes through the store. The weights equal those of the same two ranks run
    straight through on one computer."""
    from cluster import registered

    solo, a, b = cluster.add("solo", gpus="0,1"), cluster.add("a"), cluster.add("b")
    ids = submit(cluster, train_dag(tmp_path, solo, "resume", seconds=0.3))
    cluster.supervise()
    wait_for(lambda: epoch_points(cluster, ids["gang"]), timeout=240)
    with cluster.store.begin() as session:
        immediate(session)
        control.stop_task(session, ids["gang"])
    stopped = wait_status(cluster.store, ids["gang"], S.stopped, S.failed, S.success, timeout=60)
    assert stopped.status is S.stopped, stopped.reason
    position = load_checkpoint(cluster.tasks_dir(a) / str(stopped.id) / "logdir/checkpoints/last_full.pth")["position"]
    assert not position["epoch_done"]  # stopped inside an epoch
    ref = wait_status(cluster.store, ids["ref"], S.success, S.failed, timeout=240)
    for gone in (a, solo):  # solo's two GPUs would hold the whole resumed gang
        cluster.kill(gone, signal.SIGTERM)
    c = cluster.add("c")
    for gone in (a, solo):
        wait_for(lambda: not registered(cluster.store, gone, time.time() - cluster.settings.heartbeat_ttl), 60)
    with cluster.store.begin() as session:
        immediate(session)
        control.resume_task(session, ids["gang"])
    done = wait_status(cluster.store, ids["gang"], S.success, S.failed, S.stopped, timeout=240)
    assert done.status is S.success and done.attempt == 2 and ref.status is S.success, (done.reason, ref.reason)
    assert [p["computer"] for p in done.placement["parts"]] == [b, c]
    assert done.result["last_metrics"] == ref.result["last_metrics"]
    assert_same_weights(weights(cluster, b, done.id), weights(cluster, solo, ref.id))
    assert_same_weights(weights(cluster, c, done.id, "last_full.pth"), load_checkpoint(
        cluster.tasks_dir(a) / str(done.id) / "logdir/checkpoints/last_full.pth")["model_state_dict"])


FAILS = """\
info: {name: fails, project: p, expdir: .}
executors:
  gang: {type: bash, gpu: 2, distr: true, single_node: false, retries: RETRIES,
         command: 'if [ "$MLCOMP_FIRST_RANK $MLCOMP_ATTEMPT" = "1 1" ]; then exit 3; fi; sleep 600'}
"""


@pytest.mark.parametrize("retries", [0, 1])
def test_a_failing_rank_fails_or_retries_the_whole_group_and_its_other_ranks_are_killed(cluster, tmp_path, retries):
    from mlcomp.worker.process import AttemptFiles

    a, b = cluster.add("a"), cluster.add("b")
    dag = tmp_path / "fails.yml"
    dag.write_text(FAILS.replace("RETRIES", str(retries)))
    ids = submit(cluster, dag)
    cluster.supervise()
    if retries:  # attempt 2 runs both ranks on (rank 1 fails only in attempt 1)
        wait_for(lambda: task(cluster, ids["gang"]).attempt == 2 and
                 AttemptFiles.of(cluster.tasks_dir(b), ids["gang"], 2).live_pid(), timeout=60)
        with cluster.store() as session:
            first = session.scalar(select(Attempt.reason).where(Attempt.task_id == ids["gang"], Attempt.number == 1))
        assert first == f"ranks on {b}: exit code 3"
    else:
        failed = wait_status(cluster.store, ids["gang"], S.failed, S.success, timeout=60)
        assert failed.status is S.failed and failed.reason == f"ranks on {b}: exit code 3"
        assert holding(cluster) == []
    rank0 = AttemptFiles.of(cluster.tasks_dir(a), ids["gang"], 1)
    wait_for(lambda: rank0.live_pid() is None, timeout=30)  # a's worker killed rank 0 of attempt 1


def test_workers_killed_and_restarted_mid_run_adopt_their_ranks_and_the_gang_ends_once(cluster, tmp_path):
    """SIGKILL of each computer's worker in turn (rank 1's, then rank 0's) while the gang trains,
    each started again within ``heartbeat_ttl``: the new workers adopt the running ranks, and the
    task ends successfully in its first attempt with every epoch recorded once."""
    from mlcomp.worker.process import AttemptFiles

    a, b = cluster.add("a"), cluster.add("b")
    ids = submit(cluster, write_expdir(tmp_path / "adopt", GANG.replace("NAME", "adopt"), seconds=0.3))
    cluster.supervise()
    wait_for(lambda: epoch_points(cluster, ids["gang"]), timeout=240)  # both computers' ranks train
    for computer in (b, a):
        cluster.kill(computer)  # the worker only: its ranks run on, unwatched
        cluster.add(computer)  # same name, root and address
        files = AttemptFiles.of(cluster.tasks_dir(computer), ids["gang"], 1)
        wait_for(lambda: files.path("watcher").read_text().split()[0] == str(cluster.workers[computer].pid),
                 timeout=30)  # the new worker follows the ranks it found running
        running = task(cluster, ids["gang"])
        assert running.status is S.in_progress and running.attempt == 1, running.reason
    done = wait_status(cluster.store, ids["gang"], S.success, S.failed, S.stopped, timeout=240)
    assert done.status is S.success and done.attempt == 1, done.reason
    with cluster.store() as session:
        points = session.execute(select(Metric.name, Metric.loader, Metric.step).where(
            Metric.task_id == done.id, Metric.kind == "epoch")).all()
    assert sorted({step for *_, step in points}) == [1, 2, 3, 4] and len(points) == len(set(points))
    assert holding(cluster) == []


SLEEPS = """\
info: {name: sleeps, project: p, expdir: .}
executors:
  gang: {type: bash, gpu: 2, distr: true, single_node: false, command: 'sleep 600'}
"""


def test_a_gang_stopped_before_its_other_part_started_ends_stopped_and_that_part_never_starts(cluster, tmp_path):
    """b's worker is down (its heartbeat still fresh) when the gang is placed on a and b: rank 0
    runs on a, b's part waits in b's queue. The stop ends rank 0; the worker of b, started again,
    ends its part as stopped without starting it, and the task is stopped with every part ended."""
    import dataclasses

    from mlcomp.worker.process import AttemptFiles

    cluster.settings = dataclasses.replace(cluster.settings, heartbeat_ttl=60.0)  # b stays "alive" while down
    a, b = cluster.add("a"), cluster.add("b")
    cluster.kill(b)
    dag = tmp_path / "sleeps.yml"
    dag.write_text(SLEEPS)
    ids = submit(cluster, dag)
    cluster.supervise()
    rank0 = AttemptFiles.of(cluster.tasks_dir(a), ids["gang"], 1)
    wait_for(lambda: rank0.live_pid(), timeout=30)
    with cluster.store.begin() as session:
        immediate(session)
        control.stop_task(session, ids["gang"])
    wait_for(lambda: rank0.exit_status() is not None, timeout=30)
    assert task(cluster, ids["gang"]).status is S.stopping  # b's part has not ended yet
    cluster.add(b)
    done = wait_status(cluster.store, ids["gang"], S.stopped, S.failed, S.success, timeout=30)
    assert done.status is S.stopped and done.reason.endswith("(all 2 computers' ranks ended)"), done.reason
    assert done.placement["ended"][b] == ["stopped", "stopped before its ranks started"]
    assert not AttemptFiles.of(cluster.tasks_dir(b), ids["gang"], 1).started()
    assert holding(cluster) == []


def test_a_gang_whose_rank_0_finds_every_rendezvous_port_taken_fails_saying_so(cluster, tmp_path):
    import socket

    from cluster import free_port

    port = free_port()
    a, b = cluster.add("a", ports=f"{port}-{port}"), cluster.add("b")
    with socket.socket() as taken:  # another program holds the one port of a's range
        taken.bind((cluster.addresses[a], port))
        taken.listen()
        dag = tmp_path / "sleeps.yml"
        dag.write_text(SLEEPS)
        ids = submit(cluster, dag)
        cluster.supervise()
        failed = wait_status(cluster.store, ids["gang"], S.failed, S.success, S.stopped, timeout=30)
    assert failed.status is S.failed
    assert failed.reason == f"cannot start on {a}: MlcompError: no free rendezvous port in {port}-{port} on {a}"
    assert holding(cluster) == []
