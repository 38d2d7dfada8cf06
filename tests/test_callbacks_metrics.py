"""Metric callbacks through the runner: values against scikit-learn on the loader, no host sync
per batch, exact loader-level statistics, stop/resume, and configuration errors."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from runner_utils import StopAt
from sklearn import metrics as skm
from torch.utils.data import DataLoader, Dataset

from mlcomp.errors import ConfigError
from mlcomp.runner import Callback, CallbackOrder, RunStopped, SupervisedRunner
from mlcomp.runner.callbacks import (AccuracyCallback, AUCCallback, ConfusionMatrixCallback, DiceCallback,
                                     F1ScoreCallback, IouCallback, JaccardCallback, MapKCallback,
                                     MultiLabelAccuracyCallback)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ThreeClasses(Dataset):
    """Dict samples: ``features`` [6], ``targets`` (class), ``onehot`` [3] float."""

    def __init__(self, n: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=generator)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        onehot = torch.nn.functional.one_hot(self.y[i], 3).float()
        return {"features": self.x[i], "targets": self.y[i], "onehot": onehot}


def loaders():
    return OrderedDict(train=DataLoader(ThreeClasses(96, 0), batch_size=16, shuffle=True),
                       valid=DataLoader(ThreeClasses(60, 1), batch_size=16))


def model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


class Capture(Callback):
    """Keeps the last valid loader's logits/targets, the types of batch metrics, the loader metrics."""

    def __init__(self):
        super().__init__(CallbackOrder.External)
        self.logits, self.targets, self.types, self.loader_metrics = [], [], set(), {}

    def on_loader_start(self, runner):
        if runner.is_valid_loader:
            self.logits, self.targets = [], []

    def on_batch_end(self, runner):
        self.types |= {(key, type(value).__name__) for key, value in runner.batch_metrics.items()}
        if runner.is_valid_loader:
            self.logits.append(runner.output["logits"].detach())
            self.targets.append(runner.input["targets"])

    def on_loader_end(self, runner):
        self.loader_metrics[runner.loader_name] = dict(runner.loader_metrics)


def metric_callbacks():
    return OrderedDict(
        accuracy=AccuracyCallback(topk_args=(1, 3)),
        multilabel=MultiLabelAccuracyCallback(input_key="onehot"),
        map=MapKCallback(topk_args=(1, 2)),
        auc=AUCCallback(input_key="onehot"),
        f1=F1ScoreCallback(input_key="onehot", threshold=0.5),
        dice=DiceCallback(input_key="onehot", threshold=0.5),
        iou=IouCallback(input_key="onehot", threshold=0.5),
        soft_dice=DiceCallback(input_key="onehot", prefix="soft_dice"),
        cm=ConfusionMatrixCallback(num_classes=3, class_names=["a", "b", "c"]),
    )


def train(logdir, callbacks, **kwargs):
    net = model()
    runner = SupervisedRunner()
    runner.train(model=net, loaders=loaders(), criterion=torch.nn.CrossEntropyLoss(),
                 optimizer=torch.optim.Adam(net.parameters(), lr=0.02), logdir=logdir, num_epochs=2,
                 callbacks=callbacks, **kwargs)
    return runner


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    capture = Capture()
    callbacks = metric_callbacks()
    callbacks["capture"] = capture
    runner = train(tmp_path_factory.mktemp("metrics"), callbacks, main_metric="auc/mean", minimize_metric=False)
    return runner, callbacks, capture


def test_loader_values_match_sklearn(trained):
    runner, _, capture = trained
    logits, targets = torch.cat(capture.logits), torch.cat(capture.targets)
    onehot = torch.nn.functional.one_hot(targets, 3).numpy()
    predicted = (torch.sigmoid(logits) > 0.5).long().numpy()
    m = runner.epoch_metrics
    assert m["valid_accuracy01"] == pytest.approx(skm.accuracy_score(targets, logits.argmax(1)), abs=1e-6)
    assert m["valid_accuracy03"] == pytest.approx(1.0)
    top1, top2 = (skm.top_k_accuracy_score(targets, logits, k=k) for k in (1, 2))
    assert m["valid_map02"] == pytest.approx(top1 + (top2 - top1) / 2, abs=1e-6)  # AP@2 = 1 or 1/2 or 0
    assert m["valid_multi_label_accuracy"] == pytest.approx((predicted == onehot).mean(), abs=1e-6)
    aucs = skm.roc_auc_score(onehot, logits.numpy(), average=None)
    for i in range(3):
        assert m[f"valid_auc/class_{i:02}"] == pytest.approx(aucs[i], abs=1e-9)
    assert m["valid_auc/mean"] == pytest.approx(aucs.mean(), abs=1e-9)
    f1 = skm.f1_score(onehot.ravel(), predicted.ravel())
    assert m["valid_f1_score"] == pytest.approx(f1, abs=1e-6)
    assert m["valid_dice"] == pytest.approx(f1, abs=1e-6)
    assert m["valid_iou"] == pytest.approx(skm.jaccard_score(onehot.ravel(), predicted.ravel()), abs=1e-6)
    p = torch.sigmoid(logits).numpy()
    assert m["valid_soft_dice"] == pytest.approx(2 * (p * onehot).sum() / (p.sum() + onehot.sum()), abs=1e-6)
    assert runner.best_valid_metrics["auc/mean"] >= m["valid_auc/mean"] - 1e-12


def test_batch_metrics_are_device_tensors(trained):
    _, _, capture = trained
    types = dict(capture.types)
    for key in ("accuracy01", "map01", "f1_score", "dice", "iou", "multi_label_accuracy"):
        assert types[key] == "Tensor", key
    assert not any(key.startswith("auc") for key in types)  # loader-level only


def test_overlap_loader_value_is_of_summed_statistics_not_a_mean_of_batches(trained):
    _, callbacks, capture = trained
    logits, targets = torch.cat(capture.logits), torch.cat(capture.targets)
    onehot = torch.nn.functional.one_hot(targets, 3).float()
    dice = callbacks["dice"]
    batch_dices = [dice.metrics(dice.statistics(lg, t)) for lg, t in zip(logits.split(16), onehot.split(16))]
    weights = torch.tensor([len(t) for t in onehot.split(16)], dtype=torch.float64)
    batch_mean = float((torch.stack(batch_dices).double() * weights).sum() / weights.sum())
    assert capture.loader_metrics["valid"]["dice"] != pytest.approx(batch_mean, abs=1e-9)


def test_confusion_matrix_files_and_attribute(trained):
    runner, callbacks, capture = trained
    logits, targets = torch.cat(capture.logits), torch.cat(capture.targets)
    expected = skm.confusion_matrix(targets, logits.argmax(1), labels=range(3))
    cm = callbacks["cm"]
    assert cm.matrices["valid"].tolist() == expected.tolist()
    stem = runner.logdir / "confusion_matrix" / "train.2.valid"
    assert np.load(f"{stem}.npy").tolist() == expected.tolist()
    lines = Path(f"{stem}.csv").read_text().splitlines()
    assert lines[0] == "a,b,c" and [int(v) for v in lines[1].split(",")] == expected[0].tolist()
    assert cm.matrices["train"].sum() == 96


def test_stopped_and_resumed_run_has_the_same_loader_metrics(tmp_path, trained):
    """Stop in the middle of the second epoch's valid loader: AUC samples, F1 statistics and the
    confusion matrix so far travel in the checkpoint."""
    reference, _, _ = trained
    with pytest.raises(RunStopped) as stopped:
        train(tmp_path, OrderedDict(metric_callbacks(), stop=StopAt(6 + 4 + 6 + 2)),
              main_metric="auc/mean", minimize_metric=False)
    assert stopped.value.loader == "valid" and stopped.value.batch == 2
    resumed = train(tmp_path, metric_callbacks(), main_metric="auc/mean", minimize_metric=False,
                    resume=str(stopped.value.checkpoint))
    for key, value in reference.epoch_metrics.items():
        if not key.endswith("loss"):
            assert resumed.epoch_metrics[key] == pytest.approx(value, abs=1e-9), key


def test_jaccard_is_iou():
    assert JaccardCallback is IouCallback


@pytest.mark.parametrize("make, message", [
    (lambda: AccuracyCallback(topk_args=[0]), "topk"),
    (lambda: AccuracyCallback(activation="relu"), "activation"),
    (lambda: MapKCallback(topk_args=["a"]), "topk"),
    (lambda: DiceCallback(prefix=3), "prefix"),
    (lambda: ConfusionMatrixCallback(), "num_classes"),
    (lambda: ConfusionMatrixCallback(num_classes=2, class_names=["a", "b", "c"]), "class_names"),
])
def test_bad_arguments_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_missing_key_names_the_key_and_the_batch_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"no key 'labels'.*features"):
        train(None, OrderedDict(f1=F1ScoreCallback(input_key="labels")))


def test_default_topk_from_num_classes():
    assert AccuracyCallback(num_classes=10).topk_args == [1, 3, 5]
    assert AccuracyCallback(accuracy_args=[2]).topk_args == [2]
    assert MapKCallback().topk_args == [1, 3, 5]


def _loader_metrics_on_rank(outputs, onehot, classes):
    """Feeds this rank's half of the samples, in batches of 10, to loader-level callbacks."""
    from types import SimpleNamespace

    from mlcomp.runner import distributed

    rank = distributed.rank()
    callbacks = [AUCCallback(input_key="onehot"), F1ScoreCallback(input_key="onehot", threshold=0.5),
                 ConfusionMatrixCallback(input_key="classes", num_classes=3)]
    runner = SimpleNamespace(loader_name="valid", loader_metrics={}, batch_metrics={}, logdir=None,
                             is_infer_loader=False, is_master=rank == 0)
    for callback in callbacks:
        callback.on_loader_start(runner)
    for start in range(rank * 30, rank * 30 + 30, 10):
        runner.output = {"logits": outputs[start:start + 10]}
        runner.input = {"onehot": onehot[start:start + 10], "classes": classes[start:start + 10]}
        for callback in callbacks:
            callback.on_batch_end(runner)
    for callback in callbacks:
        callback.on_loader_end(runner)
    return runner.loader_metrics, callbacks[2].matrices["valid"]


@pytest.mark.slow
def test_loader_level_metrics_cover_every_rank():
    """Two gloo processes, each with half of the samples: every loader-level value is the global one."""
    from mlcomp.runner import distributed

    generator = torch.Generator().manual_seed(4)
    outputs = torch.randn(60, 3, generator=generator)
    classes = torch.randint(0, 3, (60,), generator=generator)
    onehot = torch.nn.functional.one_hot(classes, 3).float()
    metrics, matrix = distributed.launch(_loader_metrics_on_rank, 2, outputs, onehot, classes, backend="gloo")
    aucs = skm.roc_auc_score(onehot, outputs, average=None)
    assert [metrics[f"auc/class_{i:02}"] for i in range(3)] == pytest.approx(aucs)
    predicted = (outputs > 0).long().numpy().ravel()
    assert metrics["f1_score"] == pytest.approx(skm.f1_score(onehot.numpy().ravel(), predicted), abs=1e-6)
    assert matrix.tolist() == skm.confusion_matrix(classes, outputs.argmax(1), labels=range(3)).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks that no batch metric syncs the device")
def test_batch_metrics_never_sync_the_cuda_device():
    from types import SimpleNamespace

    device = torch.device("cuda")
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(16, 3, generator=generator).to(device)
    classes = torch.randint(0, 3, (16,), generator=generator).to(device)
    runner = SimpleNamespace(loader_name="valid", batch_metrics={}, loader_metrics={}, logdir=None, is_master=True,
                             is_infer_loader=False,
                             output={"logits": logits},
                             input={"targets": classes, "onehot": torch.nn.functional.one_hot(classes, 3).float()})
    callbacks = list(metric_callbacks().values())
    for callback in callbacks:
        callback.on_loader_start(runner)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for callback in callbacks:
            callback.on_batch_end(runner)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(value.device.type == "cuda" for value in runner.batch_metrics.values())


def test_infer_loaders_without_targets_are_not_measured():
    from torch.utils.data import TensorDataset

    features = DataLoader(TensorDataset(torch.randn(20, 6)), batch_size=8)
    net = model()
    runner = SupervisedRunner()
    runner.train(model=net, loaders=OrderedDict(loaders(), infer=features), criterion=torch.nn.CrossEntropyLoss(),
                 optimizer=torch.optim.SGD(net.parameters(), lr=0.1), callbacks=metric_callbacks(), num_epochs=1)
    assert "valid_accuracy01" in runner.epoch_metrics and "valid_auc/mean" in runner.epoch_metrics
    assert not any(key.startswith("infer_") for key in runner.epoch_metrics)
