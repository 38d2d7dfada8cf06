"""The extra callbacks through the runner: loss aggregation, iteration checkpoints (exact
resume), timer, mixup, LR range test, inference collection, batch limits."""
from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from runner_utils import StopAt, make_loaders, make_model
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.errors import ConfigError
from mlcomp.runner import Callback, CallbackOrder, RunStopped, SupervisedRunner
from mlcomp.runner.callbacks import (BatchOverfitCallback, CriterionAggregatorCallback, CriterionCallback,
                                     InferCallback, IterationCheckpointCallback, LRFinder, MixupCallback,
                                     TimerCallback)
from mlcomp.runner.loaders import BatchLimitLoaderWrapper


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Spy(Callback):
    """Records per loader: batches seen, batch metrics (as floats) and the inputs seen by the model."""

    def __init__(self):
        super().__init__(CallbackOrder.External)
        self.batches, self.metrics, self.features = {}, [], []

    def on_batch_end(self, runner):
        self.batches[runner.loader_name] = self.batches.get(runner.loader_name, 0) + 1
        self.metrics.append({k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                             for k, v in runner.batch_metrics.items()})
        self.features.append((runner.loader_name, runner.input["features"].clone()))


def train(callbacks, logdir=None, num_epochs=2, lr=0.1, model=None, **kwargs):
    net = model or make_model()
    runner = SupervisedRunner()
    runner.train(model=net, loaders=make_loaders(), criterion=torch.nn.CrossEntropyLoss(),
                 optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9), logdir=logdir,
                 num_epochs=num_epochs, callbacks=callbacks, **kwargs)
    return runner, net


def weights(net):
    return [p.detach().clone() for p in net.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- aggregation
def test_aggregated_sum_of_two_losses_trains_like_the_doubled_loss():
    spy = Spy()
    _, summed = train(OrderedDict(a=CriterionCallback(prefix="loss_a"), b=CriterionCallback(prefix="loss_b"),
                                  loss=CriterionAggregatorCallback("loss", ["loss_a", "loss_b"]), spy=spy))
    _, doubled = train(OrderedDict(_criterion=CriterionCallback(multiplier=2.0)))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(weights(summed), weights(doubled)))
    first = spy.metrics[0]
    assert first["loss"] == pytest.approx(first["loss_a"] + first["loss_b"])


@pytest.mark.parametrize("mode, keys, expected", [
    ("mean", None, lambda a, b: (a + b) / 2),
    ("weighted_sum", {"loss_a": 1.0, "loss_b": 0.5}, lambda a, b: a + 0.5 * b),
    ("weighted_mean", {"loss_a": 3.0, "loss_b": 1.0}, lambda a, b: (3 * a + b) / 4),
])
def test_aggregation_modes(mode, keys, expected):
    spy = Spy()
    train(OrderedDict(a=CriterionCallback(prefix="loss_a"), b=CriterionCallback(prefix="loss_b", multiplier=3.0),
                      loss=CriterionAggregatorCallback("loss", keys, mode, multiplier=2.0), spy=spy), num_epochs=1)
    for row in spy.metrics:
        assert row["loss"] == pytest.approx(2.0 * expected(row["loss_a"], row["loss_b"]), rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss_aggregate_fn="max"), "allowed: sum, mean"),
    (dict(loss_keys=["a"], loss_aggregate_fn="weighted_sum"), "mapping"),
    (dict(loss_keys=["loss"]), "not contain the prefix"),
])
def test_aggregator_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CriterionAggregatorCallback("loss", **kwargs)


def test_aggregator_names_missing_losses():
    with pytest.raises(ConfigError, match=r"\['loss_x'\] are not in runner.batch_metrics"):
        train(OrderedDict(a=CriterionCallback(prefix="loss_a"), loss=CriterionAggregatorCallback("loss", "loss_x")))


# ----------------------------------------------------------------------------- iteration checkpoints
def test_iteration_checkpoints_keep_the_last_n_and_resume_exactly(tmp_path):
    """6 batches per epoch (4 train, 2 valid), 2 epochs: saves after batches 5 and 10."""
    reference, net = train(OrderedDict(iters=IterationCheckpointCallback(save_n_last=2, period=5)), tmp_path / "a")
    folder = tmp_path / "a" / "checkpoints"
    kept = sorted(p.name for p in folder.glob("train.*.*_full.pth"))  # not the epochs' train.E_full.pth
    assert kept == ["train.1.valid.1_full.pth", "train.2.train.4_full.pth"]
    listed = json.loads((folder / "_metrics_iter.json").read_text())
    assert sorted(listed) == kept and listed["train.1.valid.1_full.pth"]["global_batch_step"] == 5
    for name in kept:  # mid-valid (loader means in flight) and end of a train loader
        resumed, resumed_net = train(OrderedDict(iters=IterationCheckpointCallback(save_n_last=2, period=5)),
                                     tmp_path / "a", resume=str(folder / name), model=make_model(seed=99))
        assert same(weights(resumed_net), weights(net)), name
        assert resumed.epoch_metrics == reference.epoch_metrics, name


def test_iteration_checkpoint_needs_a_logdir_and_positive_period():
    with pytest.raises(ConfigError, match="period"):
        IterationCheckpointCallback(period=0)
    with pytest.raises(ConfigError, match="needs a logdir"):
        train(OrderedDict(iters=IterationCheckpointCallback()))


# ----------------------------------------------------------------------------- timer
class FakeClock:
    """Advances one second per reading."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_timer_writes_timer_metrics_from_the_clock():
    spy = Spy()
    runner, _ = train(OrderedDict(timer=TimerCallback(clock=FakeClock()), spy=spy), num_epochs=1)
    row = spy.metrics[0]
    assert (row["_timer/data_time"], row["_timer/model_time"], row["_timer/batch_time"]) == (1.0, 1.0, 2.0)
    assert row["_timer/_fps"] == 16 / 2.0
    # train: 64 samples; loader start at t, 4 batches of 2 readings each -> 8 s of wall time
    assert runner.epoch_metrics["train__timer/_fps"] == pytest.approx(64 / 8.0)
    assert runner.epoch_metrics["train__timer/batch_time"] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- mixup
def test_mixup_with_alpha_zero_is_plain_training():
    _, plain = train(OrderedDict())
    _, mixed = train(OrderedDict(_criterion=MixupCallback(alpha=0.0)))
    assert same(weights(plain), weights(mixed))


def test_mixup_mixes_train_inputs_and_losses_only():
    raw = make_loaders()
    spy = Spy()
    mixup = MixupCallback(alpha=0.4, seed=5)
    train(OrderedDict(_criterion=mixup, spy=spy), num_epochs=1)
    valid_seen = [f for name, f in spy.features if name == "valid"]
    valid_raw = [x for x, _ in raw["valid"]]
    assert all(torch.equal(a, b) for a, b in zip(valid_seen, valid_raw))
    train_seen = torch.cat([f for name, f in spy.features if name == "train"])
    train_raw = torch.cat([x for x, _ in DataLoader(raw["train"].dataset, batch_size=64)])
    unmixed = sum(bool(torch.isclose(train_raw, row).all(dim=1).any()) for row in train_seen)
    assert unmixed < len(train_seen) // 4  # only samples paired with themselves by the permutation
    assert 0.0 <= mixup.lam <= 1.0 and mixup.index is not None


def test_mixup_loss_is_the_convex_combination():
    class Check(Callback):
        def __init__(self, mixup):
            super().__init__(CallbackOrder.External)
            self.mixup, self.checked = mixup, 0

        def on_batch_end(self, runner):
            if runner.is_train_loader:
                out, y = runner.output["logits"], runner.input["targets"]
                ce = torch.nn.functional.cross_entropy
                expected = self.mixup.lam * ce(out, y) + (1 - self.mixup.lam) * ce(out, y[self.mixup.index])
                assert torch.allclose(runner.batch_metrics["loss"], expected)
                self.checked += 1

    mixup = MixupCallback(alpha=1.0)
    check = Check(mixup)
    train(OrderedDict(mixup=mixup, check=check), num_epochs=1)  # replaces the default criterion
    assert check.checked == 4


def test_mixup_resumes_exactly(tmp_path):
    _, net = train(OrderedDict(_criterion=MixupCallback(alpha=0.5)), tmp_path / "a")
    with pytest.raises(RunStopped) as stopped:
        train(OrderedDict(_criterion=MixupCallback(alpha=0.5), stop=StopAt(8)), tmp_path / "b")
    _, resumed = train(OrderedDict(_criterion=MixupCallback(alpha=0.5)), tmp_path / "b",
                       resume=str(stopped.value.checkpoint))
    assert same(weights(resumed), weights(net))


def test_mixup_arguments():
    with pytest.raises(ConfigError, match="alpha"):
        MixupCallback(alpha=-1)
    with pytest.raises(ConfigError, match="fields"):
        MixupCallback(fields=[])


# ----------------------------------------------------------------------------- LR finder
@pytest.mark.parametrize("scale", ["log", "linear"])
def test_lr_finder_sweeps_and_ends_the_run(scale):
    finder = LRFinder(final_lr=1.0, scale=scale, num_steps=6)
    spy = Spy()
    runner, _ = train(OrderedDict(finder=finder, spy=spy), num_epochs=5, lr=1e-3)
    lrs = finder.history["lr"]
    assert len(lrs) == 6 and len(finder.history["loss"]) == 6
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1.0)
    if scale == "log":
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert ratios == pytest.approx([1000 ** (1 / 5)] * 5)
    else:
        assert np.diff(lrs) == pytest.approx([(1.0 - 1e-3) / 5] * 5)
    assert spy.batches == {"train": 5, "valid": 2}  # 4 train, 2 valid, then train step 6 ends it
    assert runner.optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    assert all(math.isfinite(v) for v in finder.history["loss"])


def test_lr_finder_arguments():
    with pytest.raises(ConfigError, match="final_lr"):
        LRFinder(final_lr=0)
    with pytest.raises(ConfigError, match="scale"):
        LRFinder(final_lr=1.0, scale="exp")


# ----------------------------------------------------------------------------- inference
def test_infer_callback_collects_and_saves_predictions(tmp_path):
    net = make_model()
    x = torch.randn(40, 6)
    loader = DataLoader(TensorDataset(x, torch.zeros(40, dtype=torch.long)), batch_size=16)
    callback = InferCallback(out_dir=str(tmp_path), out_prefix="preds")
    runner = SupervisedRunner()
    runner.infer(model=net, loaders={"infer": loader}, callbacks=[callback])
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    assert runner.predictions["infer"]["logits"] == pytest.approx(expected, abs=1e-6)
    assert callback.predictions["logits"].shape == (40, 2)
    assert np.load(tmp_path / "preds" / "infer.logits.npy") == pytest.approx(expected, abs=1e-6)


def test_infer_callback_ignores_training_loaders():
    callback = InferCallback()
    runner, _ = train(OrderedDict(infer=callback), num_epochs=1)
    assert callback.predictions == {} and not hasattr(runner, "predictions")


# ----------------------------------------------------------------------------- batch limits
def test_batch_overfit_limits_each_loader():
    spy = Spy()
    train(OrderedDict(overfit=BatchOverfitCallback(train=3, valid=0.5), spy=spy), num_epochs=2)
    assert spy.batches == {"train": 6, "valid": 2}
    spy = Spy()
    runner, _ = train(OrderedDict(overfit=BatchOverfitCallback(), spy=spy), num_epochs=1)
    assert spy.batches == {"train": 1, "valid": 1}
    assert not any(isinstance(loader, BatchLimitLoaderWrapper) for loader in runner.loaders.values())


@pytest.mark.parametrize("kwargs, message", [
    (dict(train=0), "int >= 1"), (dict(train=1.5), r"\(0, 1\]"), (dict(train="all"), "int >= 1"),
])
def test_batch_overfit_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BatchOverfitCallback(**kwargs)


def test_batch_overfit_names_unknown_loaders():
    with pytest.raises(ConfigError, match=r"\['tets'\].*\['train', 'valid'\]"):
        train(OrderedDict(overfit=BatchOverfitCallback(tets=2)))


def test_batch_limit_wrapper():
    loader = DataLoader(TensorDataset(torch.arange(50.0)), batch_size=5)
    wrapped = BatchLimitLoaderWrapper(loader, 0.25)
    assert len(wrapped) == 2 and wrapped.batch_size == 5 and wrapped.dataset is loader.dataset
    assert [batch[0].tolist() for batch in wrapped] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert len(list(wrapped)) == 2  # iterable again
    assert len(BatchLimitLoaderWrapper(loader, 100)) == 10
    assert len(BatchLimitLoaderWrapper(loader, 0.01)) == 1
    with pytest.raises(ConfigError, match="no length"):
        BatchLimitLoaderWrapper((batch for batch in loader), 0.5)

    shuffled = DataLoader(TensorDataset(torch.arange(50.0)), batch_size=5, shuffle=True)
    replayed = BatchLimitLoaderWrapper(shuffled, 2, replay=True)
    first = [batch[0].tolist() for batch in replayed]
    assert len(first) == 2 and all([batch[0].tolist() for batch in replayed] == first for _ in range(3))
    assert "replay=True" in repr(replayed)


def test_batch_overfit_keeps_the_check_mode_limit_on_every_epoch():
    """The runner's own check-mode wrappers are not the callback's to unwrap."""
    spy = Spy()
    runner, _ = train(OrderedDict(overfit=BatchOverfitCallback(train=5, valid=5), spy=spy), num_epochs=3,
                      check=True)
    assert spy.batches == {"train": 2 * 3, "valid": 2 * 2}  # check mode: 2 epochs; train 3, valid its 2
    assert all(isinstance(loader, BatchLimitLoaderWrapper) for loader in runner.loaders.values())


def test_catalyst_style_config_with_the_extra_and_metric_callbacks(tmp_path):
    """A Catalyst 20.x ``callbacks_params`` section runs unchanged through the config API."""
    import yaml

    from mlcomp.runner.config import run_config

    config = yaml.safe_load("""
        model_params: {model: SimpleNet, in_features: 4, hidden: 8, num_classes: 3}
        stages:
          data_params:
            dataset: SyntheticDataset
            num_features: 4
            num_classes: 3
            batch_size: 16
            loaders: {train: {seed: 1}, valid: {seed: 2, num_samples: 64}}
          criterion_params: {criterion: CrossEntropyLoss}
          optimizer_params: {optimizer: SGD, lr: 0.1}
          stage_params: {num_epochs: 2, main_metric: accuracy01, minimize_metric: false}
          callbacks_params:
            loss_ce: {callback: CriterionCallback, prefix: loss_ce}
            loss_ce2: {callback: CriterionCallback, prefix: loss_ce2, multiplier: 0.5}
            loss: {callback: CriterionAggregatorCallback, prefix: loss,
                   loss_keys: {loss_ce: 1.0, loss_ce2: 2.0}, loss_aggregate_fn: weighted_sum}
            optimizer: {callback: OptimizerCallback}
            accuracy: {callback: AccuracyCallback, accuracy_args: [1, 3]}
            map: {callback: MapKCallback, topk_args: [1, 2]}
            cm: {callback: ConfusionMatrixCallback, num_classes: 3}
            timer: {callback: TimerCallback}
            overfit: {callback: BatchOverfitCallback, train: 2, valid: 0.5}
            iters: {callback: IterationCheckpointCallback, period: 3, save_n_last: 1}
          train: {}
    """)
    runner = run_config(config, logdir=str(tmp_path))
    metrics = runner.epoch_metrics
    for key in ("valid_accuracy01", "valid_accuracy03", "valid_map02", "train__timer/_fps", "train_loss"):
        assert key in metrics, key
    assert metrics["train_loss"] == pytest.approx(2 * metrics["train_loss_ce"], rel=1e-6)
    assert runner.callbacks["cm"].matrices["valid"].sum() == 32  # 2 of the 4 valid batches of 16
    kept = [p.name for p in (tmp_path / "checkpoints").glob("*.*.*.*_full.pth")]
    assert kept == ["train.2.train.2_full.pth"]  # saved after batches 3 and 6 of 8, the last one kept
