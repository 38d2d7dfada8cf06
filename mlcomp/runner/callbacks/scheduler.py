"""SchedulerCallback: steps the LR scheduler per batch or per epoch (Catalyst 20.x)."""
from __future__ import annotations

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder
from mlcomp.runner.schedulers import OneCycleLRWithWarmup

__all__ = ["SchedulerCallback"]

BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR, OneCycleLRWithWarmup)
MODES = ("batch", "epoch")


class SchedulerCallback(Callback):
    """Steps ``runner.scheduler`` after every train batch (``mode="batch"``) or every epoch
    (``mode="epoch"``); ``ReduceLROnPlateau`` is fed ``valid_metrics[reduced_metric]``
    (default: the main metric). Writes the learning rate of the first parameter group into the
    train loaders' ``loader_metrics["lr"]``.

    Args:
        scheduler_key: ignored (one scheduler per stage), kept for Catalyst configs.
        mode: ``"batch"`` or ``"epoch"``; default ``"batch"`` for OneCycleLR, CyclicLR and
            OneCycleLRWithWarmup (whose phases, given in epochs, are spread over the batches of
            each train loader at its start), else ``"epoch"``.
        reduced_metric: the valid metric for ``ReduceLROnPlateau``.
        reduce_metric: Catalyst 20.02's name of ``reduced_metric``.

    Raises:
        ValueError: an unknown ``mode``, or both ``reduced_metric`` and ``reduce_metric``.
        ConfigError: at stage start, the stage has no scheduler; at epoch end, the reduced
            metric is not among the valid metrics.
    """

    metric_names = ("lr",)  # a train loader's learning rate

    def __init__(self, scheduler_key=None, mode: str | None = None, reduced_metric: str | None = None,
                 reduce_metric: str | None = None):
        super().__init__(CallbackOrder.Scheduler)
        if mode is not None and mode not in MODES:
            raise ValueError(f"SchedulerCallback: argument mode should be one of {MODES}, got {mode!r}")
        if reduced_metric is not None and reduce_metric is not None:
            raise ValueError("SchedulerCallback: give reduced_metric or its older name reduce_metric, not both")
        reduced_metric = reduce_metric if reduced_metric is None else reduced_metric
        self.scheduler_key, self.mode, self.reduced_metric = scheduler_key, mode, reduced_metric
        self._mode = mode

    def on_stage_start(self, runner):
        """Check the scheduler and settle the mode."""
        if runner.scheduler is None:
            raise ConfigError(f"stage {runner.stage_name!r}: SchedulerCallback needs a scheduler, the stage has none")
        self._mode = self.mode or ("batch" if isinstance(runner.scheduler, BATCH_SCHEDULERS) else "epoch")

    def on_loader_start(self, runner):
        """Spread an OneCycleLRWithWarmup's epochs over this train loader's batches."""
        if self._mode == "batch" and runner.need_backward_pass and isinstance(runner.scheduler, OneCycleLRWithWarmup):
            runner.scheduler.recalculate(runner.loader_len, runner.epoch - 1)

    def on_batch_end(self, runner):
        """Step in batch mode."""
        if self._mode == "batch" and runner.need_backward_pass:
            self._step(runner)

    def on_loader_end(self, runner):
        """Record the learning rate of a train loader."""
        if runner.need_backward_pass:
            runner.loader_metrics["lr"] = float(runner.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, runner):
        """Step in epoch mode."""
        if self._mode == "epoch" and not runner.is_infer_stage:
            self._step(runner)

    def _step(self, runner):
        scheduler = runner.scheduler
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            metric = self.reduced_metric or runner.main_metric
            if metric not in runner.valid_metrics:
                raise ConfigError(f"SchedulerCallback: reduced_metric {metric!r} is not a valid metric; "
                                  f"valid metrics: {sorted(runner.valid_metrics)}")
            scheduler.step(runner.valid_metrics[metric])
        else:
            scheduler.step()
