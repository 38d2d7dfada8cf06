"""MLComp's executor API that its example executors import: ``Infer`` and ``Valid`` subclassed as
MLComp's digit-recognizer example does (``create_base``, ``count``, ``adjust_part``, ``save``,
``score``, ``plot``...), their equations (``torch``, ``predict``, ``load``), and the
``ClassificationReportBuilder`` summary that lands in the task's result."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from executors import TaskContext, get_executor
from executors.base import ModelSource
from mlcomp import control, model_registry
from mlcomp.db import Task, TaskStatus, immediate
from mlcomp.errors import ExecutorError
from mlcomp.worker.reports import classification_summary

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATASET = '''
import numpy as np
from torch.utils.data import Dataset


class Rows(Dataset):
    def __init__(self, file, max_count=None):
        data = np.load(file)
        self.x, self.y = data["x"][:max_count], data["y"][:max_count]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"features": self.x[index], "targets": self.y[index]}
'''

EXECUTORS = '''
from copy import deepcopy

import numpy as np

from mlcomp.worker.executors import Executor
from mlcomp.worker.executors.infer import Infer
from mlcomp.worker.executors.valid import Valid
from mlcomp.worker.reports.classification import ClassificationReportBuilder

from dataset import Rows


class Parts:
    def create_base(self):
        self.builder = ClassificationReportBuilder(session=self.session, task=self.task, layout=self.layout,
                                                   name=self.name, plot_count=self.plot_count)
        self.builder.create_base()

    def count(self):
        return len(self.x_source)

    def adjust_part(self, part):
        self.x = deepcopy(self.x_source)
        self.x.x, self.x.y = self.x.x[part[0]:part[1]], self.x.y[part[0]:part[1]]


@Executor.register
class InferRows(Parts, Infer):
    def __init__(self, **kwargs):
        super().__init__(cache_names=["y"], layout="img_classify", **kwargs)
        self.x_source = Rows("data/rows.npz", max_count=self.max_count)

    def plot(self, preds):
        self.builder.process_pred(imgs=None, preds=preds, targets=self.x.y,
                                  attrs=[{"attr1": p.argmax()} for p in preds])


@Executor.register
class ValidRows(Parts, Valid):
    def __init__(self, **kwargs):
        super().__init__(cache_names=["y"], layout="img_classify", **kwargs)
        self.x_source = Rows("data/rows.npz", max_count=self.max_count)
        self.scores = []

    def score(self, preds):
        res = (preds.argmax(axis=1) == self.x.y).astype(np.float64)
        self.scores.extend(res)
        return res

    def score_final(self):
        return np.mean(self.scores)

    def plot(self, preds, scores):
        self.builder.process_pred(imgs=None, preds=preds, targets=self.x.y, scores={"accuracy": scores})

    def plot_final(self, score):
        self.builder.process_scores({"accuracy": score})
'''


CONFIG = {"model_params": {"model": "SimpleNet", "in_features": 8, "hidden": 16, "num_classes": 3},
          "args": {"seed": 3}, "runner_params": {"input_key": "features", "output_key": "logits"},
          "stages": {"data_params": {"dataset": "SyntheticDataset", "num_samples": 64, "num_features": 8,
                                     "num_classes": 3, "batch_size": 16,
                                     "loaders": {"train": {"seed": 1}, "valid": {"seed": 2}}},
                     "criterion_params": {"criterion": "CrossEntropyLoss"},
                     "optimizer_params": {"optimizer": "SGD", "lr": 0.1}, "stage1": {"stage_params": {}}}}
"""One epoch of a SimpleNet on 8-feature blobs of 3 classes."""


class Metrics:
    """A Reporter that keeps the last value of each metric and loader."""

    task_id = 1

    def __init__(self):
        self.values = {}

    def metric(self, name, value, *, loader=None, stage=None, epoch=None, step, kind="epoch"):
        self.values[(name, loader)] = float(value)

    def log(self, *args, **kwargs):
        pass

    progress = checkpoint = flush = close = log


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(model source, the model's state)``: a SimpleNet trained one epoch on 8-feature blobs."""
    import torch

    from mlcomp.runner.config import run_config

    logdir = tmp_path_factory.mktemp("run") / "logdir"
    run_config(CONFIG, logdir=logdir)
    checkpoint = logdir / "checkpoints" / "best.pth"
    state = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    return ModelSource(1, "train", logdir, checkpoint), state


def outputs_of(state, x: np.ndarray) -> np.ndarray:
    """The trained SimpleNet's logits over ``x``, computed here without the executors."""
    import torch

    from mlcomp.runner.models import SimpleNet

    model = SimpleNet(in_features=8, hidden=16, num_classes=3)
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture
def workdir(tmp_path, monkeypatch, write_file):
    """A DAG folder with the user's dataset and executors, as the task's working folder, holding
    ``data/rows.npz`` (20 labelled rows); returns ``(folder, x, y)``."""
    from mlcomp.runner.datasets import SyntheticDataset

    folder = tmp_path / "dag"
    write_file("dag/dataset.py", DATASET)
    write_file("dag/executors/__init__.py", "")
    write_file("dag/executors/rows.py", EXECUTORS)
    data = SyntheticDataset(num_samples=20, num_features=8, num_classes=3, seed=11)
    x = np.stack([np.asarray(data[i]["features"]) for i in range(20)]).astype(np.float32)
    y = np.array([int(data[i]["targets"]) for i in range(20)])
    (folder / "data").mkdir()
    np.savez(folder / "data" / "rows.npz", x=x, y=y)
    monkeypatch.chdir(folder)
    return folder, x, y


def run(type_name: str, spec: dict, folder: Path, model=None, reporter=None) -> dict:
    cls = get_executor(type_name, folder)
    context = TaskContext(1, 1, 1, "t", folder, folder, config=spec, model=model, reporter=reporter)
    return cls().run(context)


def test_infer_saves_every_parts_predictions_in_data_pred_and_reports_them(trained, workdir):
    source, state = trained
    folder, x, y = workdir
    result = run("infer_rows", {"model_name": "m", "suffix": "valid", "part_size": 7, "plot_count": 2},
                 folder, model=source)
    saved = np.load(folder / "data" / "pred" / "m_valid.npy")
    np.testing.assert_allclose(saved, outputs_of(state, x), rtol=1e-5, atol=1e-6)
    report = result["reports"]["m"]
    predicted = saved.argmax(axis=1)
    assert result["rows"] == report["rows"] == 20
    assert report["accuracy"] == pytest.approx(float((predicted == y).mean()))
    assert np.array_equal(report["confusion"], np.bincount(y * 3 + predicted, minlength=9).reshape(3, 3))
    assert report["predicted"] == {str(c): int((predicted == c).sum()) for c in range(3)}
    assert report["samples"] == [{"row": i, "y_pred": int(predicted[i]), "y": int(y[i]), "attr1": int(predicted[i])}
                                 for i in range(2)]


def test_valid_scores_the_tasks_model_and_reports_the_score(trained, workdir):
    source, state = trained
    folder, x, y = workdir
    metrics = Metrics()
    result = run("ValidRows", {"model_name": "m", "part_size": 8, "plot_count": 1, "max_count": 18}, folder,
                 model=source, reporter=metrics)
    accuracy = float((outputs_of(state, x[:18]).argmax(axis=1) == y[:18]).mean())
    assert result["score"] == pytest.approx(accuracy)
    report = result["reports"]["m"]
    assert (report["rows"], report["scores"]) == (18, {"accuracy": pytest.approx(accuracy)})
    assert report["accuracy"] == pytest.approx(accuracy) and len(report["samples"]) == 1
    assert metrics.values[("accuracy", "valid")] == metrics.values[("score", "valid")] == pytest.approx(accuracy)
    last_part = float((outputs_of(state, x[16:18]).argmax(axis=1) == y[16:18]).mean())
    assert metrics.values[("accuracy", "infer")] == pytest.approx(last_part)  # the inference stage's, per part


def test_an_equation_mixes_a_traced_model_and_earlier_predictions(trained, workdir):
    import torch

    from mlcomp.runner.models import SimpleNet

    source, state = trained
    folder, x, y = workdir
    model = SimpleNet(in_features=8, hidden=16, num_classes=3)
    model.load_state_dict(state)
    (folder / "models").mkdir()
    with warnings.catch_warnings():  # TorchScript is deprecated; MLComp's DAGs trace their models
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(model.eval(), torch.from_numpy(x[:2])).save(str(folder / "models" / "net.pth"))
    (folder / "data" / "pred").mkdir()
    earlier = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(folder / "data" / "pred" / "old_valid.npy", earlier)
    spec = {"model_name": "mix", "suffix": "valid", "part_size": 6, "w": 0.25,
            "y": "torch(x, file='net.pth', batch_size=4, activation='softmax') * (1 - w) + load('old_valid.npy') * w"}
    cls = get_executor("infer_rows", folder)
    assert cls.model_checkpoint(spec) is None  # a traced model needs no train run
    assert cls.model_checkpoint({"suffix": "valid"}) == "best"
    run("infer_rows", spec, folder)
    expected = torch.softmax(torch.from_numpy(outputs_of(state, x)), 1).numpy() * 0.75 + earlier * 0.25
    np.testing.assert_allclose(np.load(folder / "data" / "pred" / "mix_valid.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("equation, message", [
    ("__import__('os').getcwd()", "Attribute is not allowed"),
    ("open('data/rows.npz')", "has no function 'open'"),
    ("_solve('1')", "has no function '_solve'"),
    ("z + 1", "equation 'z' refers to itself"),
    ("[i for i in x]", "ListComp is not allowed"),
])
def test_equations_allow_only_arithmetic_over_the_executors_functions(workdir, equation, message):
    folder, x, y = workdir
    with pytest.raises(ExecutorError, match=message):
        run("infer_rows", {"model_name": "m", "y": equation, "z": "z + 1"}, folder)


def test_without_a_model_or_an_equation_the_task_says_what_to_do(workdir):
    folder, x, y = workdir
    with pytest.raises(ExecutorError, match="no model to predict with: start the DAG for a registered model"):
        run("valid_rows", {}, folder)


def test_classification_summary_agrees_with_sklearn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 4, 50), rng.integers(0, 3, 50)  # class 3 is never predicted
    summary = classification_summary(np.bincount(labels * 4 + predicted, minlength=16).reshape(4, 4))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=range(4),
                                                                     zero_division=0)
    assert summary["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert summary["macro_f1"] == pytest.approx(f1.mean())
    for c in range(4):
        assert summary["classes"][str(c)] == {"precision": pytest.approx(precision[c]), "support": support[c],
                                             "recall": pytest.approx(recall[c]), "f1": pytest.approx(f1[c])}


PIPE = """\
info: {name: rows_pipes, project: p, type: pipe, expdir: .}
pipes:
  valid:
    valid: {type: valid_rows, plot_count: 3}
"""


def test_a_registered_model_runs_through_a_pipe_into_valid(store, settings, trained, workdir):
    from mlcomp.runner.checkpoint import load_checkpoint
    from mlcomp.worker.context import WITH_PROJECT, resolve_inputs, task_context
    from mlcomp.worker.lookup import task_logdir

    source, state = trained
    folder, x, y = workdir
    (folder / "train.yml").write_text(yaml.safe_dump(CONFIG))
    (folder / "dag.yml").write_text("info: {name: tiny, project: p, expdir: .}\n"
                                    "executors:\n  train: {type: train, config: train.yml}\n")
    (folder / "pipe.yml").write_text(PIPE)
    with store.begin() as session:
        immediate(session)
        train_id = control.submit_dag(session, settings, folder / "dag.yml")[0].tasks[0].id
        control.submit_dag(session, settings, folder / "pipe.yml")
        session.get(Task, train_id).status = TaskStatus.success
    shutil.copytree(source.logdir, task_logdir(settings, train_id))  # as if the task had trained it
    with store.begin() as session:
        immediate(session)
        model = model_registry.add_model(session, settings, "m", train_id)
        task_id = model_registry.start_model(session, "m", "valid").tasks[0].id
    with store() as session:
        task = session.scalars(select(Task).options(*WITH_PROJECT).where(Task.id == task_id)).one()
        cls = get_executor(task.type, folder)
        context = resolve_inputs(session, task_context(task, settings), cls)
    assert context.model.checkpoint == Path(model.checkpoint)
    assert load_checkpoint(context.model.checkpoint)["model_state_dict"].keys() == state.keys()
    result = cls().run(context)
    accuracy = float((outputs_of(state, x).argmax(axis=1) == y).mean())
    assert result["score"] == pytest.approx(accuracy)
    assert len(result["reports"]["m"]["samples"]) == 3  # model_name reached the executor from the pipe's start
