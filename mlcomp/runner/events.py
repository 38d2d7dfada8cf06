"""The runner's events: a closed enum, in the style of pytorch-ignite's ``Events``, and the
exception that ends a run stopped on request (:class:`RunStopped`).

Each value is the name of the :class:`~mlcomp.runner.callback.Callback` method that receives it.
Order of a full run (Catalyst 20.x): ``stage_start`` → per epoch ``epoch_start`` → per loader
``loader_start`` → per batch ``batch_start``, ``batch_end`` → ``loader_end`` → ``epoch_end`` →
``stage_end``; ``exception`` replaces the remaining ``*_end`` events when the loop raises.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path

__all__ = ["Event", "RunStopped"]


class Event(str, Enum):
    """One point of the stage → epoch → loader → batch loop where callbacks run."""

    STAGE_START = "on_stage_start"
    """A stage's model, criterion, optimizer, scheduler, loaders and callbacks are ready."""
    STAGE_END = "on_stage_end"
    """Every epoch of the stage ran (or early stopping ended it)."""
    EPOCH_START = "on_epoch_start"
    """An epoch starts; ``runner.epoch`` is 1-based within the stage."""
    EPOCH_END = "on_epoch_end"
    """Every loader of the epoch ran; ``runner.epoch_metrics`` holds ``{loader}_{metric}``."""
    LOADER_START = "on_loader_start"
    """A loader starts; ``runner.loader_name``, ``is_train_loader`` and ``loader_len`` are set."""
    LOADER_END = "on_loader_end"
    """A loader ran out; callbacks finish ``runner.loader_metrics`` here."""
    BATCH_START = "on_batch_start"
    """``runner.input`` holds the batch (a dict of tensors on ``runner.device``)."""
    BATCH_END = "on_batch_end"
    """``runner.output`` and ``runner.batch_metrics`` are filled by ``handle_batch`` and callbacks."""
    EXCEPTION = "on_exception"
    """The loop raised; ``runner.exception`` holds the error."""


class RunStopped(Exception):
    """A run stopped on request after a batch; ``checkpoint`` (a Path, or None without a logdir)
    resumes it. Attributes: ``stage``, ``epoch``, ``loader``, ``batch`` (batches done in the
    loader), ``checkpoint``."""

    def __init__(self, stage: str, epoch: int, loader: str, batch: int, checkpoint: Path | None):
        self.stage, self.epoch, self.loader, self.batch, self.checkpoint = stage, epoch, loader, batch, checkpoint
        where = f"stage {stage!r}, epoch {epoch}, loader {loader!r}, after batch {batch}"
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint here (no logdir, or not rank 0)"
        super().__init__(f"run stopped at {where}; {saved}")

    def __reduce__(self):  # picklable across processes (distributed launches report it)
        return type(self), (self.stage, self.epoch, self.loader, self.batch, self.checkpoint)
