"""The ML executors through the orchestrator (an embedded supervisor and a local worker on a
temporary store, real child processes): stop and resume of a train task with exact final
metrics, a worker killed during a task, grid resume, a distributed train task on gloo stopped
and resumed, the digits pipeline end to end (prepare → train + grid search → infer → trace), and
the exit code and message of ``dag submit --wait`` when a task fails."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from mlcomp import control
from mlcomp.db import Checkpoint, LogLine, Metric, Task, TaskStatus, immediate
from mlcomp.supervisor import Supervisor, run_local
from ml_helpers import write_expdir
from supervisor_helpers import wait_for, wait_status

S = TaskStatus
REPO = Path(__file__).resolve().parents[1]

def submit(store, settings, path, sets=()) -> int:
    with store.begin() as session:
        immediate(session)
        return control.submit_dag(session, settings, path, sets)[0].id


def tasks(store, dag_id) -> dict[str, Task]:
    with store() as session:
        return {t.name: t for t in session.scalars(select(Task).where(Task.dag_id == dag_id))}


def epoch_metrics(store, task_id, name="accuracy01", loader="valid") -> list[tuple[int, int, float]]:
    with store() as session:
        return session.execute(select(Metric.attempt, Metric.step, Metric.value)
                               .where(Metric.task_id == task_id, Metric.name == name, Metric.loader == loader,
                                      Metric.kind == "epoch").order_by(Metric.id)).all()


TRAIN_DAG = """\
info: {name: stop, project: p, expdir: .}
executors:
  train:
    type: train
    config: [configs/train.yml, configs/slow.yml]
    gpu: 1
"""


def test_stop_mid_epoch_then_resume_ends_with_the_metrics_of_an_uninterrupted_run(settings, store, tmp_path,
                                                                                   one_torch_thread):
    from mlcomp.runner.checkpoint import load_checkpoint
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config

    dag_file = write_expdir(tmp_path / "exp", TRAIN_DAG, seconds=0.08)
    dag_id = submit(store, settings, dag_file)
    train_id = tasks(store, dag_id)["train"].id
    with run_local(settings, [0], sessionmaker=store, interval=0.2, dag_ids=[dag_id]):
        wait_for(lambda: len(epoch_metrics(store, train_id)) >= 1, timeout=60)  # epoch 1 is done
        with store.begin() as session:
            immediate(session)
            control.stop_task(session, train_id)
        stopped = wait_status(store, train_id, S.stopped, S.failed, S.success, timeout=60)
        assert stopped.status is S.stopped, stopped.reason
        assert stopped.gpus == [0] and stopped.computer is not None
        checkpoint = load_checkpoint(settings.tasks_dir / str(train_id) / "logdir/checkpoints/last_full.pth")
        position = checkpoint["position"]
        assert not position["epoch_done"] and position["global_epoch"] >= 2  # stopped inside an epoch
        with store.begin() as session:
            immediate(session)
            control.resume_task(session, train_id)
        done = wait_status(store, train_id, S.success, S.failed, S.stopped, timeout=60)
    assert done.status is S.success and done.attempt == 2, done.reason
    reference = run_config(load_config(tmp_path / "exp/configs/train.yml", tmp_path / "exp/configs/slow.yml",
                                       base=tmp_path / "exp"),
                           logdir=tmp_path / "reference")
    assert done.result["last_metrics"] == reference.epoch_metrics  # bitwise: same floats
    assert done.result["best"] == reference.best_valid_metrics["accuracy01"]
    series = epoch_metrics(store, train_id)
    assert [step for _, step, _ in series] == [1, 2, 3, 4]  # one axis, no gap, no restart
    assert {attempt for attempt, _, _ in series} == {1, 2}
    assert series[-1][2] == reference.epoch_metrics["valid_accuracy01"]
    with store() as session:
        paths = set(session.scalars(select(Checkpoint.path).where(Checkpoint.task_id == train_id)))
    assert "logdir/checkpoints/last_full.pth" in paths and "logdir/checkpoints/best.pth" in paths


def start_worker(settings, name: str) -> subprocess.Popen:
    env = {**os.environ, "MLCOMP_ROOT": str(settings.root), "MLCOMP_DB_URL": settings.db_url,
           "MLCOMP_HEARTBEAT_TTL": str(settings.heartbeat_ttl)}
    env.pop("MLCOMP_BROKER_URL", None)
    return subprocess.Popen([sys.executable, "-c", "from mlcomp.cli import main; main()", "worker", "--name", name,
                             "--gpus", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_killed_worker_fails_its_task_with_a_reason_and_frees_its_gpu(settings, store, tmp_path):
    dag_file = tmp_path / "dag.yml"
    dag_file.write_text("info: {name: k, project: p, expdir: .}\nexecutors:\n"
                        "  long: {type: bash, command: sleep 60, gpu: 1}\n")
    dag_id = submit(store, settings, dag_file)
    long_id = tasks(store, dag_id)["long"].id
    worker = start_worker(settings, "box")
    supervisor = Supervisor(settings, store, interval=0.2, dag_ids=[dag_id]).start()
    pid = None
    try:
        running = wait_status(store, long_id, S.in_progress, timeout=30)
        pid = running.pid
        assert running.gpus == [0]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        failed = wait_status(store, long_id, S.failed, timeout=30)
    finally:
        supervisor.shutdown()
        if worker.poll() is None:
            worker.kill()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)  # the orphaned child of the killed worker
            except ProcessLookupError:
                pass
    assert "computer 'box' silent since" in failed.reason
    with store() as session:
        holding = session.scalars(select(Task).where(Task.computer == "box", Task.status.in_(
            [S.queued, S.in_progress, S.stopping]))).all()
    assert holding == []  # nothing holds GPU 0 any more


GRID_DAG = """\
info: {name: grid, project: p, expdir: .}
executors:
  cells:
    type: bash
    command: test "$x" = 0 || test -f "$MLCOMP_ROOT/fixed"
    grid:
      - x: [0, 1]
      - y: [a, b]
    parallel: 2
  after:
    type: bash
    command: "true"
    depends: cells
"""


def test_dag_resume_reruns_only_the_failed_grid_cells(settings, store, tmp_path):
    dag_file = tmp_path / "dag.yml"
    dag_file.write_text(GRID_DAG)
    dag_id = submit(store, settings, dag_file)
    with run_local(settings, [], sessionmaker=store, interval=0.2, dag_ids=[dag_id]):
        wait_for(lambda: all(t.status.finished for t in tasks(store, dag_id).values()), timeout=60)
        first = tasks(store, dag_id)
        assert {n: t.status for n, t in first.items()} == {
            "cells": S.failed, "cells x=0 y=a": S.success, "cells x=0 y=b": S.success,
            "cells x=1 y=a": S.failed, "cells x=1 y=b": S.failed, "after": S.skipped}
        assert [row["status"] for row in first["cells"].result["leaderboard"]] == \
            ["success", "success", "failed", "failed"]
        (settings.root / "fixed").write_text("")
        with store.begin() as session:
            immediate(session)
            control.resume_dag(session, dag_id)
        wait_for(lambda: all(t.status is S.success for t in tasks(store, dag_id).values()), timeout=60)
    attempts = {n: t.attempt for n, t in tasks(store, dag_id).items()}
    assert attempts["cells x=0 y=a"] == attempts["cells x=0 y=b"] == 1
    assert attempts["cells x=1 y=a"] == attempts["cells x=1 y=b"] == 2


DISTR_DAG = """\
info: {name: NAME, project: p, expdir: .}
executors:
  train:
    type: train
    config: CONFIGS
    distr: true
    processes: 2
    cpu: 2
"""


def test_distributed_train_task_stops_and_resumes_like_an_uninterrupted_run(settings, store, tmp_path):
    """Two gloo processes per run: the reference runs straight through; the other is stopped
    inside an epoch (both ranks checkpoint the same position), resumed, and ends with the same
    floats, one metric point per epoch (rank 0 reports) on one step axis."""
    from mlcomp.runner.checkpoint import load_checkpoint

    slow = write_expdir(tmp_path / "exp", DISTR_DAG.replace("NAME", "stop").replace(
        "CONFIGS", "[configs/train.yml, configs/slow.yml]"), seconds=0.15)
    reference = slow.with_name("reference.yml")
    reference.write_text(DISTR_DAG.replace("NAME", "reference").replace("CONFIGS", "configs/train.yml"))
    ref_id, stop_id = (tasks(store, submit(store, settings, f))["train"].id for f in (reference, slow))
    with run_local(settings, [], sessionmaker=store, interval=0.2):
        wait_for(lambda: len(epoch_metrics(store, stop_id)) >= 1, timeout=120)
        with store.begin() as session:
            immediate(session)
            control.stop_task(session, stop_id)
        stopped = wait_status(store, stop_id, S.stopped, S.failed, S.success, timeout=60)
        assert stopped.status is S.stopped, stopped.reason
        position = load_checkpoint(settings.tasks_dir / str(stop_id) / "logdir/checkpoints/last_full.pth")["position"]
        assert not position["epoch_done"]  # stopped inside an epoch
        with store.begin() as session:
            immediate(session)
            control.resume_task(session, stop_id)
        done = wait_status(store, stop_id, S.success, S.failed, S.stopped, timeout=120)
        ref = wait_status(store, ref_id, S.success, S.failed, S.stopped, timeout=120)
    assert ref.status is S.success and done.status is S.success and done.attempt == 2, (ref.reason, done.reason)
    assert done.result["last_metrics"] == ref.result["last_metrics"]  # bitwise: same floats
    assert done.result["epochs"] == 4 and done.result["checkpoints"]["best"] == "logdir/checkpoints/best.pth"
    series = epoch_metrics(store, stop_id)
    assert [step for _, step, _ in series] == [1, 2, 3, 4]  # once per epoch (rank 0 only), no gap or restart
    assert {attempt for attempt, _, _ in series} == {1, 2}
    assert [value for _, _, value in series] == [value for _, _, value in epoch_metrics(store, ref_id)]


def test_digits_pipeline_predicts_and_traces_the_best_model(settings, store):
    from mlcomp.runner.trace import load_traced

    quick = "{stages: {warmup: {stage_params: {num_epochs: 1}}, main: {stage_params: {num_epochs: 2}}}}"
    sets = [f"executors.train.params={quick}", f"executors.search.params={quick}",
            "executors.search.grid=[{lr: [0.01]}, {width: [8, 16]}]"]
    dag_id = submit(store, settings, REPO / "dags" / "digits.yml", sets)
    with run_local(settings, [], sessionmaker=store, interval=0.2, dag_ids=[dag_id]):
        wait_for(lambda: all(t.status.finished for t in tasks(store, dag_id).values()), timeout=240)
    found = tasks(store, dag_id)
    assert {n: t.status for n, t in found.items() if t.status is not S.success} == {}
    data = settings.data_dir / "examples"
    assert sorted(p.name for p in data.glob("*.npz")) == ["test.npz", "train.npz", "valid.npz"]
    search = found["search"].result
    assert search["best_task_id"] in {t.id for t in found.values() if t.parent_id == found["search"].id}
    infer = found["infer"].result
    outputs = np.load(infer["paths"]["infer outputs"])
    test_rows = len(np.load(data / "test.npz")["y"])
    assert outputs.shape == (test_rows, 10)
    lines = Path(infer["paths"]["infer predictions"]).read_text().splitlines()
    assert lines[0] == "row,prediction,target" and len(lines) == test_rows + 1
    assert infer["metrics"]["infer_accuracy"] > 0.8
    better = search["best_value"] > found["train"].result["best"]  # accuracy: maximized; a tie keeps `train`
    source = search["best_task_id"] if better else found["train"].id
    assert infer["source_task"] == source  # the better of `train` and the search's best cell
    with store() as session:
        log = session.scalars(select(LogLine.text).where(LogLine.task_id == found["infer"].id)).all()
    assert any(f"model of task {source} " in line for line in log), log
    traced = load_traced(found["trace"].result["paths"]["traced model"])
    import torch

    assert traced(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert found["trace"].result["source_task"] == infer["source_task"]


def test_submit_wait_exits_1_and_says_why_when_infer_has_no_train_run(tmp_path, monkeypatch, capsys):
    from mlcomp.cli import main

    monkeypatch.setenv("MLCOMP_ROOT", str(tmp_path / "root"))
    for name in ("MLCOMP_DB_URL", "MLCOMP_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    dag_file = tmp_path / "dag.yml"
    dag_file.write_text("info: {name: e, project: p, expdir: .}\nexecutors:\n"
                        "  a: {type: bash, command: 'true'}\n  infer: {type: infer, depends: a}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["dag", "submit", str(dag_file), "--wait"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1, out
    assert "'infer': failed" in out and "depends on no train task or grid search of train tasks" in out
