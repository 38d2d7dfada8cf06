"""Pausing a search trial at a rung: the runner callback a train task adds when its config has
``pause_at`` (set by :mod:`mlcomp.search.step`); the train executor turns :class:`TrialPaused` into
a :class:`mlcomp.outcome.Paused` outcome, with the checkpoint the trial resumes from.

The callback runs last at the end of every epoch (after the checkpoint callback has written
``last_full.pth`` for that epoch, positioned "epoch done", and after the reporting callback has
sent the epoch's metrics); at the rung's global epoch it raises :class:`TrialPaused`. Resuming
from that ``last_full.pth`` continues with the next epoch exactly as an uninterrupted run would
(the runner's exact resume), so a trial paused at rungs and promoted ends with the same weights.
"""
from __future__ import annotations

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder, CallbackScope
from mlcomp.runner.checkpoint import LAST_FULL, checkpoint_path
from mlcomp.runner.runner import RunStopped

__all__ = ["TrialPaused", "PauseCallback"]


class TrialPaused(RunStopped):
    """The run paused after global epoch ``epoch``; ``checkpoint`` (``last_full.pth``) resumes it."""


class PauseCallback(Callback):
    """Raises :class:`TrialPaused` at the end of global epoch ``pause_at`` (counted over stages,
    from 1), after every other epoch-end handler.

    Raises:
        ValueError: ``pause_at`` < 1.
    """

    metric_names = ()  # writes no metric

    def __init__(self, pause_at: int):
        super().__init__(CallbackOrder.External + 100, node=CallbackNode.All, scope=CallbackScope.Experiment)
        if pause_at < 1:
            raise ValueError(f"PauseCallback: pause_at must be >= 1, got {pause_at}")
        self.pause_at = int(pause_at)

    def on_epoch_start(self, runner):
        """Pause before training when the rung's epoch was already done: a trial that reached its
        rung just as a preemption stopped it resumes from the rung's checkpoint, and must not
        train past the rung before its search decides."""
        if runner.global_epoch > self.pause_at:
            self._pause(runner)

    def on_epoch_end(self, runner):
        """Pause once the rung's epoch is done (its full checkpoint is on disk)."""
        if runner.global_epoch == self.pause_at:
            self._pause(runner)

    @staticmethod
    def _pause(runner):
        path = checkpoint_path(runner.logdir, LAST_FULL) if runner.logdir is not None else None
        raise TrialPaused(runner.stage_name, runner.epoch, runner.loader_name, runner.loader_batch_step, path)
