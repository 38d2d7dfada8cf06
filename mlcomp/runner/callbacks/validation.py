"""ValidationManagerCallback: the main metric, the valid metrics and the best epoch (internal,
Catalyst 20.x ``ValidationManagerCallback``)."""
from __future__ import annotations

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["ValidationManagerCallback"]


def _declared_names(callback: Callback):
    """``callback.metric_names`` when its own class (or the instance) declares them, else None: a
    subclass inheriting a declaration may write more metrics than its parent says."""
    if "metric_names" in vars(type(callback)) or "metric_names" in vars(callback):
        return callback.metric_names
    return None


class ValidationManagerCallback(Callback):
    """Copies the valid loader's ``loader_metrics`` into ``runner.valid_metrics`` at its end and,
    at each epoch end, sets ``runner.is_best_valid`` and ``runner.best_valid_metrics`` by
    ``runner.main_metric`` (lower is better when ``runner.minimize_metric``). Best metrics start
    over with every stage. Its state lives in the runner (saved in full checkpoints).

    Raises:
        ConfigError: the main metric is not produced: at the stage start when every callback
            declares its ``metric_names`` and the runner's ``handle_batch`` declares that it writes
            no metric (``handle_batch.metric_names == ()``, as ``SupervisedRunner``'s does), else at
            the end of the first valid loader (the message lists the metrics there are).
    """

    metric_names = ()  # writes no metric

    def __init__(self):
        super().__init__(CallbackOrder.Validation)

    def on_stage_start(self, runner):
        """Check the main metric against the names the stage's callbacks declare, when all do."""
        declared = [_declared_names(callback) for callback in runner.callbacks.values()]
        if (runner.is_infer_stage or any(names is None for names in declared)
                or getattr(getattr(type(runner), "handle_batch", None), "metric_names", None) != ()):
            return
        produced = sorted({name for names in declared for name in names})
        if runner.main_metric not in produced:
            raise ConfigError(f"stage {runner.stage_name!r}: main_metric {runner.main_metric!r} is not produced by "
                              f"any callback of the stage; they produce {produced}; set stage_params.main_metric "
                              f"to one of them or add a callback that computes it")

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
