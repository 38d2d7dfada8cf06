"""Base classes of the metric callbacks (Catalyst 20.x ``BatchMetricCallback``/``LoaderMetricCallback``).

Three ways to turn a batch's ``runner.output[output_key]`` and ``runner.input[input_key]`` into
logged numbers, none of which syncs the device per batch:

- :class:`BatchMetricCallback`: a per-sample-mean metric (accuracy, MAP@k). Each batch writes 0-dim
  tensors into ``runner.batch_metrics``; the runner's batch-size-weighted loader mean is then the
  exact loader value.
- :class:`StatisticsMetricCallback`: a metric of additive statistics (Dice, IoU, F1 from
  tp/fp/fn; a confusion matrix). Each batch writes the batch's value and adds its statistics to a
  running float64 sum on the device; at loader end the value of the summed statistics replaces the mean of the
  batch values in ``runner.loader_metrics`` (a Dice of the loader, not a mean of batch Dices).
- :class:`LoaderMetricCallback`: a metric that needs every sample (AUC). Batches append detached
  outputs and targets to ``List`` accumulators; the metric is computed once in ``on_loader_end``.

In a distributed run the loader-level values are computed from the statistics or samples of all
ranks (gathered in ``on_loader_end``), so every rank logs the same number.

State (accumulators mid-loader) is saved by ``state_dict``: a run stopped mid-loader resumes with
the loader's statistics so far. Accumulators start empty at ``on_loader_start`` and are emptied
again after ``on_loader_end``, so an epoch-end checkpoint holds none.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner import distributed
from mlcomp.runner.accumulators import List
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = [
    "BatchMetricCallback",
    "LoaderMetricCallback",
    "StatisticsMetricCallback",
    "concat_on_cpu",
    "gather_from_ranks",
    "get_batch_value",
]


def get_batch_value(mapping: Mapping[str, Any], key: str, where: str, owner: Callback) -> Any:
    """``mapping[key]``, or a :class:`ConfigError` naming the callback, the key and the keys there.

    Args:
        where: ``"runner.input"`` or ``"runner.output"``, for the message.
    """
    try:
        return mapping[key]
    except (KeyError, TypeError):
        keys = sorted(mapping) if isinstance(mapping, Mapping) else type(mapping).__name__
        raise ConfigError(f"{type(owner).__name__}: {where} has no key {key!r} (it has {keys}); "
                          f"set the callback's input_key/output_key") from None


def concat_on_cpu(accumulator: List) -> torch.Tensor:
    """The tensors of a ``List`` accumulator concatenated along dim 0 on the CPU.

    Unlike ``List.compute()`` this also works when a resumed run mixes values restored from a
    checkpoint (read onto the CPU) with new ones on a GPU.
    """
    return torch.cat([value.cpu() for value in accumulator.values])


def gather_from_ranks(value: Any) -> list:
    """``value`` of every rank, in rank order (``[value]`` when not distributed)."""
    if not distributed.is_distributed():
        return [value]
    values = [None] * distributed.world_size()
    torch.distributed.all_gather_object(values, value)
    return values


class _PairMetricCallback(Callback):
    """Common part: keys, prefix, multiplier, and reading the (outputs, targets) pair of a batch."""

    def __init__(self, prefix: str, input_key: str = "targets", output_key: str = "logits",
                 multiplier: float = 1.0, order: int = CallbackOrder.Metric):
        super().__init__(order=order, node=CallbackNode.All)
        for name, value in (("prefix", prefix), ("input_key", input_key), ("output_key", output_key)):
            if not isinstance(value, str):
                raise ConfigError(f"{type(self).__name__}: {name} should be a string, got {value!r}")
        self.prefix, self.input_key, self.output_key = prefix, input_key, output_key
        self.multiplier = float(multiplier)

    def _pair(self, runner) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Detached ``(outputs, targets)`` of the current batch; ``None`` in an ``infer*`` loader
        whose batches have no targets (nothing to measure there)."""
        if runner.is_infer_loader and self.input_key not in runner.input:
            return None
        outputs = get_batch_value(runner.output, self.output_key, "runner.output", self)
        targets = get_batch_value(runner.input, self.input_key, "runner.input", self)
        return (outputs.detach() if outputs.requires_grad else outputs,  # targets rarely need it
                targets.detach() if targets.requires_grad else targets)

    def _named(self, value) -> dict[str, Any]:
        """``{prefix: value}`` or ``{prefix + key: value}`` for a dict, scaled by ``multiplier``."""
        items = value.items() if type(value) is dict or isinstance(value, Mapping) else (("", value),)
        scale = self.multiplier
        return {f"{self.prefix}{key}": (v if scale == 1.0 else v * scale) for key, v in items}


class BatchMetricCallback(_PairMetricCallback):
    """Computes ``metric_fn(outputs, targets, **metric_kwargs)`` every batch into ``batch_metrics``.

    Args:
        prefix: name of the metric; a dict result ``{"01": v}`` is logged as ``prefix + "01"``.
        metric_fn: returns a 0-dim tensor or a dict suffix → 0-dim tensor, on the device.
        input_key: key of the targets in ``runner.input``.
        output_key: key of the predictions in ``runner.output``.
        multiplier: scale of the logged value.
        **metric_kwargs: passed to ``metric_fn``.

    Raises:
        ConfigError: a key is not a string (at construction), or missing in a batch.
    """

    def __init__(self, prefix: str, metric_fn: Callable, input_key: str = "targets", output_key: str = "logits",
                 multiplier: float = 1.0, **metric_kwargs):
        super().__init__(prefix, input_key, output_key, multiplier)
        self.metric_fn = metric_fn
        self.metric_kwargs = metric_kwargs

    def on_batch_end(self, runner) -> None:
        """Write the batch's value(s) into ``runner.batch_metrics`` (no device sync)."""
        pair = self._pair(runner)
        if pair is not None:
            runner.batch_metrics.update(self._named(self.metric_fn(*pair, **self.metric_kwargs)))


class StatisticsMetricCallback(_PairMetricCallback):
    """A metric of additive statistics: exact at the loader level (see the module docstring).

    Subclasses implement :meth:`statistics` (a tensor per batch, summable over batches) and
    :meth:`metrics` (statistics → a 0-dim tensor or a dict suffix → tensor).
    """

    def __init__(self, prefix: str, input_key: str = "targets", output_key: str = "logits",
                 multiplier: float = 1.0, order: int = CallbackOrder.Metric):
        super().__init__(prefix, input_key, output_key, multiplier, order)
        self._total: torch.Tensor | None = None  # float64, on the device of the statistics

    def statistics(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's statistics (on the device)."""
        raise NotImplementedError

    def metrics(self, statistics: torch.Tensor):
        """The metric value(s) of ``statistics``."""
        raise NotImplementedError

    def loader_statistics(self) -> torch.Tensor | None:
        """Statistics summed over the loader's batches so far and over the ranks (CPU float64),
        or ``None`` before the first batch."""
        if self._total is None:
            return None
        return sum(gather_from_ranks(self._total.cpu()))

    def on_loader_start(self, runner) -> None:
        """Start the loader's statistics from zero."""
        self._total = None

    def on_batch_end(self, runner) -> None:
        """Add the batch's statistics and log the batch's value (no device sync)."""
        pair = self._pair(runner)
        if pair is not None:
            runner.batch_metrics.update(self._named(self.metrics(self._add(self.statistics(*pair)))))

    def _add(self, statistics: torch.Tensor) -> torch.Tensor:
        """Add ``statistics`` to the loader's running sum (one add on the device); returns them."""
        value = statistics.detach().to(torch.float64)
        if self._total is None:
            self._total = value
        else:  # .to(): a sum restored from a checkpoint was read onto the CPU
            self._total = self._total.to(value.device) + value
        return statistics

    def on_loader_end(self, runner) -> None:
        """Replace the batch-mean values in ``runner.loader_metrics`` by the loader's exact ones."""
        statistics = self.loader_statistics()
        if statistics is not None:
            values = self._named(self.metrics(statistics))
            runner.loader_metrics.update({key: float(value) for key, value in values.items()})
        self._total = None

    def state_dict(self) -> dict[str, Any]:
        """The loader's statistics so far."""
        return {"total": self._total}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: ``total`` is missing.
        """
        self._total = state["total"]


class LoaderMetricCallback(_PairMetricCallback):
    """Computes ``metric_fn(outputs, targets, **metric_kwargs)`` once per loader on every sample.

    Batches append detached ``outputs``/``targets`` (kept on the device) to ``List`` accumulators;
    ``on_loader_end`` concatenates them (one transfer to the CPU), gathers the ranks' samples,
    calls ``metric_fn`` and writes floats into ``runner.loader_metrics``. ``metric_fn`` returns a
    0-dim tensor/number or a dict suffix → value. Arguments as in :class:`BatchMetricCallback`.
    """

    def __init__(self, prefix: str, metric_fn: Callable, input_key: str = "targets", output_key: str = "logits",
                 multiplier: float = 1.0, **metric_kwargs):
        super().__init__(prefix, input_key, output_key, multiplier)
        self.metric_fn = metric_fn
        self.metric_kwargs = metric_kwargs
        self._outputs, self._targets = List(), List()

    def on_loader_start(self, runner) -> None:
        """Forget the previous loader's samples."""
        self._outputs.reset()
        self._targets.reset()

    def on_batch_end(self, runner) -> None:
        """Keep the batch's outputs and targets (detached, on the device)."""
        pair = self._pair(runner)
        if pair is not None:
            self._outputs.update(pair[0])
            self._targets.update(pair[1])

    def on_loader_end(self, runner) -> None:
        """Compute the metric on the loader's samples (of all ranks) into ``runner.loader_metrics``."""
        if self._outputs.values:
            outputs = torch.cat(gather_from_ranks(concat_on_cpu(self._outputs)))
            targets = torch.cat(gather_from_ranks(concat_on_cpu(self._targets)))
            value = self.metric_fn(outputs, targets, **self.metric_kwargs)
            runner.loader_metrics.update({key: float(v) for key, v in self._named(value).items()})
        self.on_loader_start(runner)

    def state_dict(self) -> dict[str, Any]:
        """The loader's samples so far."""
        return {"outputs": self._outputs.state_dict(), "targets": self._targets.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: ``outputs`` or ``targets`` is missing.
        """
        self._outputs.load_state_dict(state["outputs"])
        self._targets.load_state_dict(state["targets"])
