"""CheckpointCallback: best/last/n-best checkpoints and ``_metrics.json`` (Catalyst 20.x)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder, CallbackScope
from mlcomp.runner.checkpoint import (full_checkpoint, load_checkpoint, model_checkpoint, save_checkpoint,
                                      unpack_checkpoint)

__all__ = ["CheckpointCallback"]

NAMED = ("best", "last", "best_full", "last_full")


class CheckpointCallback(Callback):
    """Writes, at every epoch end of a training stage, into ``logdir/checkpoints/``: ``last.pth``
    and ``last_full.pth``; ``best.pth`` and ``best_full.pth`` when ``runner.is_best_valid``;
    ``{stage}.{epoch}.pth`` for the ``save_n_best`` best epochs by the main metric (others are
    deleted); and ``_metrics.json``: every epoch's ``epoch_metrics`` under ``"{stage}.{epoch}"``
    plus ``"best"`` and ``"last"`` entries. Experiment-scoped: the history spans all stages.

    Args:
        save_n_best: how many ``{stage}.{epoch}.pth`` to keep (0: none).
        resume: a checkpoint to load at the first stage start (model, and optimizer/scheduler/
            criterion states when present); ``resume_dir`` is prepended to a relative path.
        resume_dir: folder of ``resume``.
        metrics_filename: name of the metrics file in ``checkpoints/``.
        load_on_stage_start: ``"best"``, ``"last"``, ``"best_full"``, ``"last_full"`` or a path:
            load it at every stage start (when it exists; a path must exist).
        load_on_stage_end: the same, at every stage end (e.g. ``"best"`` = keep the best weights).

    Raises:
        ValueError: ``save_n_best`` < 0.
        ConfigError: at stage start, there is no logdir, or ``resume`` does not exist / fit.
    """

    metric_names = ()  # writes no metric

    def __init__(self, save_n_best: int = 1, resume: str | None = None, resume_dir: str | None = None,
                 metrics_filename: str = "_metrics.json", load_on_stage_start: str | None = None,
                 load_on_stage_end: str | None = None):
        super().__init__(CallbackOrder.External, node=CallbackNode.Master, scope=CallbackScope.Experiment)
        if not isinstance(save_n_best, int) or save_n_best < 0:
            raise ValueError(f"CheckpointCallback: argument save_n_best should be an int >= 0, got {save_n_best!r}")
        self.save_n_best, self.metrics_filename = save_n_best, metrics_filename
        self.resume = None if resume is None else str(Path(resume_dir or "") / resume)
        self.load_on_stage_start, self.load_on_stage_end = load_on_stage_start, load_on_stage_end
        self.top_best: list[dict[str, Any]] = []  # {"name": "stage.epoch", "value": main metric}
        self.metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------ events
    def on_stage_start(self, runner):
        """Check the logdir; load ``resume`` (once) and ``load_on_stage_start``."""
        if runner.logdir is None:
            raise ConfigError(f"stage {runner.stage_name!r}: CheckpointCallback needs a logdir, the run has none")
        if self.resume is not None:
            unpack_checkpoint(runner, load_checkpoint(self.resume), self.resume)
            self.resume = None
        self._load(runner, self.load_on_stage_start)

    def on_epoch_end(self, runner):
        """Save the epoch's checkpoints and metrics."""
        if runner.is_infer_stage:
            return
        folder = runner.logdir / "checkpoints"
        name = f"{runner.stage_name}.{runner.epoch}"
        entry = {"stage": runner.stage_name, "epoch": runner.epoch, "metrics": dict(runner.epoch_metrics)}
        self.metrics[name] = dict(runner.epoch_metrics)
        self.metrics["last"] = entry
        if runner.is_best_valid:
            self.metrics["best"] = entry
        dropped = self._update_top(runner, name)
        model, full = model_checkpoint(runner), full_checkpoint(runner, epoch_done=True)
        best = runner.is_best_valid
        in_top = any(top["name"] == name for top in self.top_best)
        save_checkpoint(model, folder / "last.pth", *[folder / "best.pth"] * best,
                        *[folder / f"{name}.pth"] * in_top)
        save_checkpoint(full, folder / "last_full.pth", *[folder / "best_full.pth"] * best)
        for old in dropped:
            (folder / f"{old}.pth").unlink(missing_ok=True)
        self._write_metrics(folder / self.metrics_filename)

    def on_stage_end(self, runner):
        """Load ``load_on_stage_end``."""
        self._load(runner, self.load_on_stage_end)

    # ------------------------------------------------------------------ helpers
    def _update_top(self, runner, name: str) -> list[str]:
        """Insert this epoch among the n best; returns the names that fell out."""
        value = runner.valid_metrics.get(runner.main_metric)
        if self.save_n_best == 0 or value is None:
            return []
        self.top_best.append({"name": name, "value": value})
        self.top_best.sort(key=lambda top: top["value"], reverse=not runner.minimize_metric)
        dropped = [top["name"] for top in self.top_best[self.save_n_best:]]
        del self.top_best[self.save_n_best:]
        return dropped

    def _write_metrics(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.metrics, indent=2, sort_keys=False))
        tmp.replace(path)

    def _load(self, runner, spec: str | None) -> None:
        if spec is None:
            return
        path = runner.logdir / "checkpoints" / f"{spec}.pth" if spec in NAMED else Path(spec)
        if spec in NAMED and not path.is_file():
            return  # nothing saved yet (e.g. the first stage)
        unpack_checkpoint(runner, load_checkpoint(path), path)  # optimizer etc. only when present

    def state_dict(self) -> dict[str, Any]:
        """The n best epochs and the metrics history."""
        return {"top_best": [dict(top) for top in self.top_best], "metrics": json.loads(json.dumps(self.metrics))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.top_best = [dict(top) for top in state["top_best"]]
        self.metrics = json.loads(json.dumps(state["metrics"]))
