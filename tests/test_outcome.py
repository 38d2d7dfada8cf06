"""One typed outcome and one exit table: an executor's outcome → the child's exit code → the
status the worker records (mlcomp.outcome, mlcomp.worker.child, mlcomp.worker.launch)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from executors.base import TaskContext
from executors.train import TrainExecutor
from mlcomp.db import Task, TaskStatus as S
from mlcomp.outcome import (EXIT_CODES, EXIT_NO_SPACE, Failed, Kind, Paused, Stopped, Success, as_outcome,
                            exit_code, kind_of_exit)
from mlcomp.runner import Callback, CallbackOrder, registry
from mlcomp.worker.launch import LaunchSpec, outcome
from mlcomp.worker.process import AttemptFiles
from mlcomp.worker.reason import ReasonLine
from supervisor_helpers import make_dag


def test_the_exit_table_round_trips_and_anything_else_is_a_failure():
    ends = [Success({"n": 1}), Failed("boom"), Stopped("asked to"), Paused("at a rung", Path("last_full.pth"))]
    assert [exit_code(end) for end in ends] == [0, 1, 75, 76]
    assert [kind_of_exit(exit_code(end)) for end in ends] == [end.kind for end in ends] == list(Kind)
    assert set(EXIT_CODES) == set(Kind) and len(set(EXIT_CODES.values())) == len(Kind)
    assert {kind.value for kind in Kind} <= {status.value for status in S}  # each kind names a task status
    assert exit_code(Failed("disk", no_space=True)) == EXIT_NO_SPACE == 74
    assert [kind_of_exit(code) for code in (EXIT_NO_SPACE, 2, -9, None)] == [Kind.failed] * 4
    assert as_outcome({"n": 1}) == Success({"n": 1}) and as_outcome(None) == Success(None)
    assert as_outcome(ends[3]) is ends[3]
    with pytest.raises(TypeError, match="allowed: Success, Failed, Stopped or Paused"):
        exit_code({"stopped": "a dict of the old road"})


class StopAfter(Callback):
    """Asks the run to stop after its global batch ``batch`` (what SIGTERM does in a child)."""

    metric_names = ()

    def __init__(self, batch: int):
        super().__init__(CallbackOrder.External)
        self.batch = batch

    def on_batch_end(self, runner):
        if runner.global_batch_step == self.batch:
            runner.request_stop()


@pytest.fixture
def train(tmp_path, tiny_config, one_torch_thread):
    """Runs a train task's executor in this process on a two-epoch tiny config with ``keys``
    added to its executor config; ``stop_after`` names a batch to stop after."""
    registry.Callback.add(StopAfter)

    def run(stop_after=None, **keys):
        config = tiny_config(num_epochs=2)
        if stop_after is not None:
            config["stages"]["stage1"]["callbacks_params"] = {"stop": {"callback": "StopAfter", "batch": stop_after}}
        context = TaskContext(task_id=1, attempt=1, dag_id=1, name="train", folder=tmp_path, code_dir=tmp_path,
                              config={"config": config, "max_batch_points": 0, **keys})
        return TrainExecutor().run(context)

    yield run
    registry.Callback.remove("StopAfter")


def test_a_train_task_stopped_exits_75_and_is_recorded_stopped(train, tmp_path):
    ended = train(stop_after=2)
    assert isinstance(ended, Stopped) and "after batch 2" in ended.message
    assert ended.checkpoint == tmp_path / "logdir" / "checkpoints" / "last_full.pth" and ended.checkpoint.is_file()
    code = exit_code(ended)
    assert code == 75
    record = outcome(code, stop_requested=True)
    assert (record.status, record.reason) == (S.stopped, "stopped on request (exit code 75)")


def test_a_search_trial_paused_at_its_rung_exits_76_and_is_recorded_paused(train, tmp_path):
    ended = train(pause_at=1)
    assert isinstance(ended, Paused) and ended.message.startswith("paused at a rung of its search: ")
    assert ended.checkpoint == tmp_path / "logdir" / "checkpoints" / "last_full.pth" and ended.checkpoint.is_file()
    record = outcome(exit_code(ended), stop_requested=False)
    assert (record.status, record.reason) == (S.paused, "paused at a rung of its search (exit code 76)")


def test_a_train_task_that_ends_succeeds_with_its_result(train):
    ended = train()
    assert isinstance(ended, Success) and ended.result["epochs"] == 2 and "best" in ended.result["checkpoints"]
    assert outcome(exit_code(ended), stop_requested=False).status is S.success


ENDS = '''
from executors.base import Executor
from mlcomp.outcome import Failed, Paused, Stopped


class Ends(Executor):
    type_name = "ends"

    def run(self, task):
        how = task.config["how"]
        if how == "raise":
            raise ValueError("bad lr 7")
        return {"result": {"n": 1}, "stopped": Stopped("asked to"), "paused": Paused("at rung 1"),
                "failed": Failed("no data")}[how]
'''


@pytest.mark.parametrize("how, code, status, reason, said", [
    ("result", 0, S.success, "exit code 0", None),
    ("stopped", 75, S.stopped, "the task stopped itself (exit code 75)", "mlcomp: asked to"),
    ("paused", 76, S.paused, "paused at a rung of its search (exit code 76)", "mlcomp: at rung 1"),
    ("failed", 1, S.failed, "exit code 1: mlcomp: no data", None),
    ("raise", 1, S.failed, "exit code 1: ValueError: bad lr 7", None),
])
def test_the_child_exits_with_the_code_of_its_outcome_and_the_worker_reads_it_back(
        settings, store, how, code, status, reason, said):
    """A real child process (``python -m mlcomp.worker.child``) runs a DAG folder's executor that
    returns each outcome, or raises; the worker's reading of its exit gives the status."""
    with store.begin() as session:
        task = Task(dag=make_dag(session), name="ends", type="ends", executor_config={"how": how})
        session.add(task)
        session.flush()
        spec = LaunchSpec.for_task(task, settings, None)
    AttemptFiles.of(settings.tasks_dir, spec.task_id, spec.attempt).folder.mkdir(parents=True)  # its journal's
    spec.cwd.mkdir(parents=True)
    (spec.cwd / "ends.py").write_text(ENDS)
    child = subprocess.run(spec.argv, cwd=spec.cwd, env=spec.env, capture_output=True, text=True, timeout=60)
    assert child.returncode == code, child.stderr
    last_error = ReasonLine()
    for line in child.stderr.splitlines():
        last_error.feed(line)
    record = outcome(child.returncode, stop_requested=False, last_error=last_error.value)
    assert (record.status, record.reason) == (status, reason)
    assert (said in child.stdout.splitlines()) if said else "mlcomp: " not in child.stdout
    with store() as session:
        assert session.get(Task, spec.task_id).result == ({"n": 1} if how == "result" else None)
