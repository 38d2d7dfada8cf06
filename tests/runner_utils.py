"""Small experiments shared by the runner's tests: synthetic data, a tiny MLP with dropout,
a two-stage experiment and callbacks that record events or stop the run."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mlcomp.runner import (Callback, CallbackOrder, CheckpointCallback, EarlyStoppingCallback, Experiment,
                           OptimizerCallback, SchedulerCallback, SupervisedRunner)
from mlcomp.runner.events import Event


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test (the machine is shared); import it into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(n: int = 96, features: int = 6, seed: int = 0):
    """A linearly separable-ish two-class problem: ``(X, y)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def make_loaders(batch_size: int = 16, n_train: int = 64, n_valid: int = 32, shuffle: bool = True):
    """``train`` (shuffled) and ``valid`` loaders over :func:`make_data`."""
    x, y = make_data(n_train + n_valid)
    return OrderedDict(
        train=DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=shuffle),
        valid=DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size))


def make_model(features: int = 6, dropout: float = 0.2, seed: int = 1) -> torch.nn.Module:
    """A tiny MLP with dropout (so resume must restore the RNG)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(features, 8), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(8, 2))


def train(model=None, dropout: float = 0.2, **kwargs) -> SupervisedRunner:
    """``SupervisedRunner().train`` of :func:`make_model` on :func:`make_loaders` with SGD and
    cross-entropy; keyword arguments replace any of these."""
    model = model or make_model(dropout=dropout)
    arguments = dict(model=model, criterion=torch.nn.CrossEntropyLoss(),
                     optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loaders=make_loaders())
    return SupervisedRunner().train(**{**arguments, **kwargs})


def callback(order: int = CallbackOrder.External, **handlers) -> Callback:
    """A callback whose event methods call the given functions with the runner, e.g.
    ``callback(on_batch_end=lambda runner: ...)`` (a new class, so the runner dispatches them)."""
    methods = {name: (lambda fn: lambda self, runner: fn(runner))(fn) for name, fn in handlers.items()}
    return type("FnCallback", (Callback,), methods)(order)


class Recorder(Callback):
    """Records ``(event, stage, epoch, loader, loader_batch_step)`` for every event."""

    def __init__(self):
        super().__init__(CallbackOrder.External)
        self.events = []
        for event in Event:
            setattr(self, event.value, self._recorder(event))

    def _recorder(self, event):
        def record(runner):
            self.events.append((event.value, runner.stage_name, runner.epoch, runner.loader_name,
                                runner.loader_batch_step))
        return record


for _event in Event:  # make the class override every event so the runner dispatches them
    setattr(Recorder, _event.value, lambda self, runner: None)


class StopAt(Callback):
    """Requests a stop after global batch ``step`` (never when ``step`` is None)."""

    def __init__(self, step: int | None):
        super().__init__(CallbackOrder.External)
        self.step = step

    def on_batch_end(self, runner):
        if runner.global_batch_step == self.step:
            runner.request_stop()


class TwoStageExperiment(Experiment):
    """``stage1`` (SGD, 2 epochs) then ``stage2`` (Adam with StepLR, gradient accumulation 2,
    early stopping, n-best checkpoints, 2 epochs) over the same model."""

    def __init__(self, logdir, stop_at=None, seed: int = 7):
        self._logdir, self._seed, self.stop_at = logdir, seed, stop_at
        self.model = make_model()

    initial_seed = property(lambda self: self._seed)
    logdir = property(lambda self: self._logdir)
    stages = property(lambda self: ["stage1", "stage2"])

    def get_stage_params(self, stage):
        return {"num_epochs": 2, "main_metric": "loss", "minimize_metric": True}

    def get_model(self, stage):
        return self.model

    def get_criterion(self, stage):
        return torch.nn.CrossEntropyLoss()

    def get_optimizer(self, stage, model):
        if stage == "stage1":
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return torch.optim.Adam(model.parameters(), lr=0.01)

    def get_scheduler(self, stage, optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5) if stage == "stage2" else None

    def get_callbacks(self, stage):
        callbacks = OrderedDict(stop=StopAt(self.stop_at), saver=CheckpointCallback(save_n_best=2))
        if stage == "stage2":
            callbacks.update(optimizer=OptimizerCallback(accumulation_steps=2), scheduler=SchedulerCallback(),
                             early=EarlyStoppingCallback(patience=5))
        return callbacks

    def get_loaders(self, stage, epoch=None):
        return make_loaders()
