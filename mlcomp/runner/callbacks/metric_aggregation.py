"""One metric made of others, per batch, loader or epoch (Catalyst 20.05+'s
``MetricAggregationCallback``; :class:`CriterionAggregatorCallback` is 20.02's loss-only form)."""
from __future__ import annotations

from typing import Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = ["MetricAggregationCallback"]

MODES = ("sum", "mean", "weighted_sum", "weighted_mean")
SCOPES = {"batch": "batch_metrics", "loader": "loader_metrics", "epoch": "epoch_metrics"}


class MetricAggregationCallback(Callback):
    """Writes ``multiplier · aggregate(metrics)`` under ``prefix`` into the batch metrics (at
    each batch end: a tensor keeping its parts' gradients, so ``prefix: loss`` is what the
    optimizer back-propagates), the loader metrics (at each loader end) or the epoch metrics (at
    each epoch end).

    Args:
        prefix: the key written.
        metrics: the keys to combine: a name or a list (``sum``/``mean``), a dict name → weight
            (``weighted_sum``: Σ wᵢ·mᵢ, ``weighted_mean``: Σ wᵢ·mᵢ / Σ wᵢ); ``None``: every
            metric of the scope (``sum``/``mean`` only).
        mode: ``"sum"``, ``"mean"``, ``"weighted_sum"`` or ``"weighted_mean"``.
        scope: ``"batch"``, ``"loader"`` or ``"epoch"`` (kept as ``aggregation_scope``).
        multiplier: scale of the result.

    Raises:
        ValueError: an unknown mode or scope, an empty prefix, or ``metrics`` of the wrong form
            for the mode.
        ConfigError: a metric missing when aggregating (naming the metrics there are).
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metric it writes: ``(prefix,)``."""
        return (self.prefix,)

    def __init__(self, prefix: str, metrics: str | Sequence[str] | Mapping[str, float] | None = None,
                 mode: str = "mean", scope: str = "batch", multiplier: float = 1.0):
        super().__init__(order=CallbackOrder.MetricAggregation, node=CallbackNode.All)
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"MetricAggregationCallback: prefix should be a non-empty string, got {prefix!r}")
        if mode not in MODES or scope not in SCOPES:
            raise ValueError(f"MetricAggregationCallback: mode should be one of {MODES} and scope one of "
                             f"{tuple(SCOPES)}, got mode={mode!r}, scope={scope!r}")
        weighted = mode.startswith("weighted")
        if weighted != isinstance(metrics, Mapping) or (not weighted and metrics is not None
                                                        and not isinstance(metrics, (str, list, tuple))):
            raise ValueError(f"MetricAggregationCallback: mode {mode!r} takes metrics as "
                             f"{'a dict name -> weight' if weighted else 'a name, a list of names or None'}, "
                             f"got {metrics!r}")
        if isinstance(metrics, str):
            metrics = [metrics]
        self.prefix, self.mode, self.aggregation_scope, self.multiplier = prefix, mode, scope, float(multiplier)
        self.weights = None if metrics is None else (
            {str(k): float(w) for k, w in metrics.items()} if weighted else {str(k): 1.0 for k in metrics})

    def _aggregate(self, runner, scope: str) -> None:
        if scope != self.aggregation_scope:
            return
        values = getattr(runner, SCOPES[scope])
        weights = self.weights if self.weights is not None else {k: 1.0 for k in values if k != self.prefix}
        missing = [key for key in weights if key not in values]
        if missing or not weights:
            raise ConfigError(f"MetricAggregationCallback (prefix {self.prefix!r}): metrics {missing} are not in "
                              f"the {scope} metrics (they are {sorted(values)})")
        total = sum(values[key] * weight for key, weight in weights.items())
        if self.mode in ("mean", "weighted_mean"):
            total = total / sum(weights.values())
        values[self.prefix] = total * self.multiplier if self.multiplier != 1.0 else total

    def on_batch_end(self, runner) -> None:
        """Aggregate the batch metrics (scope ``batch``)."""
        self._aggregate(runner, "batch")

    def on_loader_end(self, runner) -> None:
        """Aggregate the loader metrics (scope ``loader``)."""
        self._aggregate(runner, "loader")

    def on_epoch_end(self, runner) -> None:
        """Aggregate the epoch metrics (scope ``epoch``)."""
        self._aggregate(runner, "epoch")
