"""OptunaPruningCallback: report the main metric to an Optuna trial each epoch and stop the run when
the trial's pruner says so (Catalyst 20.x ``OptunaPruningCallback``, alias ``OptunaCallback``).

A config names it without arguments (``callback: OptunaPruningCallback``) and ``mlcomp tune``
supplies the trial it runs (:func:`trial_scope`); code of the notebook API passes the trial itself.
Optuna is imported only when a trial prunes.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["OptunaCallback", "OptunaPruningCallback", "trial_scope"]

_TRIAL: contextvars.ContextVar[Any] = contextvars.ContextVar("mlcomp_optuna_trial", default=None)


@contextlib.contextmanager
def trial_scope(trial) -> Iterator[None]:
    """Within the block, an :class:`OptunaPruningCallback` made without a trial uses ``trial``
    (what ``mlcomp tune`` wraps each trial's run in)."""
    token = _TRIAL.set(trial)
    try:
        yield
    finally:
        _TRIAL.reset(token)


class OptunaPruningCallback(Callback):
    """After each training epoch, reports ``valid_metrics[main_metric]`` to the trial at step
    ``global_epoch`` and raises ``optuna.TrialPruned`` when ``trial.should_prune()``.

    Steps count epochs over all stages (Catalyst used the stage's epoch, which repeats in a
    second stage, where Optuna keeps only the first value of a step). Infer stages report nothing.

    Args:
        trial: an ``optuna.Trial``; ``None`` takes, at stage start, the experiment's ``trial``
            attribute (Catalyst's way) or else the trial ``mlcomp tune`` runs.

    Raises:
        ConfigError: at stage start, no trial is found (the config was not run by
            ``mlcomp tune``); at epoch end, the main metric is not a valid metric.
        optuna.TrialPruned: the trial's pruner stops it.
    """

    metric_names = ()  # writes no metric

    def __init__(self, trial=None):
        super().__init__(CallbackOrder.External)
        self.trial = trial

    def on_stage_start(self, runner):
        """Find the trial when none was given."""
        if self.trial is None:
            self.trial = getattr(runner.experiment, "trial", None) or _TRIAL.get()
        if self.trial is None:
            raise ConfigError("OptunaPruningCallback: no Optuna trial to report to; run the config "
                              "with `mlcomp tune`, or pass trial= in code")

    def on_epoch_end(self, runner):
        """Report the epoch's main metric; prune when the pruner says so."""
        if runner.is_infer_stage:
            return
        metric = runner.main_metric
        if metric not in runner.valid_metrics:
            raise ConfigError(f"OptunaPruningCallback: main metric {metric!r} is not a valid metric; "
                              f"valid metrics: {sorted(runner.valid_metrics)}")
        value = float(runner.valid_metrics[metric])
        self.trial.report(value, step=runner.global_epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at stage {runner.stage_name} epoch {runner.epoch} "
                                     f"({metric}={value:.4g})")


OptunaCallback = OptunaPruningCallback
