"""EarlyStoppingCallback: end the stage when a valid metric stops improving (Catalyst 20.x,
ignite's ``EarlyStopping``)."""
from __future__ import annotations

from typing import Any, Mapping

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["EarlyStoppingCallback"]


class EarlyStoppingCallback(Callback):
    """Sets ``runner.need_early_stop`` after ``patience`` epochs without an improvement of more
    than ``min_delta`` of ``valid_metrics[metric]``; the stage ends after that epoch. Counters
    start over with every stage and are saved in full checkpoints.

    Args:
        patience: epochs without improvement to tolerate (an int >= 1).
        metric: the valid metric; ``None`` = the runner's main metric.
        minimize: lower is better; ``None`` = the runner's ``minimize_metric``.
        min_delta: the smallest change that counts as an improvement (>= 0).

    Raises:
        ValueError: bad ``patience`` or ``min_delta``.
        ConfigError: at epoch end, the metric is not among the valid metrics.
    """

    metric_names = ()  # writes no metric

    def __init__(self, patience: int, metric: str | None = "loss", minimize: bool | None = True,
                 min_delta: float = 1e-6):
        super().__init__(CallbackOrder.External)
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStoppingCallback: argument patience should be a positive int, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"EarlyStoppingCallback: argument min_delta should be >= 0, got {min_delta!r}")
        self.patience, self.metric, self.minimize, self.min_delta = patience, metric, minimize, float(min_delta)
        self.best_score, self.num_bad_epochs = None, 0

    def on_stage_start(self, runner):
        """Start counting over."""
        self.best_score, self.num_bad_epochs = None, 0

    def on_epoch_end(self, runner):
        """Count an epoch with or without improvement."""
        if runner.is_infer_stage:
            return
        metric = self.metric or runner.main_metric
        if metric not in runner.valid_metrics:
            raise ConfigError(f"EarlyStoppingCallback: metric {metric!r} is not a valid metric; "
                              f"valid metrics: {sorted(runner.valid_metrics)}")
        score = runner.valid_metrics[metric]
        minimize = runner.minimize_metric if self.minimize is None else self.minimize
        if self.best_score is None or (self.best_score - score if minimize else score - self.best_score) > self.min_delta:
            self.best_score, self.num_bad_epochs = score, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs >= self.patience:
            runner.need_early_stop = True

    def state_dict(self) -> dict[str, Any]:
        """The best score and the epochs without improvement."""
        return {"best_score": self.best_score, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best_score, self.num_bad_epochs = state["best_score"], state["num_bad_epochs"]
