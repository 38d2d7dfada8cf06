"""Running only a few batches of each loader (Catalyst 20.x ``BatchOverfitCallback``).

``BatchOverfitCallback(train=10, valid=0.5)`` runs 10 batches of ``train`` and half of ``valid``
per epoch; loaders not named run 1 batch. With unshuffled loaders every epoch sees the same
batches, so a model able to learn drives their loss towards zero: a quick test of the pipeline.
"""
from __future__ import annotations

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.loaders import BatchLimitLoaderWrapper, resolve_num_batches

__all__ = ["BatchOverfitCallback"]


class BatchOverfitCallback(Callback):
    """Limits every loader of the stage to a number or a fraction of its batches.

    The loaders in ``runner.loaders`` are wrapped in :class:`BatchLimitLoaderWrapper` at each
    epoch start and unwrapped at the epoch end.

    Args:
        **loader_batches: loader name → an int ≥ 1 (batches) or a float in (0, 1] (fraction of
            the loader). Loaders not named get 1 batch.

    Raises:
        ConfigError: a value of the wrong type or range (at construction); a name that is not a
            loader of the stage (at stage start, listing the loaders).
    """

    metric_names = ()  # writes no metric

    def __init__(self, **loader_batches: int | float):
        super().__init__(order=CallbackOrder.Internal, node=CallbackNode.All)
        for name, value in loader_batches.items():
            resolve_num_batches(value, None if isinstance(value, int) else 1, f"BatchOverfitCallback({name}=...)")
        self.loader_batches = dict(loader_batches)
        self._wrapped: dict[str, BatchLimitLoaderWrapper] = {}

    def on_stage_start(self, runner) -> None:
        """Check that every named loader exists."""
        unknown = sorted(set(self.loader_batches) - set(runner.loaders))
        if unknown:
            raise ConfigError(f"BatchOverfitCallback: loaders {unknown} are not in stage {runner.stage_name!r} "
                              f"(loaders: {list(runner.loaders)})")

    def on_epoch_start(self, runner) -> None:
        """Wrap the loaders for this epoch (a loader the runner already limits, in check or
        overfit mode, is left as it is)."""
        self._wrapped = {}
        for name, loader in runner.loaders.items():
            if not isinstance(loader, BatchLimitLoaderWrapper):
                wrapper = BatchLimitLoaderWrapper(loader, self.loader_batches.get(name, 1))
                runner.loaders[name] = self._wrapped[name] = wrapper

    def on_epoch_end(self, runner) -> None:
        """Give the runner back the loaders this callback wrapped."""
        for name, wrapper in self._wrapped.items():
            if runner.loaders.get(name) is wrapper:
                runner.loaders[name] = wrapper.origin
        self._wrapped = {}
