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
weights (``TaskContext.model``, resolved by :mod:`mlcomp.worker.lookup` before the run). For each
loader the model's outputs (``runner_params`` ``input_key`` → model → outputs) are written as ``predictions/<loader>.npy`` (the raw outputs) and
``predictions/<loader>.csv`` (row, predicted class, target when the data has one). When the
batches hold targets (``runner_params.input_target_key``, default ``targets``) the loss (the
config's criterion, else cross-entropy) and, for class scores, the accuracy are reported as
metrics and returned in the result with the paths.
"""
from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path
from typing import Any

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register
from mlcomp.errors import ConfigError, ExecutorError

__all__ = ["InferExecutor", "predict", "classification_metrics", "KEYS", "FORMATS"]

KEYS = ("checkpoint", "dataset", "loaders", "batch_size", "formats")
FORMATS = ("npy", "csv")


def predict(model, loader, input_key: str, target_key: str, device) -> tuple[Any, Any]:
    """Runs ``model`` (eval mode, no gradients) on every batch of ``loader``.

    Returns:
        ``(outputs, targets)``: CPU tensors concatenated along the first axis; ``targets`` is
        None when the batches have no ``target_key``.

    Raises:
        ConfigError: a batch is not a dict with ``input_key``.
    """
    import torch

    outputs, targets = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            if not isinstance(batch, dict) or input_key not in batch:
                keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
                raise ConfigError(f"infer: batches must be dicts with {input_key!r} (runner_params.input_key); "
                                  f"got {keys}")
            outputs.append(model(batch[input_key].to(device)).cpu())
            if target_key in batch:
                targets.append(batch[target_key])
    output = torch.cat(outputs) if outputs else torch.empty(0)
    return output, (torch.cat(targets) if targets and len(targets) == len(outputs) else None)


def classification_metrics(outputs, targets, criterion=None) -> dict[str, float]:
    """``loss`` (``criterion``, else cross-entropy for class scores) and ``accuracy`` (class scores
    ``[N, C]`` against integer labels ``[N]``); empty when nothing applies."""
    import torch

    metrics = {}
    is_scores = outputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point()
    loss_fn = criterion if isinstance(criterion, torch.nn.Module) else (
        torch.nn.CrossEntropyLoss() if is_scores else None)
    if loss_fn is not None:
        try:
            metrics["loss"] = float(loss_fn(outputs, targets))
        except (RuntimeError, ValueError):  # a criterion that does not fit plain outputs/targets
            pass
    if is_scores and len(targets):
        metrics["accuracy"] = float((outputs.argmax(dim=1) == targets).float().mean())
    return metrics


def _write(folder: Path, name: str, outputs, targets, formats: list[str]) -> dict[str, str]:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    if "npy" in formats:
        paths[f"{name} outputs"] = str(folder / f"{name}.npy")
        np.save(paths[f"{name} outputs"], outputs.numpy())
    if "csv" in formats:
        paths[f"{name} predictions"] = str(folder / f"{name}.csv")
        predicted = outputs.argmax(dim=1).tolist() if outputs.dim() == 2 else outputs.reshape(len(outputs), -1)[:, 0].tolist()
        with open(paths[f"{name} predictions"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "prediction"] + (["target"] if targets is not None else []))
            for i, value in enumerate(predicted):
                writer.writerow([i, value] + ([targets[i].item()] if targets is not None else []))
    return paths


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
            ExecutorError: no train run to take the model from, or no loader to predict.
            ConfigError: the checkpoint is missing or does not fit the model; the dataset refers
                to an unset ``${VAR}``.
        """
        import torch

        from mlcomp.runner.checkpoint import load_checkpoint, load_state_checked
        from mlcomp.runner.config import load_config, make_experiment

        source = task.model
        config = load_config(source.logdir / "config.yml")
        experiment = make_experiment(config)
        stage = experiment.stages[-1]
        model = experiment.get_model(stage)
        load_state_checked(model, load_checkpoint(source.checkpoint)["model_state_dict"], source.checkpoint)
        device = torch.device("cuda" if task.gpus and torch.cuda.is_available() else "cpu")
        model.to(device)
        params = config.get("runner_params") or {}
        criterion = experiment.get_criterion(stage)
        paths, metrics = {}, {}
        for name, loader in self._loaders(task, experiment).items():
            outputs, targets = predict(model, loader, params.get("input_key", "features"),
                                       params.get("input_target_key", "targets"), device)
            paths.update(_write(task.folder / "predictions", name, outputs, targets, task.config["formats"]))
            for key, value in (classification_metrics(outputs, targets, criterion) if targets is not None
                               else {}).items():
                metrics[f"{name}_{key}"] = value
                if task.reporter is not None:
                    task.reporter.metric(key, value, loader=name, stage="infer", epoch=1, step=1, kind="epoch")
        print(f"mlcomp infer: model of task {source.task_id} {source.name!r} ({source.checkpoint}); "
              + (", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "no targets: no metrics"), flush=True)
        return {"paths": paths, "metrics": metrics, **source.describe()}

    @staticmethod
    def _loaders(task: TaskContext, experiment) -> "OrderedDict[str, Any]":
        """``infer`` over the configured ``dataset`` (its ``${VAR}`` references expanded), else the
        ``infer*`` loaders of the config's stages (only those named in ``loaders`` when given).

        Raises:
            ExecutorError: no loader to predict.
            ConfigError: the dataset refers to an unset ``${VAR}`` or cannot be built.
        """
        from torch.utils.data import DataLoader

        from mlcomp.runner import registry
        from mlcomp.runner.config import expand_env

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
