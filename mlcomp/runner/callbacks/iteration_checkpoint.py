"""Full checkpoints every N batches (Catalyst 20.x ``IterationCheckpointCallback``).

Each checkpoint is a resumable ``*_full.pth`` (the runner core's :func:`full_checkpoint`) taken
right after a batch, so ``run_experiment(experiment, resume=path)`` continues with the next batch
exactly as a stop at that batch would. Long epochs lose at most ``period`` batches to a crash.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.checkpoint import full_checkpoint, save_checkpoint

__all__ = ["IterationCheckpointCallback"]


def _as_float(value) -> float:
    return float(value.detach()) if hasattr(value, "detach") else float(value)


class IterationCheckpointCallback(Callback):
    """Every ``period`` batches, writes ``logdir/checkpoints/{stage}.{epoch}.{loader}.{batch}_full.pth``,
    keeps the ``save_n_last`` newest (older ones are deleted) and lists them with their batch
    metrics in ``logdir/checkpoints/{metrics_filename}``.

    Runs on the master process only, after every shipped callback (order ``External + 50``), so
    the checkpoint holds their states for this batch.

    Args:
        save_n_last: how many checkpoints to keep (≥ 1).
        period: batches between checkpoints (≥ 1), counted over every loader.
        stage_restart: restart the count at each stage start.
        metrics_filename: the JSON file listing the kept checkpoints.

    Raises:
        ConfigError: ``save_n_last`` or ``period`` below 1 (at construction), no logdir (at stage start).
    """

    metric_names = ()  # writes no metric

    def __init__(self, save_n_last: int = 1, period: int = 100, stage_restart: bool = True,
                 metrics_filename: str = "_metrics_iter.json"):
        super().__init__(order=CallbackOrder.External + 50, node=CallbackNode.Master)
        for name, value in (("save_n_last", save_n_last), ("period", period)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"IterationCheckpointCallback: {name} should be an int >= 1, got {value!r}")
        self.save_n_last, self.period, self.stage_restart = save_n_last, period, stage_restart
        self.metrics_filename = metrics_filename
        self.count = 0
        self.saved: list[dict[str, Any]] = []  # {"file": name, "stage", "epoch", "loader", "batch", "metrics"}

    def on_stage_start(self, runner) -> None:
        """Check the logdir; restart the count when ``stage_restart``."""
        if runner.logdir is None:
            raise ConfigError(f"stage {runner.stage_name!r}: IterationCheckpointCallback needs a logdir, "
                              "the run has none")
        if self.stage_restart:
            self.count = 0

    def on_batch_end(self, runner) -> None:
        """Count the batch; every ``period``-th, write a checkpoint and drop the oldest."""
        self.count += 1
        if self.count % self.period:
            return
        folder = Path(runner.logdir) / "checkpoints"
        name = f"{runner.stage_name}.{runner.epoch}.{runner.loader_name}.{runner.loader_batch_step}_full.pth"
        self.saved.append({"file": name, "stage": runner.stage_name, "epoch": runner.epoch,
                           "loader": runner.loader_name, "batch": runner.loader_batch_step,
                           "global_batch_step": runner.global_batch_step,
                           "metrics": {key: _as_float(value) for key, value in runner.batch_metrics.items()}})
        dropped = self.saved[:-self.save_n_last]
        del self.saved[:-self.save_n_last]
        save_checkpoint(full_checkpoint(runner, with_batch=True), folder / name)
        for old in dropped:
            (folder / old["file"]).unlink(missing_ok=True)
        self._write_metrics(folder / self.metrics_filename)

    def _write_metrics(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({entry["file"]: entry for entry in self.saved}, indent=2))
        tmp.replace(path)

    def state_dict(self) -> dict[str, Any]:
        """The batch count and the kept checkpoints."""
        return {"count": self.count, "saved": [dict(entry) for entry in self.saved]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            KeyError: ``count`` or ``saved`` is missing.
        """
        self.count = int(state["count"])
        self.saved = [dict(entry) for entry in state["saved"]]
