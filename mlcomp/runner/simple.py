"""SimpleExperiment: the one-stage experiment the notebook API builds from objects (Catalyst 20.x
``SupervisedExperiment``)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Mapping

from mlcomp.runner.callback import Callback
from mlcomp.runner.experiment import Experiment

__all__ = ["SimpleExperiment", "callbacks_by_name"]


def callbacks_by_name(callbacks: Iterable[Callback] | Mapping[str, Callback] | None) -> "OrderedDict[str, Callback]":
    """A dict of callbacks as given, or a list named by class (``Name``, ``Name_1``, ... for repeats)."""
    if callbacks is None:
        return OrderedDict()
    if isinstance(callbacks, Mapping):
        return OrderedDict(callbacks)
    named = OrderedDict()
    for callback in callbacks:
        name, index = type(callback).__name__, 1
        while name in named:
            name, index = f"{type(callback).__name__}_{index}", index + 1
        named[name] = callback
    return named


class SimpleExperiment(Experiment):
    """One stage (``stage``, default ``"train"``) made of the objects given; the same model,
    optimizer and callbacks are handed out for every stage.

    Args:
        model, criterion, optimizer, scheduler: the components (the last three may be None).
        loaders: name → loader, run in this order every epoch.
        callbacks: a list (named by class) or a dict of callbacks.
        logdir: folder for checkpoints and logs, or None.
        stage: the stage name; ``infer*`` stages never train.
        num_epochs, main_metric, minimize_metric, valid_loader: the stage parameters.
        initial_seed: the run's seed.
        stage_kwargs: more stage parameters (e.g. ``checkpoint_data``).
        hparams: what the run was made from, stored in checkpoints.
    """

    def __init__(self, model, loaders: Mapping[str, Iterable], criterion=None, optimizer=None, scheduler=None,
                 callbacks=None, logdir=None, stage: str = "train", num_epochs: int = 1, main_metric: str = "loss",
                 minimize_metric: bool = True, valid_loader: str = "valid", initial_seed: int = 42,
                 stage_kwargs: Mapping[str, Any] | None = None, hparams: Mapping[str, Any] | None = None):
        self._model, self._criterion, self._optimizer, self._scheduler = model, criterion, optimizer, scheduler
        self._loaders, self._callbacks = OrderedDict(loaders), callbacks_by_name(callbacks)
        self._logdir, self._stage, self._seed, self._hparams = logdir, stage, initial_seed, hparams
        self._stage_params = {"num_epochs": num_epochs, "main_metric": main_metric,
                              "minimize_metric": minimize_metric, "valid_loader": valid_loader,
                              **dict(stage_kwargs or {})}

    @property
    def initial_seed(self) -> int:
        """The run's seed."""
        return self._seed

    @property
    def logdir(self):
        """The log folder or None."""
        return self._logdir

    @property
    def stages(self) -> list[str]:
        """The single stage."""
        return [self._stage]

    @property
    def hparams(self):
        """What the run was made from."""
        return self._hparams

    def get_stage_params(self, stage: str) -> Mapping[str, Any]:
        """The stage parameters given."""
        return dict(self._stage_params)

    def get_model(self, stage: str):
        """The model given."""
        return self._model

    def get_criterion(self, stage: str):
        """The criterion given."""
        return self._criterion

    def get_optimizer(self, stage: str, model):
        """The optimizer given."""
        return self._optimizer

    def get_scheduler(self, stage: str, optimizer):
        """The scheduler given."""
        return self._scheduler

    def get_callbacks(self, stage: str) -> "OrderedDict[str, Callback]":
        """The callbacks given."""
        return OrderedDict(self._callbacks)

    def get_loaders(self, stage: str, epoch: int | None = None) -> "OrderedDict[str, Iterable]":
        """The loaders given."""
        return OrderedDict(self._loaders)
