"""Transforms applied to a whole batch on its device, before the model sees it (Catalyst
20.08+'s ``BatchTransformCallback``, meant for kornia's GPU augmentations)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = ["BatchTransformCallback"]


class BatchTransformCallback(Callback):
    """At each batch start, replaces ``runner.input[output_key]`` by the transforms applied in
    order to ``runner.input[input_key]`` (Catalyst 20.12's arguments).

    With ``additional_input_key`` the transforms get the pair ``(input, additional input)`` and
    must return a pair, written to ``output_key`` and ``additional_output_key`` (kornia's
    image-and-mask convention).

    Args:
        transform: a list of callables (``torch.nn.Module`` such as kornia's augmentations), or
            of mappings ``{transform: Name, **kwargs}`` built from the ``Transform`` registry
            (``kornia.RandomAffine`` needs it registered, as in Catalyst).
        input_key: the batch key (or index) to transform.
        additional_input_key: an optional second key transformed with it (a mask).
        output_key: where the result goes (default: ``input_key``).
        additional_output_key: where the second result goes (default: ``additional_input_key``).

    Raises:
        ConfigError: ``transform`` is not a list, an item is neither callable nor a mapping, or
            names an unknown transform (``callbacks_params...transform[i]``); the batch lacks a key.
    """

    metric_names = ()  # writes no metric

    def __init__(self, transform: Sequence[Mapping[str, Any] | Callable], input_key: str | int = "image",
                 additional_input_key: str | None = None, output_key: str | int | None = None,
                 additional_output_key: str | None = None):
        super().__init__(order=CallbackOrder.Internal, node=CallbackNode.All)
        if isinstance(transform, (str, Mapping)) or not isinstance(transform, Sequence):
            raise ConfigError(f"BatchTransformCallback: transform should be a list of transforms, got {transform!r}")
        self.transforms = [_build(item, i) for i, item in enumerate(transform)]
        self.input_key, self.additional_input_key = input_key, additional_input_key
        self.output_key = input_key if output_key is None else output_key
        self.additional_output_key = additional_output_key or additional_input_key

    def on_batch_start(self, runner) -> None:
        """Transform the batch in ``runner.input``."""
        keys = [self.input_key] + ([self.additional_input_key] if self.additional_input_key is not None else [])
        try:
            values = [runner.input[key] for key in keys]
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"BatchTransformCallback: the batch has no key {keys}") from None
        batch = values[0] if len(values) == 1 else tuple(values)
        for transform in self.transforms:
            batch = transform(batch)
        if self.additional_input_key is None:
            runner.input[self.output_key] = batch
        else:
            runner.input[self.output_key], runner.input[self.additional_output_key] = batch


def _build(item, index: int) -> Callable:
    """A transform from a callable or a ``{transform: Name, **kwargs}`` mapping."""
    if isinstance(item, Mapping):
        return registry.Transform.create_from_params(item, "transform", f"BatchTransformCallback.transform[{index}]")
    if not callable(item):
        raise ConfigError(f"BatchTransformCallback.transform[{index}]: expected a transform or a mapping with "
                          f"a 'transform' key, got {item!r}")
    return item
