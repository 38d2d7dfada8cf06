"""Loggers: console and ``log.txt``, a tqdm progress bar, a metrics file, TensorBoard
(Catalyst 20.x ``ConsoleLogger``, ``VerboseLogger``, ``TensorboardLogger``)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder

__all__ = ["ConsoleLogger", "ProgressBarLogger", "MetricsFileLogger", "TensorboardLogger", "format_metrics"]

FORMATS = ("jsonl", "csv")


def format_metrics(metrics: dict, sep: str = " ") -> str:
    """``"a=0.1235 b=3"``: metrics sorted by name, floats with 4 significant digits, joined by ``sep``."""
    return sep.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _by_loader(metrics: dict, loaders: list[str]) -> dict[str, dict]:
    """``epoch_metrics`` split by loader (``valid_loss`` → ``{"valid": {"loss": …}}``), the
    metrics of no loader under ``_base``, loaders in their order (Catalyst's ``split_dict_to_subdicts``)."""
    split: dict[str, dict] = {loader: {} for loader in loaders}
    longest_first = sorted(loaders, key=len, reverse=True)  # train_additional_loss is train_additional's
    for key, value in metrics.items():
        loader = next((name for name in longest_first if key.startswith(name + "_")), None)
        split.setdefault(loader or "_base", {})[key[len(loader) + 1:] if loader else key] = value
    return {loader: values for loader, values in split.items() if values}


class ConsoleLogger(Callback):
    """Prints, after each epoch, one line per loader in Catalyst 20.x's format (its
    ``TxtMetricsFormatter``: ``2/5 * Epoch 7 (valid): accuracy01=0.9875 | loss=0.04101``, the
    stage's epoch, then the global one; metrics without a loader's prefix, such as ``lr``, on a
    ``(_base)`` line), to stdout and to ``logdir/log.txt`` when there is a logdir. An error (or a
    stop) ending the run is written to ``log.txt`` only: it propagates, and whoever catches it
    shows it once (``mlcomp run`` as one ``Error:`` line). Master only."""

    metric_names = ()  # writes no metric

    def __init__(self):
        super().__init__(CallbackOrder.Logging, node=CallbackNode.Master)
        self._file = None

    def on_stage_start(self, runner):
        """Open ``log.txt`` (appending, so a resumed run continues it)."""
        if runner.logdir is not None:
            Path(runner.logdir).mkdir(parents=True, exist_ok=True)
            self._file = open(Path(runner.logdir) / "log.txt", "a", encoding="utf-8")
        self._write(f"stage {runner.stage_name} ({runner.num_epochs} epochs)")

    def on_epoch_end(self, runner):
        """Log the epoch's metrics, a line per loader."""
        head = f"{runner.epoch}/{runner.num_epochs} * Epoch {runner.global_epoch}"
        for loader, metrics in _by_loader(runner.epoch_metrics, list(runner.loaders)).items():
            self._write(f"{head} ({loader}): {format_metrics(metrics, ' | ')}")

    def on_stage_end(self, runner):
        """Close ``log.txt``."""
        self._close()

    def on_exception(self, runner):
        """Log the error (or the stop) to ``log.txt`` and close it."""
        self._write(f"{type(runner.exception).__name__}: {runner.exception}", echo=False)
        self._close()

    def _write(self, line: str, echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBarLogger(Callback):
    """A tqdm bar per loader, only when ``runner.verbose`` and stdout is a terminal (so logs
    captured to files get no bar and the per-batch cost is one ``is None`` test)."""

    metric_names = ()  # writes no metric

    def __init__(self):
        super().__init__(CallbackOrder.Logging, node=CallbackNode.Master)
        self._bar = None

    def on_loader_start(self, runner):
        """Open the loader's bar."""
        if runner.verbose and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=runner.loader_len or None, leave=False,
                             desc=f"{runner.epoch}/{runner.num_epochs} * {runner.loader_name}")

    def on_batch_end(self, runner):
        """Advance the bar."""
        if self._bar is not None:
            self._bar.update(1)

    def on_loader_end(self, runner):
        """Show the loader's metrics and close the bar."""
        if self._bar is not None:
            self._bar.set_postfix_str(format_metrics(runner.loader_metrics))
            self._close()

    def on_exception(self, runner):
        """Close the bar."""
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class MetricsFileLogger(Callback):
    """Appends every epoch's metrics to ``logdir/<filename>``: JSON lines (``.jsonl``, one object
    per epoch: ``stage``, ``epoch``, ``global_epoch``, ``global_batch_step`` and the
    ``epoch_metrics``) or CSV (``.csv``, long format ``stage,epoch,global_epoch,loader,metric,value``
    so that new metrics need no new column). Master only.

    Raises:
        ValueError: the file name ends neither in ``.jsonl`` nor ``.csv``.
    """

    metric_names = ()  # writes no metric

    def __init__(self, filename: str = "metrics.jsonl"):
        super().__init__(CallbackOrder.Logging, node=CallbackNode.Master)
        kind = filename.rsplit(".", 1)[-1]
        if kind not in FORMATS:
            raise ValueError(f"MetricsFileLogger: argument filename should end in one of {FORMATS}, got {filename!r}")
        self.filename, self._kind = filename, kind

    def on_epoch_end(self, runner):
        """Append the epoch's metrics."""
        if runner.logdir is None:
            return
        path = Path(runner.logdir) / self.filename
        position = {"stage": runner.stage_name, "epoch": runner.epoch, "global_epoch": runner.global_epoch}
        if self._kind == "jsonl":
            with open(path, "a", encoding="utf-8") as file:
                file.write(json.dumps({**position, "global_batch_step": runner.global_batch_step,
                                       **runner.epoch_metrics}) + "\n")
            return
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow([*position, "loader", "metric", "value"])
            for key, value in runner.epoch_metrics.items():
                loader = next((name for name in runner.loaders if key.startswith(f"{name}_")), "")
                writer.writerow([*position.values(), loader, key[len(loader) + 1:] if loader else key, value])


class TensorboardLogger(Callback):
    """Writes the epoch metrics to TensorBoard under ``logdir/tensorboard`` (tag
    ``"{metric}/{loader}"``, step ``global_epoch``). Needs the ``tensorboard`` package. Master only.

    Raises:
        ImportError: at stage start, when ``tensorboard`` is not installed.
    """

    metric_names = ()  # writes no metric

    def __init__(self):
        super().__init__(CallbackOrder.Logging, node=CallbackNode.Master)
        self._writer = None

    def on_stage_start(self, runner):
        """Open the writer."""
        if runner.logdir is not None and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(runner.logdir) / "tensorboard"))

    def on_epoch_end(self, runner):
        """Write the epoch's metrics."""
        if self._writer is None:
            return
        for key, value in runner.epoch_metrics.items():
            loader = next((name for name in runner.loaders if key.startswith(f"{name}_")), None)
            tag = f"{key[len(loader) + 1:]}/{loader}" if loader else key
            if isinstance(value, (int, float)):
                self._writer.add_scalar(tag, value, runner.global_epoch)
        self._writer.flush()

    def on_stage_end(self, runner):
        """Close the writer."""
        self.on_exception(runner)

    def on_exception(self, runner):
        """Close the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
