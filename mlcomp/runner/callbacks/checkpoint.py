"""CheckpointCallback: best/last/n-best checkpoints and ``_metrics.json`` in Catalyst 20.x's layout."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder, CallbackScope
from mlcomp.runner.checkpoint import (BEST, FOLDER, LAST, LAST_FULL, NAMED, PARTS, checkpoint_path, full_checkpoint,
                                      full_name, load_checkpoint, model_checkpoint, save_checkpoint,
                                      unpack_checkpoint, write_atomically)
from mlcomp.runner.events import RunStopped

__all__ = ["CheckpointCallback"]

LAST_NAMES = (LAST, LAST_FULL)
"""The names ``load_on_stage_end`` skips: the state is the last one already."""


class CheckpointCallback(Callback):
    """Writes, at every epoch end of a training stage, into ``logdir/checkpoints/`` what Catalyst
    20.02–20.12's CheckpointCallback wrote, so its CI checks hold (one stage, defaults: seven files):

    * ``last.pth`` and ``last_full.pth``; ``best.pth`` and ``best_full.pth`` when
      ``runner.is_best_valid`` (the best of the stage);
    * ``{stage}.{epoch}.pth`` and ``{stage}.{epoch}_full.pth`` for the ``save_n_best`` best epochs
      *of each stage* by the main metric (ties: the earlier epoch); an epoch that falls out loses
      both files, while earlier stages' files stay;
    * ``_metrics.json``: ``"best"`` (the stage's best valid metrics), ``"last"`` (this epoch's),
      ``"{stage}.{epoch}"`` (its valid metrics, e.g. ``metrics["stage1.2"]["loss"]``) and
      ``"epoch_{i}"`` (the stage's i-th epoch, from 0: ``[checkpoint, main metric, valid
      metrics]``), valid metrics without the loader prefix. Catalyst's instance lived one stage,
      so its file listed the last stage's n best epochs only; this one is experiment-scoped and
      keeps every epoch of every stage under ``"{stage}.{epoch}"`` (a superset), while ``best``,
      ``last`` and ``epoch_{i}`` describe the current stage as Catalyst's did. The checkpoint
      in ``epoch_{i}`` is relative to the logdir (Catalyst wrote the logdir's path in front).

    Args:
        save_n_best: how many ``{stage}.{epoch}`` checkpoint pairs each stage keeps (0: none).
        resume: a checkpoint to load at the first stage start (model, and optimizer/scheduler/
            criterion states when present); ``resume_dir`` is prepended to a relative path.
        resume_dir: folder of ``resume``.
        metrics_filename: name of the metrics file in ``checkpoints/``.
        load_on_stage_start: what to load at every stage start: ``"best"``, ``"last"``,
            ``"best_full"``, ``"last_full"`` or a path (every state the file holds), or, as in
            Catalyst 20.06+, a dict naming one of those per part, e.g. ``{"model": "best",
            "optimizer": "last"}`` (parts: model, criterion, optimizer, scheduler; other keys are
            ignored, as Catalyst ignored them). Criterion, optimizer and scheduler states come from
            the full checkpoint of a name (``best`` → ``best_full.pth``), and so does the model
            when other parts are named too. Nothing is loaded until every named checkpoint exists
            (the first stage); a path must exist.
        load_on_stage_end: the same, at every stage end (e.g. ``"best"`` = keep the best weights);
            ``last`` and ``last_full`` load nothing there, the state being the last one already.

    Each load prints ``=> Loading checkpoint PATH`` (``=> Loading PARTS from PATH`` for a dict),
    the lines Catalyst 20.06+ printed and its CI counts.

    Raises:
        ValueError: ``save_n_best`` < 0, or a ``load_on_stage_*`` that is not a string or a dict.
        ConfigError: at stage start, there is no logdir, or ``resume`` does not exist / fit.
    """

    metric_names = ()  # writes no metric

    def __init__(self, save_n_best: int = 1, resume: str | None = None, resume_dir: str | None = None,
                 metrics_filename: str = "_metrics.json", load_on_stage_start: str | Mapping[str, str] | None = None,
                 load_on_stage_end: str | Mapping[str, str] | None = None):
        super().__init__(CallbackOrder.External, node=CallbackNode.Master, scope=CallbackScope.Experiment)
        if not isinstance(save_n_best, int) or save_n_best < 0:
            raise ValueError(f"CheckpointCallback: argument save_n_best should be an int >= 0, got {save_n_best!r}")
        for name, spec in (("load_on_stage_start", load_on_stage_start), ("load_on_stage_end", load_on_stage_end)):
            if spec is not None and not isinstance(spec, (str, Mapping)):
                raise ValueError(f"CheckpointCallback: {name} should be a checkpoint name, a path or a dict of "
                                 f"them by part ({', '.join(PARTS)}), got {spec!r}")
        self.save_n_best, self.metrics_filename = save_n_best, metrics_filename
        self.resume = None if resume is None else str(Path(resume_dir or "") / resume)
        self.load_on_stage_start, self.load_on_stage_end = load_on_stage_start, load_on_stage_end
        self.epochs: list[dict[str, Any]] = []  # every epoch: {"stage", "name", "value", "metrics"}

    # ------------------------------------------------------------------ events
    def on_stage_start(self, runner):
        """Check the logdir; load ``resume`` (once) and ``load_on_stage_start``."""
        if runner.logdir is None:
            raise ConfigError(f"stage {runner.stage_name!r}: CheckpointCallback needs a logdir, the run has none")
        if self.resume is not None:
            _load(runner, {Path(self.resume): PARTS}, by_part=False)
            self.resume = None
        _load_spec(runner, self.load_on_stage_start)

    def on_epoch_end(self, runner):
        """Save the epoch's checkpoints, drop the pair that left the stage's n best, write the metrics."""
        if runner.is_infer_stage:
            return
        folder = runner.logdir / FOLDER
        name = f"{runner.stage_name}.{runner.epoch}"
        kept_before = self._kept(runner.stage_name, runner.minimize_metric)
        self.epochs.append({"stage": runner.stage_name, "name": name, "metrics": dict(runner.valid_metrics),
                            "value": runner.valid_metrics.get(runner.main_metric)})
        kept = self._kept(runner.stage_name, runner.minimize_metric)
        best, in_top = runner.is_best_valid, name in kept
        logdir = runner.logdir
        save_checkpoint(model_checkpoint(runner), checkpoint_path(logdir, LAST),
                        *[checkpoint_path(logdir, BEST)] * best, *[folder / f"{name}.pth"] * in_top)
        save_checkpoint(full_checkpoint(runner, epoch_done=True), checkpoint_path(logdir, LAST, full=True),
                        *[checkpoint_path(logdir, BEST, full=True)] * best, *[folder / f"{name}_full.pth"] * in_top)
        for old in set(kept_before) - set(kept):
            for suffix in ("", "_full"):
                (folder / f"{old}{suffix}.pth").unlink(missing_ok=True)
        metrics = json.dumps(self._metrics_file(runner), indent=2)
        write_atomically(folder / self.metrics_filename, metrics.encode())

    def on_stage_end(self, runner):
        """Print the stage's kept checkpoints as Catalyst did ("Top best models:", then
        ``PATH<TAB>VALUE`` per kept epoch, best first), then load ``load_on_stage_end`` (less its
        ``last`` entries)."""
        if not runner.is_infer_stage:
            values = {epoch["name"]: epoch["value"] for epoch in self.epochs}
            kept = self._kept(runner.stage_name, runner.minimize_metric)
            print("\n".join(["Top best models:", *(f"{runner.logdir / 'checkpoints' / name}.pth\t{values[name]:3.4f}"
                                                     for name in kept)]), flush=True)
        spec = self.load_on_stage_end
        if isinstance(spec, Mapping):
            _load_spec(runner, {part: name for part, name in spec.items() if name not in LAST_NAMES})
        elif spec not in LAST_NAMES:
            _load_spec(runner, spec)

    def on_exception(self, runner):
        """After an error (not a stop, which writes ``last_full.pth``), save the model as
        ``checkpoints/checkpoint.exception_{Error}.pth`` and its valid metrics under that name in
        ``_metrics.json``, as Catalyst 20.x's saver did, so a failed run leaves what it had. A
        failure here is reported on stderr and never hides the run's own error."""
        error = runner.exception
        if isinstance(error, RunStopped) or not isinstance(error, Exception) or runner.logdir is None:
            return
        name = f"checkpoint.exception_{type(error).__name__}"
        folder = runner.logdir / "checkpoints"
        try:
            save_checkpoint(model_checkpoint(runner), folder / f"{name}.pth")
            metrics = {**self._metrics_file(runner), name: dict(runner.valid_metrics)}
            write_atomically(folder / self.metrics_filename, json.dumps(metrics, indent=2).encode())
        except Exception as e:  # the run's own error is what the user must see
            print(f"CheckpointCallback: the checkpoint after the error was not saved ({type(e).__name__}: {e})",
                  file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ helpers
    def _kept(self, stage: str, minimize: bool) -> list[str]:
        """Names of the stage's ``save_n_best`` best epochs, best first (a stable sort: ties keep
        the earlier epoch ahead, as Catalyst's ``sorted`` did)."""
        ranked = [epoch for epoch in self.epochs if epoch["stage"] == stage and epoch["value"] is not None]
        ranked.sort(key=lambda epoch: epoch["value"], reverse=not minimize)
        return [epoch["name"] for epoch in ranked[:self.save_n_best]]

    def _metrics_file(self, runner) -> dict[str, Any]:
        """The content of ``_metrics.json`` (see the class docstring)."""
        stage = [epoch for epoch in self.epochs if epoch["stage"] == runner.stage_name]
        metrics = {"best": dict(runner.best_valid_metrics), "last": dict(runner.valid_metrics)}
        metrics.update((epoch["name"], epoch["metrics"]) for epoch in self.epochs)
        metrics.update((f"epoch_{index}", [f"checkpoints/{epoch['name']}.pth", epoch["value"], epoch["metrics"]])
                       for index, epoch in enumerate(stage))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Every epoch's name, main metric and valid metrics."""
        return {"epochs": json.loads(json.dumps(self.epochs))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ConfigError: the state comes from an mlcomp before the per-stage n best (no ``epochs``).
        """
        if "epochs" not in state:
            raise ConfigError("CheckpointCallback: the checkpoint's state is of an older mlcomp (no 'epochs'); "
                              "start the run afresh or resume it with the mlcomp that wrote it")
        self.epochs = json.loads(json.dumps(state["epochs"]))


def _files(logdir: Path, spec: str | Mapping[str, str]) -> dict[Path, tuple[str, ...]]:
    """The checkpoints a ``load_on_stage_*`` value reads, each with the parts it loads (a dict's
    mapping follows Catalyst 20.06's ``_required_files``, see :class:`CheckpointCallback`)."""
    if isinstance(spec, str):
        return {_path(logdir, spec): PARTS}
    wanted = [part for part in PARTS if part in spec]
    from_full = set(PARTS[1:]) | ({"model"} if len(wanted) > 1 else set())
    files: dict[Path, tuple[str, ...]] = {}
    for part in wanted:
        name = str(spec[part])
        if name in NAMED and part in from_full:
            name = full_name(name)
        path = _path(logdir, name)
        files[path] = (*files.get(path, ()), part)
    return files


def _path(logdir: Path, name: str) -> Path:
    """The file of a checkpoint name (:func:`mlcomp.runner.checkpoint.checkpoint_path`, the
    resolver's table), else ``name`` as a path."""
    return checkpoint_path(logdir, name) if name in NAMED else Path(name)


def _load_spec(runner, spec: str | Mapping[str, str] | None) -> None:
    """Load what ``spec`` names, once every named checkpoint of the logdir exists."""
    if not spec:
        return
    files = _files(runner.logdir, spec)
    if any(path.parent == runner.logdir / FOLDER and path.stem in NAMED and not path.is_file()
           for path in files):
        return  # nothing saved yet (e.g. the first stage)
    _load(runner, files, by_part=not isinstance(spec, str))


def _load(runner, files: Mapping[Path, Sequence[str]], by_part: bool) -> None:
    """Print Catalyst's ``=> Loading`` line for each file and load its parts into ``runner``."""
    for path, parts in files.items():
        print(f"=> Loading {', '.join(parts)} from {path}" if by_part else f"=> Loading checkpoint {path}",
              flush=True)
        unpack_checkpoint(runner, load_checkpoint(path), path, parts=parts)
