"""Running some loaders only every N epochs (Catalyst 20.08+'s ``PeriodicLoaderCallback``)."""
from __future__ import annotations

from collections import OrderedDict

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["PeriodicLoaderCallback"]


class PeriodicLoaderCallback(Callback):
    """Runs each named loader only in the epochs of the stage divisible by its period (0: never);
    loaders not named run every epoch. ``PeriodicLoaderCallback(valid=2)`` over 5 epochs
    validates after epochs 2 and 4.

    An epoch that skips the stage's valid loader has no valid metrics (``runner.valid_metrics``
    is empty): it is never the best epoch and never among the ``save_n_best`` checkpoints, as in
    Catalyst, which gave such epochs the worst main metric. ``runner.valid_loader`` stays the
    stage's (Catalyst switched it to the epoch's first loader only to mark the epoch as worst).
    Names that are not loaders of the stage are ignored, as Catalyst ignored them.

    Args:
        **periods: loader name → period in epochs, an int (or a float, truncated) >= 0.

    Raises:
        ValueError: a period that is not a number or is negative.
        ConfigError: at stage start, the valid loader's period is 0, or the periods name every
            loader of the stage and some epoch would run none; at an epoch start, no loader runs.
    """

    metric_names = ()  # writes no metric

    def __init__(self, **periods: int | float):
        super().__init__(CallbackOrder.Validation - 1)
        self.periods: dict[str, int] = {}
        for name, period in periods.items():
            if isinstance(period, bool) or not isinstance(period, (int, float)) or period < 0:
                raise ValueError(f"PeriodicLoaderCallback: the period of loader {name!r} should be a number "
                                 f">= 0, got {period!r}")
            self.periods[name] = int(period)
        self._stage_loaders: OrderedDict = OrderedDict()

    def _runs(self, loader: str, epoch: int) -> bool:
        period = self.periods.get(loader, 1)
        return period > 0 and epoch % period == 0

    def on_stage_start(self, runner) -> None:
        """Keep the stage's loaders; refuse a valid loader that never runs or an empty epoch."""
        self._stage_loaders = OrderedDict(runner.loaders)
        if self.periods.get(runner.valid_loader, 1) < 1:
            raise ConfigError(f"PeriodicLoaderCallback: the period of the valid loader {runner.valid_loader!r} "
                              f"should be > 0, got 0")
        if set(self.periods) == set(runner.loaders):
            empty = [epoch for epoch in range(1, runner.num_epochs + 1)
                     if not any(self._runs(name, epoch) for name in runner.loaders)]
            if empty:
                raise ConfigError(f"PeriodicLoaderCallback: no loader would run in epoch {empty[0]} of stage "
                                  f"{runner.stage_name!r} (periods {self.periods})")

    def on_epoch_start(self, runner) -> None:
        """Keep only this epoch's loaders; forget the valid metrics when validation is skipped."""
        loaders = OrderedDict((name, loader) for name, loader in runner.loaders.items()
                              if self._runs(name, runner.epoch))
        if not loaders:
            raise ConfigError(f"PeriodicLoaderCallback: no loader runs in epoch {runner.epoch} of stage "
                              f"{runner.stage_name!r} (periods {self.periods})")
        runner.loaders = loaders
        if runner.valid_loader not in loaders:
            runner.valid_metrics = {}

    def on_epoch_end(self, runner) -> None:
        """Give the runner back every loader of the stage."""
        runner.loaders = OrderedDict(self._stage_loaders)
