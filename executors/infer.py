"""The ``infer`` task type: predictions of a trained model on a data set, written into the task's
folder.

```yaml
executors:
  infer:
    type: infer
    depends: [train, search]          # the best of these train runs / grid searches
    checkpoint: best                  # best (default), last, a file name in checkpoints/, a path
    dataset:                          # optional: a registered dataset and its arguments;
      dataset: NpzDataset             #   default: the `infer*` loaders of the run's config
      path: ${MLCOMP_DATA_DIR}/test.npz
      keys: {x: features, y: targets}
    batch_size: 256
    formats: [npy, csv]
```

The model is rebuilt from the source run's ``logdir/config.yml`` and loaded with the checkpoint's
weights (``TaskContext.model``, resolved by :mod:`mlcomp.worker.lookup` before the run). The
predictions are made by the runner of that config (its expdir's ``Runner`` or
``runner_params.runner``, else ``SupervisedRunner`` with the config's ``runner_params``) in one
inference stage (Catalyst 20.x's way: no criterion step, no optimizer, no backward pass) over the
loaders, with the callbacks of the config's first ``infer*`` stage when it has one (a user's own
inference callbacks run), an :class:`~mlcomp.runner.callbacks.InferCallback` collecting the
outputs and targets, and a metric callback. For each loader the model's outputs
(``runner.output[output_key]``) are written as ``predictions/<loader>.npy`` (the raw outputs) and
``predictions/<loader>.csv`` (row, predicted class, target when the data has one). When the
batches hold targets (``runner_params.input_target_key``, default ``targets``) the loss (the
config's criterion, else cross-entropy) and, for class scores, the accuracy of each batch are
averaged by the runner over the loader (batch-size weighted); the loader metrics of every
callback (``<loader>_<metric>``) are reported (through
:class:`executors.reporting.ReportingCallback`) and returned in the result with the paths.
"""
from __future__ import annotations

import csv
import functools
from collections import OrderedDict
from pathlib import Path
from typing import Any

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register
from mlcomp.errors import ConfigError, ExecutorError

__all__ = ["InferExecutor", "classification_metrics", "rebuild_model", "predict", "KEYS", "FORMATS"]

KEYS = ("checkpoint", "dataset", "loaders", "batch_size", "formats")
FORMATS = ("npy", "csv")


def classification_metrics(outputs, targets, criterion=None) -> dict[str, Any]:
    """The metrics of one batch as 0-dim tensors (no device sync): ``loss`` (``criterion``, else
    cross-entropy for class scores) and ``accuracy`` (class scores ``[N, C]`` against integer
    labels ``[N]``); empty when nothing applies. A criterion that does not fit plain
    ``(outputs, targets)`` gives no loss."""
    import torch

    metrics = {}
    is_scores = outputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point()
    loss_fn = criterion if isinstance(criterion, torch.nn.Module) else (
        torch.nn.CrossEntropyLoss() if is_scores else None)
    if loss_fn is not None:
        try:
            metrics["loss"] = loss_fn(outputs, targets)
        except (RuntimeError, ValueError):
            pass
    if is_scores and len(targets):
        metrics["accuracy"] = (outputs.argmax(dim=1) == targets).float().mean()
    return metrics


def _write(folder: Path, name: str, outputs, targets, formats: list[str]) -> dict[str, str]:
    """Writes ``outputs`` (an array ``[N, ...]``) as ``<name>.npy`` and the predicted class (the
    argmax of ``[N, C]`` scores, else the first value of each row) with ``targets`` (``[N]`` or
    None) as ``<name>.csv``, as ``formats`` asks; returns the paths by description."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    if "npy" in formats:
        paths[f"{name} outputs"] = str(folder / f"{name}.npy")
        np.save(paths[f"{name} outputs"], outputs)
    if "csv" in formats:
        paths[f"{name} predictions"] = str(folder / f"{name}.csv")
        predicted = outputs.argmax(axis=1) if outputs.ndim == 2 else outputs.reshape(len(outputs), -1)[:, 0]
        with open(paths[f"{name} predictions"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "prediction"] + (["target"] if targets is not None else []))
            for i, value in enumerate(predicted.tolist()):
                writer.writerow([i, value] + ([targets[i].item()] if targets is not None else []))
    return paths


def _outputs(predictions: dict, output_key: str | None, loader: str):
    """The model's outputs among a loader's collected ``predictions``: ``output_key``'s, or the
    only output when the runner has no output key.

    Raises:
        ExecutorError: no such output, or several and no ``runner_params.output_key`` to choose.
    """
    if output_key in predictions:
        return predictions[output_key]
    if output_key is None and len(predictions) == 1:
        return next(iter(predictions.values()))
    raise ExecutorError(f"infer: loader {loader!r}: no output {output_key!r} to write among {sorted(predictions)}; "
                        f"set runner_params.output_key")


def rebuild_model(source):
    """The model of ``source`` (a :class:`~executors.base.ModelSource`) as the runner runs it:
    ``(experiment, runner, stage, model)`` from the run's ``logdir/config.yml``, ``stage`` the
    config's first ``infer*`` stage or None, ``model`` loaded with the checkpoint's weights.

    Raises:
        ConfigError: the checkpoint is missing or does not fit the model.
    """
    from mlcomp.runner.checkpoint import load_checkpoint, load_state_checked
    from mlcomp.runner.config import make_experiment, make_runner
    from mlcomp.runner.config_io import load_config

    config = load_config(source.logdir / "config.yml")
    experiment = make_experiment(config)
    runner = make_runner(config)
    stage = next((name for name in experiment.stages if name.startswith("infer")), None)
    model = experiment.get_model(stage or experiment.stages[-1])
    load_state_checked(model, load_checkpoint(source.checkpoint)["model_state_dict"], source.checkpoint)
    return experiment, runner, stage, model


def predict(task: TaskContext, loaders, model, runner=None, experiment=None, stage: str | None = None) -> dict:
    """Runs ``model`` over ``loaders`` (name → DataLoader) in one inference stage of ``runner``
    (a ``SupervisedRunner`` when None; see :meth:`InferExecutor._experiment`); returns for each
    loader ``(outputs, targets)``: the model's outputs ``[N, ...]`` and the batches' targets, or
    None when they have none (numpy arrays). ``model`` may be a TorchScript module (MLComp's
    traced models), ``experiment`` None for a model without a config.

    Raises:
        ExecutorError: no output to take (see :func:`_outputs`).
    """
    if runner is None:
        from mlcomp.runner import SupervisedRunner

        runner = SupervisedRunner()
    target_key, output_key = getattr(runner, "input_target_key", "targets"), getattr(runner, "output_key", None)
    runner.run_experiment(InferExecutor._experiment(task, experiment, stage, model, loaders, (target_key, output_key)))
    found = {}
    for name in loaders:
        outputs = _outputs(runner.predictions[name], output_key, name)
        targets = runner.predictions[name].get(target_key)
        found[name] = outputs, targets if targets is not None and len(targets) == len(outputs) else None
    return found


@register
class InferExecutor(Executor):
    """Predicts with the best (or a chosen) checkpoint of the train run it depends on. Config keys:
    :data:`KEYS` (see the module docstring)."""

    type_name = "infer"

    @classmethod
    def model_checkpoint(cls, config: dict) -> str:
        """The checkpoint named by the ``checkpoint`` key (``best`` by default) of the train run
        it depends on, resolved into ``TaskContext.model``."""
        return config.get("checkpoint", "best")

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks the keys; a ``dataset`` must name a registered dataset.

        Raises:
            DagError: an unknown key or a value of the wrong kind; an unknown dataset name.
        """
        from mlcomp.runner import registry

        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for an infer task; allowed: {', '.join(KEYS)}")
        checkpoint = spec.get("checkpoint", "best")
        if not isinstance(checkpoint, str) or not checkpoint.strip():
            raise ctx.error("checkpoint", f"got {checkpoint!r}; allowed: best, last, a checkpoint file name or path")
        dataset = spec.get("dataset")
        if dataset is not None:
            if not isinstance(dataset, dict) or not isinstance(dataset.get("dataset"), str):
                raise ctx.error("dataset", f"got {dataset!r}; allowed: a mapping with 'dataset' (a registered "
                                           f"dataset name) and its arguments")
            try:
                registry.Dataset.get(dataset["dataset"], "dataset.dataset")
            except ConfigError as e:
                raise ctx.error("dataset", str(e)) from None
        loaders = spec.get("loaders")
        if loaders is not None and (not isinstance(loaders, list) or not all(isinstance(x, str) for x in loaders)):
            raise ctx.error("loaders", f"got {loaders!r}; allowed: a list of loader names of the config")
        batch_size = spec.get("batch_size", 256)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ctx.error("batch_size", f"got {batch_size!r}; allowed: an int >= 1")
        formats = spec.get("formats", list(FORMATS))
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not formats or not set(formats) <= set(FORMATS):
            raise ctx.error("formats", f"got {spec.get('formats')!r}; allowed: a list of {', '.join(FORMATS)}")
        return {"checkpoint": checkpoint, "dataset": dataset, "loaders": loaders, "batch_size": batch_size,
                "formats": formats}

    def run(self, task: TaskContext) -> dict | None:
        """Writes the predictions; returns their paths, the metrics and the model's source.

        Raises:
            ExecutorError: no train run to take the model from, no loader to predict, no output
                to write.
            ConfigError: the checkpoint is missing or does not fit the model; the dataset refers
                to an unset ``${VAR}``; a callback of the config's infer stage fails.
        """
        source = task.model
        experiment, runner, stage, model = rebuild_model(source)
        loaders = self._loaders(task, experiment)
        paths = {}
        for name, (outputs, targets) in predict(task, loaders, model, runner, experiment, stage).items():
            paths.update(_write(task.folder / "predictions", name, outputs, targets, task.config["formats"]))
        metrics = {key: float(value) for key, value in runner.epoch_metrics.items()}
        print(f"mlcomp infer: model of task {source.task_id} {source.name!r} ({source.checkpoint}); "
              + (", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "no targets: no metrics"), flush=True)
        return {"paths": paths, "metrics": metrics, **source.describe()}

    @staticmethod
    def _experiment(task: TaskContext, experiment, stage: str | None, model, loaders, keys: tuple):
        """The inference stage: ``stage`` of the config (its callbacks, its name) or one named
        ``infer``, over ``loaders``, with an InferCallback keeping the outputs and targets, the
        :func:`classification_metrics` of each batch when the runner names its output, and the
        task's reporting; no logdir (nothing of the source run is written). With no
        ``experiment`` (a model without a config) there is no criterion and no config callbacks.

        Args:
            keys: the runner's ``(input_target_key, output_key)``.
        """
        from mlcomp.runner.callbacks import InferCallback
        from mlcomp.runner.callbacks.metric import BatchMetricCallback
        from mlcomp.runner.simple import SimpleExperiment

        from executors.reporting import ReportingCallback

        criterion = experiment.get_criterion(stage or experiment.stages[-1]) if experiment is not None else None
        target_key, output_key = keys
        callbacks = experiment.get_callbacks(stage) if stage is not None else OrderedDict()
        callbacks["_mlcomp_infer"] = InferCallback(input_keys=[target_key])
        if isinstance(output_key, str):
            callbacks["_mlcomp_infer_metrics"] = BatchMetricCallback(
                "", functools.partial(classification_metrics, criterion=criterion), input_key=target_key,
                output_key=output_key)
        if task.reporter is not None:
            callbacks["_mlcomp_report"] = ReportingCallback(task.reporter, task.folder)
        return SimpleExperiment(model=model, loaders=loaders, criterion=criterion, callbacks=callbacks,
                                stage=stage or "infer",
                                initial_seed=experiment.initial_seed if experiment is not None else 42)

    @staticmethod
    def _loaders(task: TaskContext, experiment) -> "OrderedDict[str, Any]":
        """``infer`` over the configured ``dataset`` (its ``${VAR}`` references expanded), else the
        ``infer*`` loaders of the config's stages (only those named in ``loaders`` when given).

        Raises:
            ExecutorError: no loader to predict.
            ConfigError: the dataset refers to an unset ``${VAR}`` or cannot be built.
        """
        from torch.utils.data import DataLoader

        from mlcomp.configkit import expand_env
        from mlcomp.runner import registry

        dataset = task.config.get("dataset")
        if dataset is not None:
            kwargs = expand_env({k: v for k, v in dataset.items() if k != "dataset"}, "dataset")
            data = registry.Dataset.create(dataset["dataset"], "dataset.dataset", **kwargs)
            return OrderedDict(infer=DataLoader(data, batch_size=task.config["batch_size"], shuffle=False))
        wanted = task.config.get("loaders")
        found: "OrderedDict[str, Any]" = OrderedDict()
        for stage in experiment.stages:
            for name, loader in experiment.get_loaders(stage).items():
                if name.startswith("infer") and (wanted is None or name in wanted):
                    found.setdefault(name, loader)
        if not found:
            raise ExecutorError(f"task {task.task_id}: nothing to predict: give 'dataset', or add infer* loaders to "
                                f"the config's data_params{' named ' + ', '.join(wanted) if wanted else ''}")
        return found
