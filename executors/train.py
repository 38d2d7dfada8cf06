"""The ``train`` task type: runs the stage-based runner on a config from the DAG's code.

```yaml
executors:
  train:
    type: train
    config: [configs/train.yml, configs/pipeline.yml]   # relative to the expdir, merged in order
    params:                                             # optional overrides (nested or dotted keys)
      stages.main.stage_params.num_epochs: 4
    processes: 2            # optional: CPU processes (gloo) for `distr: true` without GPUs
    max_batch_points: 200   # optional: batch-metric points per loader and epoch (0: none)
    grid:
      - lr: [0.003, 0.01]   # a unique key suffix of the config, or a dotted path
```

At submission the configs are merged, ``params`` and the grid cell applied (a cell key is a
dotted path from the top, or a suffix matching exactly one path: ``lr``; an unknown or ambiguous
key is rejected with the file and line; a cell key naming one of this task's own keys, such as
``config`` or ``params.x``, sets that key instead, so a grid may also choose config files), the result is checked by building its experiment, and
the resolved config is stored in the task's ``executor_config`` with its main metric.

On the worker ``MLCOMP_DATA_DIR`` is set to the project's data folder (the runner expands
``${VAR}`` references in the config's strings: :func:`mlcomp.runner.config.expand_env`), the
logdir is ``<task folder>/logdir``,
and the run reports to the store through :class:`executors.reporting.ReportingCallback`. A new
attempt of a stopped or failed task continues from ``logdir/checkpoints/last_full.pth`` (or
``best_full.pth``, or a given file: ``Task.resume_from``; the worker resolves it into
``TaskContext.resume``, :func:`mlcomp.worker.context.resolve_resume`). A stop request (SIGTERM) makes the
runner finish its batch, write ``last_full.pth`` and the executor return
:class:`mlcomp.outcome.Stopped` (the child exits 75: ``stopped``); a search trial at its rung
returns :class:`mlcomp.outcome.Paused` (exit 76: ``paused``). A
model-only checkpoint (``best.pth``, ``main.3.pth``) given to resume starts a fresh run from its
weights instead. With
``distr: true`` the task runs one process per allocated GPU (NCCL; gloo when CUDA is not
available), or ``processes`` CPU processes on gloo when it has no GPU, through
:func:`mlcomp.runner.distributed.launch`; rank 0 reports. A task spread over several computers
(``single_node: false``) runs this computer's ranks of the group ``TaskContext.group`` names.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from executors.base import LOGDIR, Executor, SubmitContext, TaskContext
from executors.registry import register
from executors.reporting import MAX_BATCH_POINTS, ReportingCallback
from mlcomp.errors import ConfigError
from mlcomp.outcome import Paused, Stopped, Success, TaskOutcome

__all__ = ["TrainExecutor", "train_result", "KEYS"]


KEYS = ("config", "params", "processes", "max_batch_points")


def _config_files(spec: dict, ctx: SubmitContext) -> list[str]:
    files = spec.get("config")
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
        raise ctx.error("config", f"got {spec.get('config')!r}; allowed: a config file relative to the expdir "
                                  f"or a list of them (merged in order)")
    for name in files:
        if not (ctx.expdir / name).is_file():
            raise ctx.error("config", f"config file {name!r} does not exist under the expdir {ctx.expdir}")
    return files


def _int_key(spec: dict, key: str, minimum: int, default: int | None, ctx: SubmitContext) -> int | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.error(key, f"got {value!r}; allowed: an int >= {minimum}")
    return value


def _main_metric(experiment) -> dict:
    stages = [s for s in experiment.stages if not s.startswith("infer")] or list(experiment.stages)
    params = experiment.get_stage_params(stages[-1])
    return {"metric": params["main_metric"], "minimize": bool(params["minimize_metric"]),
            "loader": params["valid_loader"]}


def _relative_expdir(config: dict, expdir: Path) -> str | None:
    """Rewrites an ``args.expdir`` inside the DAG's expdir as a path relative to it (the task
    runs on the snapshot copy); returns that relative path, or None. A relative value (one set
    by ``params`` or a grid cell) is taken from the DAG's expdir, like one in a config file."""
    args = config.get("args") or {}
    value = args.get("expdir")
    if not value:
        return None
    try:
        relative = (expdir / value).resolve().relative_to(expdir.resolve())
    except ValueError:
        return None  # outside the snapshot: used as it is
    args["expdir"] = relative.as_posix()
    return args["expdir"]


def _is_full(path: Path) -> bool:
    """Whether ``path`` is a full (resumable) checkpoint rather than a model-only one."""
    from mlcomp.runner.checkpoint import FULL_KEYS, load_checkpoint

    return all(key in load_checkpoint(path) for key in FULL_KEYS)


def _warm_start(config: dict, path: Path) -> None:
    """Makes ``config``'s first stage load the model-only checkpoint ``path`` at its start (a
    ``CheckpointCallback`` with ``resume``; the stages after it keep the default one)."""
    from mlcomp.runner.config_schema import stages_config

    first = next(iter(stages_config(config)))
    stage = config["stages"][first]
    stage["callbacks_params"] = {**(stage.get("callbacks_params") or {}),
                                 "_saver": {"callback": "CheckpointCallback", "resume": str(path)}}


def train_result(runner, folder: Path) -> dict[str, Any]:
    """A finished run's result: main metric (name, direction, best value), the best and last
    metrics, and the checkpoint files relative to the task folder (plus absolute ``paths``)."""
    from mlcomp.runner.checkpoint import BEST, FILES, FOLDER, checkpoint_path

    logdir = Path(runner.logdir) if runner.logdir is not None else folder / LOGDIR
    checkpoints = {name: f"{LOGDIR}/{FOLDER}/{file}" for name, file in FILES.items()
                   if checkpoint_path(logdir, name).is_file()}
    best = runner.best_valid_metrics.get(runner.main_metric)
    return {
        "main_metric": runner.main_metric, "minimize": bool(runner.minimize_metric),
        "valid_loader": runner.valid_loader, "best": None if best is None else float(best),
        "best_metrics": {k: float(v) for k, v in runner.best_valid_metrics.items()},
        "last_metrics": {k: float(v) for k, v in runner.epoch_metrics.items()},
        "epochs": int(runner.global_epoch), "logdir": LOGDIR, "checkpoints": checkpoints,
        "paths": {"best checkpoint": str(folder / checkpoints[BEST])} if BEST in checkpoints else {},
    }


def _train(payload: dict, reporter) -> TaskOutcome:
    """Runs the config of ``payload`` in this process: :class:`Success` with :func:`train_result`,
    :class:`Paused` at a search trial's rung, or :class:`Stopped` on request (each with the
    checkpoint that resumes it)."""
    import torch

    from mlcomp.runner import RunStopped
    from mlcomp.runner.config import run_config
    from executors.pause import PauseCallback, TrialPaused

    torch.set_num_threads(payload["threads"])
    callbacks = {}
    if reporter is not None:
        callbacks["_mlcomp_report"] = ReportingCallback(reporter, payload["folder"], payload["max_batch_points"])
    if payload.get("pause_at"):  # a search trial trained up to its rung (mlcomp.search)
        callbacks["_mlcomp_pause"] = PauseCallback(payload["pause_at"])
    try:
        runner = run_config(payload["config"], logdir=payload["logdir"], resume=payload["resume"],
                            extra_callbacks=callbacks)
    except TrialPaused as e:
        return Paused(f"paused at a rung of its search: {e}", e.checkpoint)
    except RunStopped as e:
        return Stopped(str(e), e.checkpoint)
    return Success(train_result(runner, Path(payload["folder"])))


def _train_rank(payload: dict) -> TaskOutcome:
    """One process of a distributed run (started by ``launch``); rank 0 reports to the store."""
    from mlcomp.runner import distributed

    if not distributed.is_master() or payload["open_reporter"] is None:
        return _train(payload, None)
    reporter = payload["open_reporter"]().start()
    try:
        return _train(payload, reporter)
    finally:
        reporter.close()


@register
class TrainExecutor(Executor):
    """Trains a model with the runner (``mlcomp run`` inside the orchestrator). Config keys:
    :data:`KEYS` (see the module docstring)."""

    type_name = "train"
    resumable = True

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Merges the configs, applies ``params`` and the grid cell, checks the experiment.

        Raises:
            DagError: an unknown key; a missing or malformed config file; a ``params`` or grid key
                that matches no path of the config or several; a config the runner rejects.
        """
        from mlcomp.configkit import set_by_path, split_path
        from mlcomp.runner.config import make_experiment
        from mlcomp.runner.config_io import load_config

        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a train task; allowed: {', '.join(KEYS)}")
        files = _config_files(spec, ctx)
        try:
            config = load_config(*(ctx.expdir / name for name in files), base=ctx.expdir)
        except ConfigError as e:
            raise ctx.error("config", str(e)) from None
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise ctx.error("params", f"got {params!r}; allowed: a mapping of config keys (dotted or nested) to values")
        cell = {k: v for k, v in (ctx.grid_cell or {}).items() if split_path(str(k))[0] not in KEYS}
        for source, values in (("params", params), ("grid", cell)):
            for key, value in values.items():
                try:
                    set_by_path(config, str(key), value)
                except ConfigError as e:
                    raise ctx.error(source, f"{source} key {key!r}: {e}") from None
        relative = _relative_expdir(config, ctx.expdir)
        try:
            experiment = make_experiment(config if relative is None else
                                         {**config, "args": {**config["args"], "expdir": str(ctx.expdir / relative)}})
        except ConfigError as e:
            raise ctx.error("config", f"{', '.join(files)}: {e}") from None
        return {"config": config, "files": files, "expdir": relative, "main": _main_metric(experiment),
                "processes": _int_key(spec, "processes", 1, None, ctx),
                "max_batch_points": _int_key(spec, "max_batch_points", 0, MAX_BATCH_POINTS, ctx)}

    def run(self, task: TaskContext) -> TaskOutcome:
        """Trains; returns :class:`Success` with :func:`train_result` (rank 0's in a distributed
        run; None on the other computers of a gang), :class:`Stopped` when the run was stopped
        or :class:`Paused` at a search trial's rung (each with its ``last_full.pth``).

        Raises:
            ExecutorError: a resume checkpoint is missing.
        """
        from mlcomp.runner.distributed import launch

        payload, nprocs = self._payload(task)
        group = task.group or {}
        if nprocs == 1 and not group:
            return _train(payload, task.reporter)
        # NCCL when CUDA is there, else gloo (declared GPUs on a CPU box)
        outcome = launch(_train_rank, nprocs, payload, master_port=group.get("master_port"),
                         master_addr=group.get("master_addr", "127.0.0.1"), first_rank=group.get("first_rank", 0),
                         world_size=group.get("world_size"))
        return Success(None) if group.get("first_rank", 0) > 0 else outcome  # rank 0's computer reports

    def _payload(self, task: TaskContext) -> tuple[dict, int]:
        """What each process of the run needs (config, logdir, resume file, threads…) and the
        number of processes: one per GPU, or ``processes`` on the CPU, with ``distr``."""
        logdir = task.folder / LOGDIR
        nprocs = (len(task.gpus) or int(task.config.get("processes") or 1)) if task.distr else 1
        payload = {"config": self._config(task), "logdir": str(logdir), "resume": task.resume,
                   "folder": str(task.folder), "max_batch_points": task.config.get("max_batch_points", MAX_BATCH_POINTS),
                   "threads": max(1, task.cpu // nprocs), "open_reporter": task.open_reporter,
                   "pause_at": task.config.get("pause_at")}
        if payload["resume"] is not None and not _is_full(payload["resume"]):
            _warm_start(payload["config"], payload["resume"])
            print(f"mlcomp: attempt {task.attempt} starts afresh from the weights of {payload['resume']}", flush=True)
            payload["resume"] = None
        elif payload["resume"] is not None:
            print(f"mlcomp: attempt {task.attempt} resumes from {payload['resume']}", flush=True)
        return payload, nprocs

    @staticmethod
    def _config(task: TaskContext) -> dict:
        """The stored config with ``args.expdir`` on the task's code copy (``${VAR}`` references
        are left to the runner, which expands them when the run starts)."""
        config = copy.deepcopy(task.config["config"])
        relative = task.config.get("expdir")
        if relative is not None:
            config.setdefault("args", {})["expdir"] = str(task.code_dir / relative)
        return config
