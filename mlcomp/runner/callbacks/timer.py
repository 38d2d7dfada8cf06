"""Batch timings and throughput (Catalyst 20.x ``TimerCallback``), as ``_timer/...`` metrics.

Per batch, into ``runner.batch_metrics`` (seconds, floats):

- ``_timer/data_time``: from the end of the previous batch (or the loader start) to this batch's
  start: fetching the batch from the loader and moving it to the device;
- ``_timer/model_time``: from the batch start to its end: forward, loss, backward, optimizer
  and the callbacks in between;
- ``_timer/batch_time``: their sum;
- ``_timer/_fps``: samples per second of the batch.

The runner averages them over the loader (weighted by batch size); at loader end
``_timer/_fps`` is replaced by the loader's true throughput, samples over wall time.

On CUDA, kernels run asynchronously: without ``synchronize`` the model time is the time to
queue the work. ``synchronize=True`` waits for the device at each measurement (exact, slower).
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = ["TimerCallback"]

_EPS = 1e-12


class TimerCallback(Callback):
    """Writes the ``_timer/*`` metrics (see the module docstring).

    Order ``Logging − 1``: its batch end comes after the optimizer and schedulers and before the
    loggers, which then show the timings.

    Args:
        synchronize: on a CUDA device, ``torch.cuda.synchronize()`` before reading the clock.
        clock: a function returning seconds (``time.perf_counter``; tests pass a fake clock).
    """

    metric_names = ("_timer/data_time", "_timer/model_time", "_timer/batch_time", "_timer/_fps")

    def __init__(self, synchronize: bool = False, clock: Callable[[], float] = time.perf_counter):
        super().__init__(order=CallbackOrder.Logging - 1, node=CallbackNode.All)
        self.synchronize, self.clock = synchronize, clock
        self._loader_start = self._last_end = self._batch_start = 0.0
        self._samples = 0

    def _now(self, runner) -> float:
        if self.synchronize and runner.device is not None and torch.device(runner.device).type == "cuda":
            torch.cuda.synchronize(runner.device)
        return self.clock()

    def on_loader_start(self, runner) -> None:
        """Start the loader's clock."""
        self._loader_start = self._last_end = self._now(runner)
        self._samples = 0

    def on_batch_start(self, runner) -> None:
        """The batch is on the device: data time ends, model time starts."""
        self._batch_start = self._now(runner)

    def on_batch_end(self, runner) -> None:
        """Write the batch's timings."""
        end = self._now(runner)
        data, model = self._batch_start - self._last_end, end - self._batch_start
        self._last_end = end
        self._samples += runner.batch_size
        runner.batch_metrics.update({"_timer/data_time": data, "_timer/model_time": model,
                                     "_timer/batch_time": data + model,
                                     "_timer/_fps": runner.batch_size / max(data + model, _EPS)})

    def on_loader_end(self, runner) -> None:
        """Replace the mean of batch throughputs by the loader's samples over its wall time."""
        if self._samples:
            runner.loader_metrics["_timer/_fps"] = self._samples / max(self._last_end - self._loader_start, _EPS)
