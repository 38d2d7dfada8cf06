"""Aggregating several losses into one (Catalyst 20.x ``CriterionAggregatorCallback``).

Criterion callbacks write their losses (0-dim tensors with gradients) into
``runner.batch_metrics`` under their prefixes; this callback combines some of them into a new key
— by default ``loss``, the key the optimizer callback back-propagates — before the optimizer
runs (order ``MetricAggregation``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.callbacks import criterion

__all__ = ["CriterionAggregatorCallback"]

_MODES = ("sum", "mean", "weighted_sum", "weighted_mean")


def _criterion_prefixes(runner) -> list[str]:
    """The prefixes of the criterion callbacks of ``runner`` (the losses they write)."""
    return [cb.prefix for cb in runner.callbacks.values() if isinstance(cb, criterion.CriterionCallback)]


class CriterionAggregatorCallback(Callback):
    """Writes ``multiplier · aggregate(losses)`` into ``runner.batch_metrics[prefix]``.

    Args:
        prefix: key of the aggregated loss (``"loss"`` for the optimizer to use it).
        loss_keys: the ``batch_metrics`` keys to combine: a name, a list of names, or a dict
            name → weight (required by the weighted modes). ``None`` takes the prefixes of every
            ``CriterionCallback`` of the stage.
        loss_aggregate_fn: ``"sum"``, ``"mean"``, ``"weighted_sum"`` (Σ wᵢ·lossᵢ) or
            ``"weighted_mean"`` (Σ wᵢ·lossᵢ / Σ wᵢ). A dict ``loss_keys`` with ``"sum"`` or
            ``"mean"`` uses its keys and ignores the weights.
        multiplier: scale of the result.

    Raises:
        ConfigError: bad ``prefix``, ``loss_aggregate_fn`` or ``loss_keys`` (at construction);
            a loss key missing from a batch's metrics (at the batch, naming the keys there).

    Example (YAML)::

        callbacks_params:
          loss_ce: {callback: CriterionCallback, prefix: loss_ce, criterion_key: ce}
          loss_dice: {callback: CriterionCallback, prefix: loss_dice, criterion_key: dice}
          loss: {callback: CriterionAggregatorCallback, prefix: loss,
                 loss_keys: {loss_ce: 1.0, loss_dice: 0.5}, loss_aggregate_fn: weighted_sum}
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The loss it writes: ``(prefix,)``."""
        return (self.prefix,)

    def __init__(self, prefix: str = "loss", loss_keys: str | Sequence[str] | Mapping[str, float] | None = None,
                 loss_aggregate_fn: str = "sum", multiplier: float = 1.0):
        super().__init__(order=CallbackOrder.MetricAggregation, node=CallbackNode.All)
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"CriterionAggregatorCallback: prefix should be a non-empty string, got {prefix!r}")
        if loss_aggregate_fn not in _MODES:
            raise ConfigError(f"CriterionAggregatorCallback: loss_aggregate_fn={loss_aggregate_fn!r}; "
                              f"allowed: {', '.join(_MODES)}")
        if loss_aggregate_fn.startswith("weighted") and not isinstance(loss_keys, Mapping):
            raise ConfigError(f"CriterionAggregatorCallback: loss_aggregate_fn={loss_aggregate_fn!r} needs loss_keys "
                              f"as a mapping name -> weight, got {loss_keys!r}")
        if isinstance(loss_keys, str):
            loss_keys = [loss_keys]
        self.prefix, self.mode, self.multiplier = prefix, loss_aggregate_fn, float(multiplier)
        if loss_keys is None:
            self.weights = None  # resolved at stage start
        elif isinstance(loss_keys, Mapping):
            self.weights = {str(key): float(weight) for key, weight in loss_keys.items()}
        else:
            self.weights = {str(key): 1.0 for key in loss_keys}
        if self.weights is not None and (not self.weights or prefix in self.weights):
            raise ConfigError(f"CriterionAggregatorCallback: loss_keys should be non-empty and not contain the "
                              f"prefix {prefix!r}, got {list(self.weights)}")
        self._keys: dict[str, float] = dict(self.weights or {})

    def on_stage_start(self, runner) -> None:
        """Resolve ``loss_keys=None`` to the stage's criterion callbacks' prefixes.

        Raises:
            ConfigError: there is no criterion callback to aggregate.
        """
        if self.weights is None:
            self._keys = {key: 1.0 for key in _criterion_prefixes(runner) if key != self.prefix}
            if not self._keys:
                raise ConfigError(f"CriterionAggregatorCallback (prefix {self.prefix!r}): loss_keys is not given and "
                                  "the stage has no CriterionCallback; list the losses in loss_keys")

    def _losses(self, runner) -> list[torch.Tensor]:
        missing = [key for key in self._keys if key not in runner.batch_metrics]
        if missing:
            raise ConfigError(f"CriterionAggregatorCallback (prefix {self.prefix!r}): losses {missing} are not in "
                              f"runner.batch_metrics (it has {sorted(runner.batch_metrics)})")
        weighted = self.mode.startswith("weighted")
        return [runner.batch_metrics[key] * weight if weighted else runner.batch_metrics[key]
                for key, weight in self._keys.items()]

    def on_batch_end(self, runner) -> None:
        """Write the aggregated loss (a tensor that keeps the gradients of its parts)."""
        total = sum(self._losses(runner))
        if self.mode == "mean":
            total = total / len(self._keys)
        elif self.mode == "weighted_mean":
            total = total / sum(self._keys.values())
        runner.batch_metrics[self.prefix] = total * self.multiplier if self.multiplier != 1.0 else total
