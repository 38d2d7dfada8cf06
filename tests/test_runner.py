"""The runner loop: event order, stages, loaders, modes, batch formats and bad input."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from runner_utils import (Recorder, TwoStageExperiment, callback, make_data, make_loaders, make_model,
                          one_thread, train)  # noqa: F401 (one_thread: autouse fixture)
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.errors import ConfigError
from mlcomp.runner import (Callback, CallbackNode, CallbackOrder, CheckpointCallback, ConsoleLogger, CriterionCallback,
                           OptimizerCallback, Runner, SimpleExperiment, SupervisedRunner, ValidationManagerCallback)
from mlcomp.runner.callbacks import AccuracyCallback
from mlcomp.runner.events import Event


def test_event_sequence_two_stages(tmp_path):
    recorder = Recorder()
    experiment = TwoStageExperiment(tmp_path)
    original = experiment.get_callbacks
    experiment.get_callbacks = lambda stage: {**original(stage), "recorder": recorder}
    experiment.get_loaders = lambda stage, epoch=None: make_loaders(batch_size=32)  # 2 train + 1 valid batch
    SupervisedRunner().run_experiment(experiment)
    events = [e for e in recorder.events if e[0] != "on_exception"]
    # position attributes carry over from the previous event: compare the shape of the run
    got = [(name, stage, epoch, loader) for name, stage, epoch, loader, _ in events]
    want = []
    for stage in ("stage1", "stage2"):
        want.append(("on_stage_start", stage))
        for epoch in (1, 2):
            want.append(("on_epoch_start", stage, epoch))
            for loader, batches in (("train", 2), ("valid", 1)):
                want.append(("on_loader_start", stage, epoch, loader))
                want += [("on_batch_start", stage, epoch, loader), ("on_batch_end", stage, epoch, loader)] * batches
                want.append(("on_loader_end", stage, epoch, loader))
            want.append(("on_epoch_end", stage, epoch))
        want.append(("on_stage_end", stage))
    assert [g[:len(w)] for g, w in zip(got, want)] == want and len(got) == len(want)
    batch_steps = [step for name, *_, step in events if name == "on_batch_end"]
    assert batch_steps == [1, 2, 1] * 4


class Order(Callback):
    def __init__(self, order, log, name):
        super().__init__(order)
        self.log, self.name = log, name

    def on_batch_end(self, runner):
        self.log.append(self.name)


def test_callbacks_run_sorted_by_order_stably():
    log = []
    callbacks = OrderedDict(late=Order(CallbackOrder.External, log, "late"),
                            first=Order(CallbackOrder.Internal, log, "first"),
                            metric_a=Order(CallbackOrder.Metric, log, "metric_a"),
                            metric_b=Order(CallbackOrder.Metric, log, "metric_b"))
    runner = train(callbacks=callbacks, loaders=OrderedDict(train=make_loaders(batch_size=64)["train"],
                                                             valid=make_loaders()["valid"]))
    assert log[:4] == ["first", "metric_a", "metric_b", "late"]
    names = list(runner.callbacks)
    assert names.index("metric_a") < names.index("_criterion") < names.index("_optimizer") < names.index("late")


def test_master_only_callbacks_skip_on_other_ranks(monkeypatch):
    from mlcomp.runner import distributed

    log = []
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    master, everyone = Order(CallbackOrder.External, log, "master"), Order(CallbackOrder.External, log, "all")
    master.node = CallbackNode.Master
    runner = train(callbacks={"master": master, "all": everyone})
    assert not runner.is_master and set(log) == {"all"} and "master" not in runner.callbacks


def test_only_overridden_handlers_are_dispatched():
    runner = train()
    names = {event: [type(h.__self__).__name__ for h in handlers] for event, handlers in runner._handlers.items()}
    assert names[Event.BATCH_END] == ["CriterionCallback", "OptimizerCallback", "ProgressBarLogger"]
    assert names[Event.BATCH_START] == ["OptimizerCallback"]  # AMP's autocast entry; a no-op on the CPU


def test_metrics_are_batch_size_weighted_means():
    x, y = make_data(40)
    loaders = OrderedDict(train=DataLoader(TensorDataset(x, y), batch_size=16),
                          valid=DataLoader(TensorDataset(x, y), batch_size=16))  # 16, 16, 8

    def step(runner):
        runner.batch_metrics["step"] = torch.tensor(float(runner.loader_batch_step))

    runner = train(loaders=loaders, callbacks=[callback(CallbackOrder.Metric, on_batch_end=step)], num_epochs=1)
    assert runner.epoch_metrics["valid_step"] == pytest.approx((16 * 1 + 16 * 2 + 8 * 3) / 40)
    assert set(runner.valid_metrics) == {"loss", "step"}


def test_several_train_and_valid_loaders_run_in_order():
    recorder = Recorder()
    base = make_loaders()
    loaders = OrderedDict(train_a=base["train"], valid=base["valid"], train_b=base["train"], valid_b=base["valid"])
    runner = train(loaders=loaders, callbacks=[recorder])
    starts = [(loader, runner) for name, _, _, loader, _ in recorder.events if name == "on_loader_start"]
    assert [loader for loader, _ in starts] == ["train_a", "valid", "train_b", "valid_b"]
    assert {"train_a_loss", "train_b_loss", "valid_loss", "valid_b_loss"} <= set(runner.epoch_metrics)
    assert runner.valid_metrics["loss"] == runner.epoch_metrics["valid_loss"]


def test_modes_follow_loader_names():
    seen = []
    mode = callback(on_batch_end=lambda runner: seen.append(
        (runner.loader_name, runner.model.training, torch.is_grad_enabled(), runner.need_backward_pass)))
    train(callbacks=[mode])
    assert ("train", True, True, True) in seen and ("valid", False, False, False) in seen
    assert {s[0] for s in seen} == {"train", "valid"}


def test_infer_stage_never_trains():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recorder = Recorder()
    runner = SupervisedRunner().infer(model=model, loaders=OrderedDict(infer=make_loaders()["train"]),
                                      callbacks=[recorder])
    assert runner.is_infer_stage and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert sum(e[0] == "on_batch_end" for e in recorder.events) == 4
    assert "_optimizer" not in runner.callbacks and "_criterion" not in runner.callbacks


def test_multi_stage_carries_weights_and_counters(tmp_path):
    experiment = TwoStageExperiment(tmp_path)
    seen = []
    original = experiment.get_callbacks
    start = callback(on_stage_start=lambda runner: seen.append(
        (runner.stage_name, type(runner.optimizer).__name__, runner.global_epoch,
         runner.model[0].weight.detach().clone())))
    experiment.get_callbacks = lambda stage: {**original(stage), "start": start}
    runner = SupervisedRunner().run_experiment(experiment)
    assert [(s, o, g) for s, o, g, _ in seen] == [("stage1", "SGD", 0), ("stage2", "Adam", 2)]
    assert not torch.equal(seen[0][3], seen[1][3])  # stage2 starts from stage1's trained weights
    assert runner.global_epoch == 4 and runner.global_batch_step == 24 and runner.global_sample_step == 384
    metrics = (tmp_path / "checkpoints" / "_metrics.json").read_text()
    assert '"stage1.2"' in metrics and '"stage2.2"' in metrics


def test_user_runner_handle_batch_with_tuple_batches():
    class MyRunner(Runner):
        def handle_batch(self, batch):
            features, targets = batch
            self.output = {"logits": self.model(features)}
            self.batch_metrics["loss"] = torch.nn.functional.cross_entropy(self.output["logits"], targets)

    model = make_model()
    experiment = SimpleExperiment(model=model, loaders=make_loaders(), num_epochs=2,
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    runner = MyRunner().run_experiment(experiment)
    assert runner.epoch_metrics["train_loss"] < 0.7 and runner.best_valid_metrics


@pytest.mark.parametrize("input_key", ["features", ["features"], None])
def test_supervised_input_keys(input_key):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, features, targets=None):
            return self.net(features)

    x, y = make_data(32)
    data = [{"features": x[i:i + 8], "targets": y[i:i + 8]} for i in range(0, 32, 8)]
    model = Net()
    runner = SupervisedRunner(input_key=input_key).train(
        model=model, criterion=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loaders=OrderedDict(train=data, valid=data))
    assert runner.output["logits"].shape == (8, 2) and "valid_loss" in runner.epoch_metrics


def test_check_mode_limits_batches_and_epochs():
    recorder = Recorder()
    runner = train(callbacks=[recorder], num_epochs=5, check=True,
                   loaders=make_loaders(batch_size=4))  # 16 train batches
    assert runner.epoch == 2 and runner.loader_len == 3
    assert sum(e[0] == "on_batch_end" for e in recorder.events) == 2 * (3 + 3)


def test_overfit_mode_replays_the_same_batches():
    seen = []
    targets = callback(on_batch_end=lambda runner: runner.is_train_loader and seen.append(runner.input["targets"]))
    train(callbacks=[targets], num_epochs=3, overfit=2)
    assert len(seen) == 6 and all(torch.equal(seen[i], seen[i % 2]) for i in range(6))


def test_predict_loader_yields_outputs(tmp_path):
    runner = train(logdir=tmp_path)
    loader = make_loaders()["valid"]
    outputs = list(SupervisedRunner().predict_loader(loader, model=make_model(),
                                                     resume=tmp_path / "checkpoints" / "best.pth"))
    expected = runner.model.eval()(next(iter(loader))[0])
    assert len(outputs) == 2 and torch.allclose(outputs[0], expected)


def test_missing_valid_loader_is_a_config_error():
    with pytest.raises(ConfigError, match=r"valid_loader 'valid' is not among the loaders \['train'\]"):
        train(loaders=OrderedDict(train=make_loaders()["train"]))


def test_main_metric_nothing_produces_is_a_config_error_before_the_first_batch():
    """Every callback declares its metric names: the typo is caught at the stage start."""
    batches = []
    counter = callback(on_batch_end=lambda runner: batches.append(runner.loader_name))
    counter.metric_names = ()
    with pytest.raises(ConfigError, match=r"stage 'train': main_metric 'accuracy1' is not produced by any callback"
                                          r".*they produce \['accuracy01', 'loss'\]"):
        train(main_metric="accuracy1", callbacks=[counter, AccuracyCallback(topk_args=[1])])
    assert batches == []


def test_main_metric_nothing_produces_is_found_at_the_first_valid_loader_end():
    """A callback that does not declare its metrics might write it: the check waits for the data."""
    batches = []
    counter = callback(on_batch_end=lambda runner: batches.append(runner.loader_name))
    with pytest.raises(ConfigError, match=r"main_metric 'accuracy01' is not produced.*metrics: \['loss'\]"):
        train(main_metric="accuracy01", callbacks=[counter])
    assert batches == ["train"] * 4 + ["valid"] * 2


def test_callback_that_is_not_a_callback_is_rejected():
    with pytest.raises(ConfigError, match=r"callback 'oops' is a str, not an mlcomp.runner.Callback"):
        train(callbacks={"oops": "CriterionCallback"})


def test_optimizer_callback_without_optimizer_fails_at_stage_start():
    recorder = Recorder()
    with pytest.raises(ConfigError, match="OptimizerCallback needs an optimizer"):
        train(optimizer=None, callbacks=[recorder, OptimizerCallback()])
    assert not any(e[0] == "on_batch_start" for e in recorder.events)


def test_exception_reaches_callbacks_and_can_be_swallowed():
    class Boom(Callback):
        def __init__(self):
            super().__init__(CallbackOrder.Internal)
            self.seen = None

        def on_batch_end(self, runner):
            raise ValueError("boom")

        def on_exception(self, runner):
            self.seen = runner.exception
            runner.need_exception_reraise = False

    boom = Boom()
    runner = train(callbacks=[boom])
    assert isinstance(boom.seen, ValueError) and runner.exception is boom.seen


def test_default_callbacks_are_added_unless_given(tmp_path):
    runner = train(logdir=tmp_path, callbacks={"loss": CriterionCallback(prefix="loss")})
    assert {"loss", "_optimizer", "_validation", "_saver", "_console", "_metrics_file"} <= set(runner.callbacks)
    assert "_criterion" not in runner.callbacks
    assert isinstance(runner.callbacks["_validation"], ValidationManagerCallback)
    assert isinstance(runner.callbacks["_saver"], CheckpointCallback)
    assert isinstance(runner.callbacks["_console"], ConsoleLogger)


def test_each_epoch_is_seeded_with_the_seed_plus_global_epoch_plus_one():
    """Catalyst 20.x: an epoch's randomness depends on the seed and the epoch number only."""
    import random

    import numpy as np

    draws = []
    draw = callback(on_epoch_start=lambda runner: draws.append(
        (runner.global_epoch, random.random(), float(np.random.rand()), torch.rand(1).item())))
    SupervisedRunner().train(model=make_model(), criterion=torch.nn.CrossEntropyLoss(), loaders=make_loaders(),
                             num_epochs=3, initial_seed=7, callbacks=[draw])
    expected = []
    for global_epoch in (1, 2, 3):
        random.seed(7 + global_epoch + 1)
        np.random.seed(7 + global_epoch + 1)
        torch.manual_seed(7 + global_epoch + 1)
        expected.append((global_epoch, random.random(), float(np.random.rand()), torch.rand(1).item()))
    assert draws == expected


@pytest.mark.parametrize("verbose, terminal, shown", [(True, True, True), (True, False, False),
                                                      (False, True, False)])
def test_progress_bar_needs_verbose_and_a_terminal(monkeypatch, capsys, verbose, terminal, shown):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal, raising=False)
    train(verbose=verbose, num_epochs=1)
    err = capsys.readouterr().err
    assert ("1/1 * train" in err and "1/1 * valid" in err) == shown, err


def test_a_subclass_does_not_inherit_the_trust_in_declared_metric_names():
    class LossAndMore(CriterionCallback):
        def on_batch_end(self, runner):
            super().on_batch_end(runner)
            runner.batch_metrics["more"] = runner.batch_metrics["loss"] * 2

    runner = train(main_metric="more", callbacks={"_criterion": LossAndMore()})
    assert runner.best_valid_metrics["more"] == pytest.approx(2 * runner.best_valid_metrics["loss"])
