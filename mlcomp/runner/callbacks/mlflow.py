"""An MLflow logger, so runs appear in the MLflow UI people already use (W&B and TensorBoard
play the same part; TensorBoard has its own logger in :mod:`mlcomp.runner.callbacks.logging`)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from mlcomp.runner.callback import Callback, CallbackNode, CallbackOrder
from mlcomp.runner.events import RunStopped

__all__ = ["MLflowLogger", "flatten_params"]

MAX_PARAM = 6000  # characters of a parameter value MLflow stores (MLflow's MAX_PARAM_VAL_LENGTH)


def flatten_params(config: Mapping[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys (``stages.train.optimizer.lr``), values as
    text cut to :data:`MAX_PARAM` characters; lists are one value."""
    params: dict[str, str] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            params.update(flatten_params(value, name + "."))
        else:
            params[name] = str(value)[:MAX_PARAM]
    return params


class MLflowLogger(Callback):
    """Logs a run to MLflow: one MLflow run per runner run, its params the run's config
    (``runner.hparams``, flattened by :func:`flatten_params`), each epoch's metrics as
    ``"{metric}/{loader}"`` at step ``global_epoch``, its status FINISHED after each stage or
    FAILED/KILLED when the run ends in an error or a stop. Master only. Needs the ``mlflow``
    package (``pip install mlcomp[mlflow]``).

    Args:
        tracking_uri: where MLflow stores runs: a tracking server (``http://host:5000``) or a
            database URL; default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<logdir>/mlflow.db``
            (open it with ``mlflow ui --backend-store-uri sqlite:///<logdir>/mlflow.db``).
        experiment: the MLflow experiment (created when missing), default ``"mlcomp"``.
        run_name: default the logdir's folder name.
        tags: extra run tags; under an mlcomp worker the task id and attempt are added.

    Raises:
        ImportError: at stage start, when ``mlflow`` is not installed.
    """

    metric_names = ()  # writes no metric

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None):
        super().__init__(CallbackOrder.Logging, node=CallbackNode.Master)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.tags = dict(tags or {})
        self.client = None
        self.run_id: str | None = None

    def _open(self, runner) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logdir = Path(runner.logdir) if runner.logdir is not None else Path.cwd()
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{logdir.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = self.experiment or "mlcomp"
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=(logdir / "mlflow-artifacts").resolve().as_uri())
        tags = {**{f"mlcomp.{k}": os.environ[f"MLCOMP_{k.upper()}"] for k in ("task_id", "attempt")
                   if f"MLCOMP_{k.upper()}" in os.environ}, **self.tags}
        run = self.client.create_run(experiment_id, run_name=self.run_name or logdir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten_params(runner.hparams).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def on_stage_start(self, runner):
        """Create the MLflow run (first stage) or mark it running again."""
        if self.client is None:
            self._open(runner)
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def on_epoch_end(self, runner):
        """Log the epoch's metrics."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for key, value in runner.epoch_metrics.items():
            loader = next((name for name in runner.loaders if key.startswith(f"{name}_")), None)
            if isinstance(value, (int, float)):
                tag = f"{key[len(loader) + 1:]}/{loader}" if loader else key
                metrics.append(Metric(tag, float(value), now, runner.global_epoch))
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_stage_end(self, runner):
        """Mark the run finished (the next stage marks it running again)."""
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_exception(self, runner):
        """Mark the run killed (a stop) or failed."""
        if self.client is not None:
            stopped = isinstance(runner.exception, RunStopped)
            self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")
