"""The ML executors without the orchestrator: train submission (configs, params, grid keys),
the reporting callback, resume checkpoint choice, grid leaderboard and best cell, model lookup."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from executors.base import SubmitContext, TaskContext
from mlcomp.search.rollup import best_cell, grid_result, leaderboard
from executors.infer import classification_metrics
from mlcomp.worker.context import resolve_inputs, resolve_resume
from mlcomp.worker.lookup import train_source
from executors.reporting import ReportingCallback
from executors.train import TrainExecutor
from mlcomp.db import Metric, Task, TaskStatus
from mlcomp.errors import ConfigError, DagError, ExecutorError
from ml_helpers import TINY_CONFIG
from supervisor_helpers import add_task, make_dag

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture
def expdir(tmp_path) -> Path:
    folder = tmp_path / "exp"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "train.yml").write_text(TINY_CONFIG)
    (folder / "dag.yml").write_text("executors:\n  train:\n    type: train\n    grid:\n      - lr: [0.1]\n")
    return folder


def context(expdir: Path, cell=None) -> SubmitContext:
    return SubmitContext(file=expdir / "dag.yml", expdir=expdir, dag="d", task="train", path=("executors", "train"),
                         line_of=lambda path: 4 if "grid" in path else 2, grid_cell=cell)


def test_train_validate_applies_params_and_grid_keys_by_suffix_and_path(expdir):
    spec = {"config": "configs/train.yml", "params": {"stages.two.stage_params.num_epochs": 3,
                                                      "model_params": {"hidden": 4}}}
    config = TrainExecutor.validate(spec, context(expdir, {"lr": 0.5, "stages.one.stage_params.num_epochs": 1}))
    stored = config["config"]
    assert stored["stages"]["optimizer_params"]["lr"] == 0.5
    assert stored["stages"]["one"]["stage_params"]["num_epochs"] == 1
    assert stored["stages"]["two"]["stage_params"]["num_epochs"] == 3
    assert stored["model_params"] == {"model": "SimpleNet", "in_features": 8, "hidden": 4, "num_classes": 3}


def test_train_validate_takes_a_relative_expdir_of_params_from_the_dags_expdir(expdir):
    (expdir / "ext").mkdir()
    (expdir / "ext" / "__init__.py").write_text("")
    config = TrainExecutor.validate({"config": "configs/train.yml", "params": {"args.expdir": "ext"}}, context(expdir))
    assert config["expdir"] == "ext" and config["config"]["args"]["expdir"] == "ext"
    assert config["main"] == {"metric": "accuracy01", "minimize": False, "loader": "valid"}
    assert config["max_batch_points"] == 200 and config["processes"] is None


@pytest.mark.parametrize("cell, message", [
    ({"weight_decay": 0.1}, "grid key 'weight_decay': override 'weight_decay' matches no key"),
    ({"num_epochs": 2}, "is ambiguous: it matches stages.one.stage_params.num_epochs"),
])
def test_unknown_or_ambiguous_grid_key_is_a_submission_error_with_file_and_line(expdir, cell, message):
    with pytest.raises(DagError) as error:
        TrainExecutor.validate({"config": "configs/train.yml"}, context(expdir, cell))
    assert f"{expdir / 'dag.yml'}:4: task 'train', key 'grid'" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize("spec, key", [
    ({"config": "configs/missing.yml"}, "config"),
    ({"config": []}, "config"),
    ({"config": "configs/train.yml", "epochs": 3}, "epochs"),
    ({"config": "configs/train.yml", "processes": 0}, "processes"),
    ({"config": "configs/train.yml", "params": {"model_params.model": "NoSuchNet"}}, "config"),
])
def test_bad_train_specs_name_the_key(expdir, spec, key):
    with pytest.raises(DagError, match=f"key '{key}'"):
        TrainExecutor.validate(spec, context(expdir))


def test_env_references_are_expanded_once_by_the_runner_and_in_the_infer_dataset(expdir, tmp_path, monkeypatch):
    import numpy as np

    from executors.infer import InferExecutor
    from mlcomp.errors import ConfigError

    spec = {"config": "configs/train.yml", "params": {"args.logdir": "${MLCOMP_DATA_DIR}/x"}}
    task = task_context(tmp_path)
    task.config = TrainExecutor.validate(spec, context(expdir))
    assert TrainExecutor._config(task)["args"]["logdir"] == "${MLCOMP_DATA_DIR}/x"  # left to run_config
    np.savez(tmp_path / "test.npz", x=np.zeros((3, 8), np.float32), y=np.zeros(3, np.int64))
    monkeypatch.setenv("MLCOMP_DATA_DIR", str(tmp_path))
    task.config = {"dataset": {"dataset": "NpzDataset", "path": "${MLCOMP_DATA_DIR}/test.npz",
                               "keys": {"x": "features", "y": "targets"}}, "batch_size": 2}
    loader = InferExecutor._loaders(task, None)["infer"]
    assert [len(batch["features"]) for batch in loader] == [2, 1]
    monkeypatch.delenv("MLCOMP_DATA_DIR")
    with pytest.raises(ConfigError, match=r"dataset\.path: .*MLCOMP_DATA_DIR, which is not set"):
        InferExecutor._loaders(task, None)


class FakeReporter:
    """Records what a ReportingCallback sends."""

    def __init__(self):
        self.metrics, self.progress_calls, self.checkpoints = [], [], []

    def metric(self, name, value, **kw):
        self.metrics.append(dict(name=name, value=value, **kw))

    def progress(self, value):
        self.progress_calls.append(value)

    def checkpoint(self, path, stage=None, epoch=None, metric=None, size=0):
        self.checkpoints.append(dict(path=path, stage=stage, epoch=epoch, metric=metric, size=size))


def test_reporting_callback_sends_epoch_and_sampled_batch_metrics_progress_and_checkpoints(expdir, tmp_path):
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config

    reporter, ticks = FakeReporter(), iter(range(10_000))
    callback = ReportingCallback(reporter, tmp_path, max_batch_points=2, progress_every=5, clock=lambda: next(ticks))
    runner = run_config(load_config(expdir / "configs" / "train.yml"), logdir=tmp_path / "logdir",
                        extra_callbacks={"report": callback})
    epoch = [m for m in reporter.metrics if m["kind"] == "epoch"]
    assert sorted({m["step"] for m in epoch}) == [1, 2, 3, 4]
    assert {(m["loader"], m["name"]) for m in epoch} >= {("valid", "accuracy01"), ("train", "loss")}
    last = {m["name"]: m["value"] for m in epoch if m["step"] == 4 and m["loader"] == "valid"}
    assert last["accuracy01"] == pytest.approx(runner.epoch_metrics["valid_accuracy01"])
    batch = [m for m in reporter.metrics if m["kind"] == "batch"]
    per_loader_epoch = {}
    for m in batch:
        per_loader_epoch.setdefault((m["loader"], m["epoch"]), set()).add(m["step"])
    assert max(len(steps) for steps in per_loader_epoch.values()) <= 2  # 10 train batches → every 5th
    assert all(isinstance(m["value"], float) for m in batch)
    assert 0 < len(reporter.progress_calls) < 4 * 13 / 2  # throttled: far fewer than the 52 batches
    assert reporter.progress_calls[-1]["eta"] == 0.0 and reporter.progress_calls[-1]["stage"] == "two"
    paths = {c["path"] for c in reporter.checkpoints}
    assert {"logdir/checkpoints/best.pth", "logdir/checkpoints/last_full.pth"} <= paths
    assert all(c["size"] > 0 for c in reporter.checkpoints)


def task_context(tmp_path, attempt=1, resume_from=None) -> TaskContext:
    return TaskContext(task_id=1, attempt=attempt, dag_id=1, name="t", folder=tmp_path, code_dir=tmp_path / "code",
                       resume_from=resume_from)


def test_resume_choice_defaults_to_last_full_from_the_second_attempt(tmp_path):
    logdir = tmp_path / "logdir"
    (logdir / "checkpoints").mkdir(parents=True)
    assert resolve_resume(task_context(tmp_path, attempt=2)) is None  # nothing saved yet: afresh
    for name in ("last_full.pth", "best_full.pth", "other.pth"):
        (logdir / "checkpoints" / name).write_bytes(b"x")
    assert resolve_resume(task_context(tmp_path)) is None
    assert resolve_resume(task_context(tmp_path, attempt=2)) == logdir / "checkpoints" / "last_full.pth"
    assert resolve_resume(task_context(tmp_path, 2, "best")) == logdir / "checkpoints" / "best_full.pth"
    assert resolve_resume(task_context(tmp_path, 2, "logdir/checkpoints/other.pth")) == \
        tmp_path / "logdir/checkpoints/other.pth"
    with pytest.raises(ConfigError, match="missing.pth"):
        resolve_resume(task_context(tmp_path, 2, "missing.pth"))
    (tmp_path / "outside.pth").write_bytes(b"x")  # in the task folder, not in its logdir
    with pytest.raises(ConfigError, match="outside.pth' refused: only files inside"):
        resolve_resume(task_context(tmp_path, 2, "outside.pth"))


def test_the_worker_resolves_the_resume_file_only_for_an_executor_that_resumes(tmp_path):
    from executors.bash import BashExecutor
    from mlcomp.settings import Settings

    (tmp_path / "logdir" / "checkpoints").mkdir(parents=True)
    (tmp_path / "logdir" / "checkpoints" / "last_full.pth").write_bytes(b"x")
    settings = Settings(root=tmp_path / "root", db_url=f"sqlite:///{tmp_path / 'root' / 'db'}")
    context = dataclasses.replace(task_context(tmp_path, attempt=2), settings=settings, data_dir=tmp_path / "data")
    assert resolve_inputs(None, context, TrainExecutor).resume == tmp_path / "logdir" / "checkpoints" / "last_full.pth"
    assert resolve_inputs(None, context, BashExecutor).resume is None
    best = dataclasses.replace(context, resume_from="best")  # no best_full.pth: only a train task fails
    assert resolve_inputs(None, best, BashExecutor).resume is None
    with pytest.raises(ConfigError, match="best_full.pth"):
        resolve_inputs(None, best, TrainExecutor)


def add_grid(session, values, minimize, statuses=None):
    """A grid parent with one train cell per value (a finished result each, None = running)."""
    dag = make_dag(session)
    parent = add_task(session, dag, "search", type="grid_search",
                      executor_config={"template": {"type": "train"}, "parallel": None, "cells": len(values)})
    cells = []
    for i, value in enumerate(values):
        status = (statuses or {}).get(i, TaskStatus.success if value is not None else TaskStatus.in_progress)
        result = None if value is None else {"main_metric": "loss", "minimize": minimize, "best": value,
                                              "valid_loader": "valid"}
        cells.append(add_task(session, dag, f"search x={i}", type="train", parent_id=parent.id, grid_cell={"x": i},
                              status=status, result=result,
                              executor_config={"main": {"metric": "loss", "minimize": minimize, "loader": "valid"}}))
    return dag, parent, cells


@pytest.mark.parametrize("minimize, best", [(True, 1), (False, 2)])
def test_best_cell_follows_the_direction_of_the_main_metric(store, minimize, best):
    with store.begin() as session:
        _, parent, cells = add_grid(session, [0.5, 0.2, 0.9], minimize)
        assert best_cell(session, parent).id == cells[best].id
        values = [row["value"] for row in leaderboard(session, parent)]
        assert values == sorted(values, reverse=not minimize)


def test_leaderboard_ranks_failed_and_running_cells_but_best_cell_needs_success(store):
    with store.begin() as session:
        _, parent, cells = add_grid(session, [0.5, 0.1, None], True, statuses={1: TaskStatus.failed})
        session.add(Metric(task_id=cells[2].id, name="loss", loader="valid", step=1, kind="epoch", value=0.05))
        session.add(Metric(task_id=cells[2].id, name="loss", loader="train", step=1, kind="epoch", value=0.01))
        session.flush()
        rows = leaderboard(session, parent)
        assert [(r["task_id"], r["value"], r["final"]) for r in rows] == [
            (cells[2].id, 0.05, False), (cells[1].id, 0.1, True), (cells[0].id, 0.5, True)]
        assert rows[0]["params"] == {"x": 2} and rows[1]["status"] == "failed"
        assert best_cell(session, parent).id == cells[0].id
        result = grid_result(session, parent)
        assert (result["best_task_id"], result["best_value"], result["metric"]) == (cells[0].id, 0.5, "loss")


def test_train_source_takes_the_best_of_a_train_task_and_a_grid_search(store):
    with store.begin() as session:
        dag, parent, cells = add_grid(session, [0.5, 0.2], True)
        train = add_task(session, dag, "train", type="train", status=TaskStatus.success,
                         result={"main_metric": "loss", "minimize": True, "best": 0.3, "valid_loader": "valid"})
        infer = add_task(session, dag, "infer", type="infer", depends=[train, parent])
        trace = add_task(session, dag, "trace", type="trace", depends=[infer])
        assert train_source(session, infer.id).id == cells[1].id
        assert train_source(session, trace.id).id == cells[1].id  # found through infer
        lonely = add_task(session, dag, "lonely", type="infer")
        with pytest.raises(ExecutorError, match="depends on no train task"):
            train_source(session, lonely.id)


def test_classification_metrics_from_scores_and_labels():
    import torch

    outputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    metrics = classification_metrics(outputs, torch.tensor([0, 1, 1]))
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)
    expected = torch.nn.functional.cross_entropy(outputs, torch.tensor([0, 1, 1]))
    assert float(metrics["loss"]) == pytest.approx(float(expected))
    assert classification_metrics(outputs, torch.tensor([0.5, 1.0, 1.0])) == {}  # no class labels, no criterion


def test_dag_file_with_a_train_grid_is_expanded_and_validated(store, settings, tmp_path, expdir):
    from mlcomp.dag import submit

    (expdir / "dag.yml").write_text(textwrap.dedent("""\
        info: {name: g, project: p, expdir: .}
        executors:
          search:
            type: train
            config: configs/train.yml
            grid:
              - lr: [0.1, 0.01]
              - stages.one.stage_params.num_epochs: [1, 2]
            parallel: 2
        """))
    with store.begin() as session:
        dag = submit(session, settings, expdir / "dag.yml")[0]
        cells = [t for t in dag.tasks if t.parent_id is not None]
        assert len(cells) == 4 and all(isinstance(t, Task) for t in cells)
        assert sorted((c.executor_config["config"]["stages"]["optimizer_params"]["lr"],
                       c.executor_config["config"]["stages"]["one"]["stage_params"]["num_epochs"]) for c in cells) == \
            [(0.01, 1), (0.01, 2), (0.1, 1), (0.1, 2)]


def test_a_grid_over_config_files_sets_the_task_key(expdir):
    (expdir / "configs" / "wide.yml").write_text("model_params: {hidden: 32}\n")
    cell = {"config": ["configs/train.yml", "configs/wide.yml"]}
    spec = TrainExecutor.apply_cell({"config": "configs/train.yml"}, cell, context(expdir, cell))
    config = TrainExecutor.validate(spec, context(expdir, cell))
    assert config["files"] == cell["config"] and config["config"]["model_params"]["hidden"] == 32


def test_a_model_only_checkpoint_warm_starts_the_first_stage(expdir, tmp_path):
    import torch

    from executors.train import _is_full, _warm_start
    from mlcomp.runner import Callback, CallbackOrder
    from mlcomp.runner.config import run_config
    from mlcomp.runner.config_io import load_config

    config = load_config(expdir / "configs" / "train.yml")
    run_config(config, logdir=tmp_path / "first")
    best = tmp_path / "first" / "checkpoints" / "best.pth"
    assert not _is_full(best) and _is_full(tmp_path / "first" / "checkpoints" / "best_full.pth")
    expected = torch.load(best, weights_only=True)["model_state_dict"]
    seen = {}

    class Record(Callback):
        def on_batch_start(self, runner):
            seen.setdefault(runner.stage_name, {k: v.clone() for k, v in runner.model.state_dict().items()})

    _warm_start(config, best)
    run_config(config, logdir=tmp_path / "second", extra_callbacks={"record": Record(CallbackOrder.Internal)})
    assert all(torch.equal(seen["one"][k], v) for k, v in expected.items())
    assert not all(torch.equal(seen["two"][k], v) for k, v in expected.items())  # stage two goes on training


def test_infer_takes_the_infer_loaders_of_the_config_or_the_given_dataset(expdir, tmp_path):
    from executors.infer import InferExecutor
    from mlcomp.runner.config import make_experiment
    from mlcomp.runner.config_io import load_config

    config = load_config(expdir / "configs" / "train.yml")
    config["stages"]["two"]["data_params"] = {"loaders": {"infer_a": {"num_samples": 20}}}
    experiment = make_experiment(config)
    task = task_context(tmp_path)
    task.config = {"dataset": None, "loaders": None, "batch_size": 8}
    assert list(InferExecutor._loaders(task, experiment)) == ["infer_a"]
    task.config = {"dataset": {"dataset": "SyntheticDataset", "num_samples": 12, "num_features": 8},
                   "batch_size": 5}
    loaders = InferExecutor._loaders(task, experiment)
    assert list(loaders) == ["infer"] and [len(b["features"]) for b in loaders["infer"]] == [5, 5, 2]
    task.config = {"dataset": None, "loaders": ["infer_b"], "batch_size": 8}
    with pytest.raises(ExecutorError, match="nothing to predict"):
        InferExecutor._loaders(task, experiment)


@pytest.mark.parametrize("kind, spec, key", [
    ("infer", {"dataset": {"dataset": "NoSuchData"}}, "dataset"),
    ("infer", {"formats": ["parquet"]}, "formats"),
    ("infer", {"batch_size": 0}, "batch_size"),
    ("trace", {"mode": "fast"}, "mode"),
    ("trace", {"script": "yes"}, "script"),
    ("trace", {"checkpoints": "best"}, "checkpoints"),
])
def test_bad_infer_and_trace_specs_name_the_key(expdir, kind, spec, key):
    from executors.registry import get_executor

    with pytest.raises(DagError, match=f"key '{key}'"):
        get_executor(kind).validate(spec, context(expdir))


def test_infer_and_trace_defaults():
    from executors.infer import InferExecutor
    from executors.trace import TraceExecutor

    ctx = context(Path("."))
    assert InferExecutor.validate({}, ctx) == {"checkpoint": "best", "dataset": None, "loaders": None,
                                               "batch_size": 256, "formats": ["npy", "csv"]}
    assert TraceExecutor.validate({}, ctx) == {"checkpoint": "best", "mode": "eval", "method_name": "forward",
                                               "requires_grad": False, "script": False}


def test_predictions_without_targets_have_no_target_column_and_no_metrics(tmp_path):
    import numpy as np
    import torch

    from executors.infer import _write
    from mlcomp.errors import ConfigError
    from mlcomp.runner import SupervisedRunner
    from mlcomp.runner.callbacks import InferCallback

    model = torch.nn.Linear(4, 3)
    batches = [{"features": torch.randn(5, 4)}, {"features": torch.randn(2, 4)}]
    runner = SupervisedRunner().infer(model=model, loaders={"infer": batches},
                                      callbacks=[InferCallback(input_keys=["targets"])])
    assert list(runner.predictions["infer"]) == ["logits"] and not runner.epoch_metrics
    outputs = runner.predictions["infer"]["logits"]
    paths = _write(tmp_path, "infer", outputs, None, ["npy", "csv"])
    assert np.load(paths["infer outputs"]).shape == (7, 3)
    lines = Path(paths["infer predictions"]).read_text().splitlines()
    assert lines[0] == "row,prediction" and len(lines) == 8
    assert lines[1] == f"0,{int(outputs[0].argmax())}"
    assert list(_write(tmp_path / "csv", "x", outputs, None, ["csv"])) == ["x predictions"]
    with pytest.raises(ConfigError, match="batches must be dicts with \\['features'\\].*got \\['x'\\]"):
        SupervisedRunner().infer(model=model, loaders={"infer": [{"x": torch.randn(1, 4)}]})


MARK_CALLBACK = """\
from mlcomp.runner import Callback, CallbackOrder, registry


@registry.Callback
class MarkInferCallback(Callback):
    '''Writes marked = 1 for each batch of an infer stage, 0 elsewhere.'''

    def __init__(self):
        super().__init__(CallbackOrder.Metric)

    def on_batch_end(self, runner):
        runner.batch_metrics["marked"] = float(runner.is_infer_stage)
"""

INFER_STAGE = """\
args: {expdir: mark}
stages:
  infer:
    data_params: {loaders: {infer_a: {num_samples: 37, seed: 3}}}
    callbacks_params:
      mark: {callback: MarkInferCallback}
"""


def test_infer_runs_the_configs_infer_stage_through_the_runner(expdir, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from executors.base import ModelSource
    from executors.infer import InferExecutor
    from mlcomp.runner.checkpoint import load_checkpoint
    from mlcomp.runner.config import make_experiment, run_config
    from mlcomp.runner.config_io import load_config

    (expdir / "mark").mkdir()
    (expdir / "mark" / "__init__.py").write_text(MARK_CALLBACK)
    (expdir / "configs" / "infer.yml").write_text(INFER_STAGE)
    monkeypatch.chdir(expdir)
    logdir = tmp_path / "source" / "logdir"
    run_config(load_config(expdir / "configs" / "train.yml", expdir / "configs" / "infer.yml"), logdir=logdir)
    best = logdir / "checkpoints" / "best.pth"
    task = task_context(tmp_path / "infer")
    task.config = InferExecutor.validate({"batch_size": 8}, context(expdir))
    task.model, task.reporter = ModelSource(3, "train", logdir, best), FakeReporter()
    result = InferExecutor().run(task)

    experiment = make_experiment(load_config(logdir / "config.yml"))
    model = experiment.get_model("infer")
    model.load_state_dict(load_checkpoint(best)["model_state_dict"])
    data = experiment.get_loaders("infer")["infer_a"].dataset
    features, targets = torch.stack([s["features"] for s in data]), torch.stack([s["targets"] for s in data])
    with torch.no_grad():
        expected = model.eval()(features)
    outputs = np.load(result["paths"]["infer_a outputs"])
    assert outputs.shape == (37, 3) and outputs == pytest.approx(expected.numpy(), abs=1e-6)
    rows = Path(result["paths"]["infer_a predictions"]).read_text().splitlines()[1:]
    assert rows == [f"{i},{p},{t}" for i, (p, t) in enumerate(zip(expected.argmax(1).tolist(), targets.tolist()))]
    metrics = result["metrics"]
    assert metrics["infer_a_marked"] == 1.0  # the config's own infer-stage callback ran, in an infer stage
    assert metrics["infer_a_accuracy"] == pytest.approx(float((expected.argmax(1) == targets).float().mean()))
    assert metrics["infer_a_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(expected, targets)),
                                                    rel=1e-5)
    assert metrics["infer_a_accuracy01"] == pytest.approx(metrics["infer_a_accuracy"])  # the stage's shared callback
    reported = {m["name"]: m for m in task.reporter.metrics if m["kind"] == "epoch"}
    assert reported["accuracy"]["value"] == metrics["infer_a_accuracy"]
    assert (reported["accuracy"]["stage"], reported["accuracy"]["loader"]) == ("infer", "infer_a")
    assert result["source_task"] == 3
