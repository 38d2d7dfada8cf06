"""CriterionCallback: the loss of a batch into ``runner.batch_metrics`` (Catalyst 20.x)."""
from __future__ import annotations

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder

__all__ = ["CriterionCallback"]


def _keys(key, name: str) -> list[str]:
    if isinstance(key, str):
        return [key]
    if isinstance(key, (list, tuple)) and key and all(isinstance(k, str) for k in key):
        return list(key)
    raise ValueError(f"CriterionCallback: argument {name} should be a key or a list of keys, got {key!r}")


class CriterionCallback(Callback):
    """``batch_metrics[prefix] = multiplier · criterion(output[output_key], input[input_key])``.

    The loss stays a 0-dim tensor on the device (the optimizer callback back-propagates it).
    Lists of keys pass several tensors positionally, outputs first. ``infer*`` loaders are skipped.

    Args:
        input_key: key (or keys) of the batch: the targets.
        output_key: key (or keys) of ``runner.output``: the predictions.
        prefix: name of the metric written.
        criterion_key: ignored (one criterion per stage), kept for Catalyst configs.
        multiplier: factor applied to the loss.

    Raises:
        ValueError: a key argument is not a string or a list of strings.
        ConfigError: at stage start, the stage has no criterion; during a batch, a key is missing
            (the message lists the keys there are).
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The loss it writes: ``(prefix,)``."""
        return (self.prefix,)

    def __init__(self, input_key="targets", output_key="logits", prefix: str = "loss",
                 criterion_key=None, multiplier: float = 1.0):
        super().__init__(CallbackOrder.Metric)
        self.input_keys, self.output_keys = _keys(input_key, "input_key"), _keys(output_key, "output_key")
        self.prefix, self.criterion_key, self.multiplier = prefix, criterion_key, float(multiplier)
        self._single = len(self.input_keys) == len(self.output_keys) == 1

    def on_stage_start(self, runner):
        """Check that the stage has a criterion."""
        if runner.criterion is None:
            raise ConfigError(f"stage {runner.stage_name!r}: CriterionCallback needs a criterion, the stage has none")

    def on_batch_end(self, runner):
        """Compute the loss of the batch."""
        if runner.is_infer_loader:
            return
        try:
            if self._single:
                args = (runner.output[self.output_keys[0]], runner.input[self.input_keys[0]])
            else:
                args = [runner.output[k] for k in self.output_keys] + [runner.input[k] for k in self.input_keys]
        except KeyError as e:
            raise ConfigError(f"CriterionCallback {self.prefix!r}: key {e} not found; output keys "
                              f"{list(runner.output)}, batch keys {list(runner.input)}") from None
        loss = runner.criterion(*args)
        runner.batch_metrics[self.prefix] = loss * self.multiplier if self.multiplier != 1.0 else loss
