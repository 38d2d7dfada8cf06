"""A quick run of a pipeline: a few batches of each loader, a few epochs of each stage
(Catalyst 20.05+'s ``CheckRunCallback``)."""
from __future__ import annotations

from mlcomp.runner.callbacks.batch_overfit import BatchOverfitCallback

__all__ = ["CheckRunCallback"]


class CheckRunCallback(BatchOverfitCallback):
    """Runs only ``num_batch_steps`` batches of every loader and stops the stage after its
    ``num_epoch_steps``-th epoch, as Catalyst's ``CheckRunCallback`` does (Catalyst stops the
    loader after the batch; here each loader is wrapped for the epoch, see
    :class:`~mlcomp.runner.callbacks.batch_overfit.BatchOverfitCallback`).

    Args:
        num_batch_steps: batches per loader and epoch, an int >= 1.
        num_epoch_steps: epochs per stage, an int >= 1.

    Raises:
        ValueError: an argument is not an int >= 1.
    """

    metric_names = ()  # writes no metric

    def __init__(self, num_batch_steps: int = 3, num_epoch_steps: int = 2):
        for name, value in (("num_batch_steps", num_batch_steps), ("num_epoch_steps", num_epoch_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CheckRunCallback: argument {name} should be an int >= 1, got {value!r}")
        super().__init__()
        self.num_batch_steps, self.num_epoch_steps = num_batch_steps, num_epoch_steps

    def on_stage_start(self, runner) -> None:
        """Nothing to check: every loader of each stage is limited, whatever its name."""

    def on_epoch_start(self, runner) -> None:
        """Limit every loader of the stage to ``num_batch_steps`` batches for this epoch."""
        self.loader_batches = {name: self.num_batch_steps for name in runner.loaders}
        super().on_epoch_start(runner)

    def on_epoch_end(self, runner) -> None:
        """Restore the loaders; stop the stage after ``num_epoch_steps`` epochs."""
        super().on_epoch_end(runner)
        if runner.epoch >= self.num_epoch_steps:
            runner.need_early_stop = True
