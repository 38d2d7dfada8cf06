"""ValidationManagerCallback: the main metric, the valid metrics and the best epoch (internal,
Catalyst 20.x ``ValidationManagerCallback``)."""
from __future__ import annotations

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["ValidationManagerCallback"]


class ValidationManagerCallback(Callback):
    """Copies the valid loader's ``loader_metrics`` into ``runner.valid_metrics`` at its end and,
    at each epoch end, sets ``runner.is_best_valid`` and ``runner.best_valid_metrics`` by
    ``runner.main_metric`` (lower is better when ``runner.minimize_metric``). Best metrics start
    over with every stage. Its state lives in the runner (saved in full checkpoints).

    Raises:
        ConfigError: at the end of the first valid loader, the main metric is not produced (the
            message lists the metrics there are).
    """

    def __init__(self):
        super().__init__(CallbackOrder.Validation)

    def on_loader_end(self, runner):
        """Take the valid loader's metrics; check the main metric is there."""
        if runner.loader_name != runner.valid_loader or runner.is_infer_stage:
            return
        if runner.main_metric not in runner.loader_metrics:
            raise ConfigError(f"main_metric {runner.main_metric!r} is not produced by any callback on loader "
                              f"{runner.loader_name!r}; metrics: {sorted(runner.loader_metrics)}")
        runner.valid_metrics = dict(runner.loader_metrics)

    def on_epoch_end(self, runner):
        """Decide whether this epoch is the best of the stage."""
        if runner.is_infer_stage or runner.main_metric not in runner.valid_metrics:
            runner.is_best_valid = False
            return
        value, best = runner.valid_metrics[runner.main_metric], runner.best_valid_metrics.get(runner.main_metric)
        runner.is_best_valid = best is None or (value < best if runner.minimize_metric else value > best)
        if runner.is_best_valid:
            runner.best_valid_metrics = dict(runner.valid_metrics)
