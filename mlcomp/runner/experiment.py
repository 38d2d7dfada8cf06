"""The experiment: *what* to run, stage by stage (Catalyst 20.x ``IExperiment``).

The runner (*how*) asks the experiment, at the start of each stage, for that stage's model,
criterion, optimizer, scheduler, callbacks and loaders. ``ConfigExperiment`` answers from a YAML
config; the notebook API builds a ``SimpleExperiment`` from the objects given to ``train``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, Iterable, Mapping

__all__ = ["Experiment"]


class Experiment(ABC):
    """Abstract base: one object per run that knows its stages and builds each stage's parts.

    Stage parameters (``get_stage_params``) use Catalyst's ``stage_params`` keys: ``num_epochs``
    (int), ``main_metric`` (str, default ``"loss"``), ``minimize_metric`` (bool, default True),
    ``valid_loader`` (str, default ``"valid"``), ``checkpoint_data`` (dict saved into checkpoints).
    """

    @property
    @abstractmethod
    def initial_seed(self) -> int:
        """Seed of the run. The runner seeds each epoch with ``initial_seed + global_epoch + 1``."""

    @property
    @abstractmethod
    def logdir(self) -> str | None:
        """Folder for checkpoints, logs and the metrics file; ``None`` writes nothing."""

    @property
    @abstractmethod
    def stages(self) -> list[str]:
        """Stage names in run order; names starting with ``infer`` never train."""

    @property
    def hparams(self) -> Mapping[str, Any] | None:
        """The config or arguments the run was made from, stored in checkpoints."""
        return None

    @property
    def distributed_params(self) -> Mapping[str, Any]:
        """Options for ``torch.distributed`` (e.g. ``{"backend": "gloo"}``)."""
        return {}

    @abstractmethod
    def get_stage_params(self, stage: str) -> Mapping[str, Any]:
        """``stage_params`` of ``stage`` (see the class docstring)."""

    @abstractmethod
    def get_model(self, stage: str):
        """The ``torch.nn.Module`` for ``stage``."""

    @abstractmethod
    def get_criterion(self, stage: str):
        """The loss module for ``stage``, or ``None``."""

    @abstractmethod
    def get_optimizer(self, stage: str, model):
        """The optimizer for ``stage`` over ``model``'s parameters, or ``None``."""

    @abstractmethod
    def get_scheduler(self, stage: str, optimizer):
        """The LR scheduler for ``stage``, or ``None``."""

    @abstractmethod
    def get_callbacks(self, stage: str) -> "OrderedDict[str, Any]":
        """Callbacks of ``stage`` by name (names key their state in full checkpoints)."""

    @abstractmethod
    def get_loaders(self, stage: str, epoch: int | None = None) -> "OrderedDict[str, Iterable]":
        """Loaders of ``stage`` by name, run in this order every epoch."""

    def get_experiment_components(self, model, stage: str):
        """Criterion, optimizer and scheduler of ``stage`` for ``model`` (in that order)."""
        criterion = self.get_criterion(stage)
        optimizer = self.get_optimizer(stage, model)
        scheduler = self.get_scheduler(stage, optimizer)
        return criterion, optimizer, scheduler
