"""A runner callback that reports a training run to the store through the task's Reporter.

What it sends (all buffered by :class:`mlcomp.worker.report.Reporter`, which writes in batches,
never one transaction per batch):

* epoch metrics: at each loader end, every ``loader_metrics`` value as ``kind="epoch"`` with
  ``step`` = the runner's global epoch (so a resumed run continues the same axis);
* batch metrics, downsampled: every ``stride``-th global batch step, where ``stride`` is chosen
  at each loader start so that a loader reports at most ``max_batch_points`` points per epoch;
  only those batches pay a ``float()`` (a device sync) per metric;
* progress (stage, epoch, epochs, batch, batches, ETA in seconds) at most once per
  ``progress_every`` seconds;
* each checkpoint file written under ``logdir/checkpoints`` (path relative to the task folder,
  stage, epoch, the main metric, size), found by comparing the folder's files (mtime and size)
  at each epoch end and when the run stops.

The idea is Catalyst 20.x's loggers (``MetricsManager`` + ``ConsoleLogger``) and TensorBoard's
``SummaryWriter``: cheap calls from the loop, a writer that batches.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder, CallbackScope

__all__ = ["ReportingCallback", "MAX_BATCH_POINTS"]

MAX_BATCH_POINTS = 200
"""Default upper bound of batch-metric points per loader and epoch."""


class ReportingCallback(Callback):
    """Reports metrics, progress and checkpoints of the run to ``reporter`` (rank 0 only).

    Runs after the checkpoint callback (order ``External + 1``), so the files of an epoch exist
    when it looks for them.

    Args:
        reporter: an object with ``metric``, ``progress`` and ``checkpoint`` methods
            (:class:`mlcomp.worker.report.Reporter`).
        folder: the task's folder; checkpoint paths are reported relative to it.
        max_batch_points: at most this many batch points per loader per epoch (0: none).
        progress_every: seconds between progress reports.
        clock: monotonic seconds (injected by tests).

    Raises:
        ValueError: ``max_batch_points`` < 0 or ``progress_every`` < 0.
    """

    metric_names = ()  # reads metrics, writes none: a wrong main_metric still fails at stage start

    def __init__(self, reporter, folder: str | Path, max_batch_points: int = MAX_BATCH_POINTS,
                 progress_every: float = 1.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(CallbackOrder.External + 1, node=CallbackNode.Master, scope=CallbackScope.Experiment)
        if max_batch_points < 0 or progress_every < 0:
            raise ValueError(f"ReportingCallback: max_batch_points ({max_batch_points}) and progress_every "
                             f"({progress_every}) must be >= 0")
        self.reporter = reporter
        self.folder = Path(folder)
        self.max_batch_points = int(max_batch_points)
        self.progress_every = float(progress_every)
        self.clock = clock
        self._stride = 1
        self._loader_started = 0.0
        self._loader_first_step = 0
        self._last_progress = -math.inf
        self._seen: dict[str, tuple[int, int]] = {}

    # -- metrics ----------------------------------------------------------------------------------
    def on_stage_start(self, runner):
        """Remember the checkpoint files already there (a resumed attempt reported them)."""
        if not self._seen:
            self._seen = self._checkpoint_files(runner)

    def on_loader_start(self, runner):
        """Choose the batch stride of this loader and start its clock."""
        batches = max(int(runner.loader_len or 0), 1)
        self._stride = math.ceil(batches / self.max_batch_points) if self.max_batch_points else 0
        self._loader_started = self.clock()
        self._loader_first_step = runner.loader_batch_step

    def on_batch_end(self, runner):
        """Report the sampled batch's metrics; report progress when it is due."""
        step = runner.global_batch_step
        if self._stride and step % self._stride == 0:
            for name, value in runner.batch_metrics.items():
                self.reporter.metric(name, _scalar(value), loader=runner.loader_name, stage=runner.stage_name,
                                     epoch=runner.global_epoch, step=step, kind="batch")
        now = self.clock()
        if now - self._last_progress >= self.progress_every:
            self._last_progress = now
            self.reporter.progress(self._progress(runner, now))

    def on_loader_end(self, runner):
        """Report the loader's epoch metrics at the global epoch."""
        for name, value in runner.loader_metrics.items():
            self.reporter.metric(name, float(value), loader=runner.loader_name, stage=runner.stage_name,
                                 epoch=runner.global_epoch, step=runner.global_epoch, kind="epoch")

    def on_epoch_end(self, runner):
        """Report the checkpoints the epoch wrote."""
        self._report_checkpoints(runner)

    def on_stage_end(self, runner):
        """Report the final progress of the stage (100 % of its last loader)."""
        self.reporter.progress(self._progress(runner, self.clock(), done=True))

    def on_exception(self, runner):
        """A stop wrote ``last_full.pth``: report it with the position's progress."""
        self._report_checkpoints(runner)
        self.reporter.progress(self._progress(runner, self.clock()))

    # -- helpers ----------------------------------------------------------------------------------
    def _progress(self, runner, now: float, done: bool = False) -> dict[str, Any]:
        batches, batch = int(runner.loader_len or 0), int(runner.loader_batch_step)
        return {"stage": runner.stage_name, "epoch": runner.epoch, "epochs": runner.num_epochs,
                "loader": runner.loader_name, "batch": batches if done else batch, "batches": batches,
                "eta": 0.0 if done else self._eta(runner, now)}

    def _eta(self, runner, now: float) -> float | None:
        """Seconds left in the stage, from this loader's pace (batches per second so far) and the
        loader lengths of the remaining epochs; None before the first timed batch."""
        done = runner.loader_batch_step - self._loader_first_step
        if done <= 0:
            return None
        per_batch = (now - self._loader_started) / done
        lengths = [len(loader) if hasattr(loader, "__len__") else 0 for loader in runner.loaders.values()]
        rest_of_epoch = (runner.loader_len - runner.loader_batch_step) + sum(lengths[runner.loader_index + 1:])
        later_epochs = (runner.num_epochs - runner.epoch) * sum(lengths)
        return round(per_batch * (rest_of_epoch + later_epochs), 1)

    def _checkpoint_files(self, runner) -> dict[str, tuple[int, int]]:
        if runner.logdir is None:
            return {}
        folder = Path(runner.logdir) / "checkpoints"
        if not folder.is_dir():
            return {}
        files = {}
        for path in folder.glob("*.pth"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # replaced or deleted while we looked
                continue
            files[str(path)] = (stat.st_mtime_ns, stat.st_size)
        return files

    def _report_checkpoints(self, runner) -> None:
        files = self._checkpoint_files(runner)
        metric = runner.valid_metrics.get(runner.main_metric)
        for path, (mtime, size) in sorted(files.items()):
            if self._seen.get(path) == (mtime, size):
                continue
            self.reporter.checkpoint(_relative(Path(path), self.folder), stage=runner.stage_name,
                                     epoch=runner.epoch, metric=None if metric is None else float(metric), size=size)
        self._seen = files


def _scalar(value) -> float:
    """A batch metric (a 0-dim tensor, maybe still attached to the graph, or a number) as a float."""
    detach = getattr(value, "detach", None)
    return float(detach().item()) if detach is not None else float(value)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)
