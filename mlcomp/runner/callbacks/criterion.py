"""CriterionCallback: the loss of a batch into ``runner.batch_metrics`` (Catalyst 20.x)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackOrder
from mlcomp.runner.registry import check_arguments

__all__ = ["CriterionCallback"]


def _keys(key, name: str) -> list[str] | dict[str, str]:
    """``key`` as a list of keys, or as a mapping batch key → criterion keyword (Catalyst's form)."""
    if isinstance(key, str):
        return [key]
    if isinstance(key, (list, tuple)) and key and all(isinstance(k, str) for k in key):
        return list(key)
    if isinstance(key, Mapping) and key and all(isinstance(k, str) and isinstance(v, str) for k, v in key.items()):
        return dict(key)
    raise ValueError(f"CriterionCallback: argument {name} should be a key, a list of keys or a mapping of keys "
                     f"to the criterion's keyword arguments, got {key!r}")


class CriterionCallback(Callback):
    """``batch_metrics[prefix] = multiplier · criterion(output[output_key], input[input_key])``.

    The loss stays a 0-dim tensor on the device (the optimizer callback back-propagates it).
    Lists of keys pass several tensors positionally, outputs first; when either key argument is a
    mapping (Catalyst 20.x's form, ``{batch key: keyword}``), every tensor goes by keyword (a list
    then uses the keys as keywords). ``infer*`` loaders are skipped.

    Args:
        input_key: key (or keys, or mapping) of the batch: the targets.
        output_key: key (or keys, or mapping) of ``runner.output``: the predictions.
        prefix: name of the metric written.
        criterion_key: the criterion to use when the stage has several (``criterion_params`` with
            ``_key_value``); ignored when it has one.
        multiplier: factor applied to the loss.
        **criterion_kwargs: further keyword arguments of every call (Catalyst 20.05+'s
            ``**metric_kwargs``).

    Raises:
        ValueError: a key argument is not a string, a list of strings or a mapping of strings.
        ConfigError: at stage start, the stage has no criterion, or several and ``criterion_key``
            names none of them, or the criterion does not take the keywords it would get;
            during a batch, a key is missing (the message lists the keys).
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The loss it writes: ``(prefix,)``."""
        return (self.prefix,)

    def __init__(self, input_key="targets", output_key="logits", prefix: str = "loss",
                 criterion_key: str | None = None, multiplier: float = 1.0, **criterion_kwargs: Any):
        super().__init__(CallbackOrder.Metric)
        self.input_keys, self.output_keys = _keys(input_key, "input_key"), _keys(output_key, "output_key")
        self.prefix, self.criterion_key, self.multiplier = prefix, criterion_key, float(multiplier)
        self.criterion_kwargs = criterion_kwargs
        self._by_keyword = isinstance(self.input_keys, dict) or isinstance(self.output_keys, dict)
        self._single = not self._by_keyword and len(self.input_keys) == len(self.output_keys) == 1
        self._criterion = None

    def on_stage_start(self, runner):
        """Check that the stage has a criterion; pick ``criterion_key`` among several."""
        criterion = runner.criterion
        if criterion is None:
            raise ConfigError(f"stage {runner.stage_name!r}: CriterionCallback needs a criterion, the stage has none")
        if isinstance(criterion, Mapping):
            if self.criterion_key not in criterion:
                raise ConfigError(f"stage {runner.stage_name!r}: CriterionCallback {self.prefix!r} has criterion_key "
                                  f"{self.criterion_key!r}; the stage's criteria are {sorted(criterion)}")
            criterion = criterion[self.criterion_key]
        self._check_call(criterion)
        self._criterion = criterion

    def _check_call(self, criterion) -> None:
        """Fail at the stage start, not at the first batch, when the criterion's signature does
        not take the keywords (``criterion_kwargs``, mapping keys) this callback will pass."""
        if not (self.criterion_kwargs or self._by_keyword):
            return
        keywords = dict(self.criterion_kwargs)
        if self._by_keyword:
            for keys in (self.output_keys, self.input_keys):
                keywords.update(dict.fromkeys(_keywords(keys).values()))
            args = ()
        else:
            args = (None,) * (len(self.output_keys) + len(self.input_keys))
        target = criterion.forward if isinstance(criterion, torch.nn.Module) else criterion
        check_arguments(target, f"the criterion of CriterionCallback {self.prefix!r}", None, args, keywords,
                        partial=True)

    def on_batch_end(self, runner):
        """Compute the loss of the batch."""
        if runner.is_infer_loader:
            return
        try:
            if self._by_keyword:
                args, kwargs = (), {**_by_keyword(runner.output, self.output_keys),
                                    **_by_keyword(runner.input, self.input_keys)}
            elif self._single:
                args, kwargs = (runner.output[self.output_keys[0]], runner.input[self.input_keys[0]]), {}
            else:
                args = [runner.output[k] for k in self.output_keys] + [runner.input[k] for k in self.input_keys]
                kwargs = {}
        except KeyError as e:
            raise ConfigError(f"CriterionCallback {self.prefix!r}: key {e} not found; output keys "
                              f"{list(runner.output)}, batch keys {list(runner.input)}") from None
        extra = self.criterion_kwargs
        loss = self._criterion(*args, **kwargs, **extra) if kwargs or extra else self._criterion(*args)
        runner.batch_metrics[self.prefix] = loss * self.multiplier if self.multiplier != 1.0 else loss


def _keywords(keys: list[str] | dict[str, str]) -> dict[str, str]:
    """Key → the criterion's keyword: a mapping as it is, a list's keys as themselves."""
    return dict(keys) if isinstance(keys, dict) else {key: key for key in keys}


def _by_keyword(values: Mapping, keys: list[str] | dict[str, str]) -> dict:
    """``{keyword: values[key]}`` for each key of ``keys`` (see :func:`_keywords`)."""
    return {keyword: values[key] for key, keyword in _keywords(keys).items()}
