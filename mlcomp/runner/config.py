"""Running a runner config (Catalyst 20.x's Config API): :func:`run_config` runs a config dict end
to end and is what ``mlcomp run`` and the train executor call; :func:`make_experiment` and
:func:`make_runner` build the experiment and runner a config describes (the expdir's exports, a
registered name, else :class:`~mlcomp.runner.config_experiment.ConfigExperiment` and
``SupervisedRunner``).

The other concepts of the config API have modules of their own: the override rules
(``--a.b.c=value``, Catalyst's typed ``--a/b/c=value:int``, a unique key suffix such as ``lr``)
and merging are :mod:`mlcomp.configkit`'s (:func:`~mlcomp.configkit.set_by_path`,
:func:`~mlcomp.configkit.parse_overrides`), shared with the DAG spec and grid cells; reading and
writing files is :mod:`mlcomp.runner.config_io`; the config's keys and structural checks are
:mod:`mlcomp.runner.config_schema`; the experiment is :mod:`mlcomp.runner.config_experiment`. A
config looks like this::

    model_params: {model: DigitsCNN, width: 16}
    args: {expdir: myexp, logdir: runs/digits, seed: 42}   # expdir: from the working folder
    stages:
      data_params: {dataset: DigitsDataset, batch_size: 64, loaders: {train: {split: train},
                                                                      valid: {split: valid}}}
      stage_params: {main_metric: accuracy01, minimize_metric: false}
      criterion_params: {criterion: CrossEntropyLoss}
      optimizer_params: {optimizer: Adam, lr: 0.003}
      callbacks_params: {accuracy: {callback: AccuracyCallback}}
      warmup: {stage_params: {num_epochs: 2}}
      main: {stage_params: {num_epochs: 6}, optimizer_params: {load_from_previous_stage: true}}
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from mlcomp.configkit import expand_env
from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.runner.check import check_rule
from mlcomp.runner.checkpoint import resume_checkpoint
from mlcomp.runner.config_experiment import ConfigExperiment
from mlcomp.runner.config_io import save_config
from mlcomp.runner.config_schema import validate_config
from mlcomp.runner.expdir import experiment_and_runner, import_expdir
from mlcomp.runner.experiment import Experiment
from mlcomp.runner.simple import callbacks_by_name
from mlcomp.runner.weights import LoadWeightsCallback, is_full_checkpoint

__all__ = ["make_experiment", "make_runner", "run_config"]


def make_experiment(config: Mapping[str, Any]) -> Experiment:
    """The experiment of ``config``: the expdir's ``Experiment`` class if it exports one, else
    :class:`ConfigExperiment`.

    Raises:
        ConfigError: see :class:`ConfigExperiment` and :func:`mlcomp.runner.expdir.import_expdir`.
    """
    cls, _ = _expdir_classes(config)
    return (cls or ConfigExperiment)(config)


def make_runner(config: Mapping[str, Any]):
    """The runner of ``config``, built with ``runner_params``: the registered runner named by
    ``runner_params.runner``, else the expdir's ``Runner`` if it exports one, else
    ``SupervisedRunner``.

    Raises:
        ConfigError: an unknown runner name, or ``runner_params`` its constructor does not take.
    """
    return _make_runner(config, _expdir_classes(config)[1])


def _expdir_classes(config: Mapping):
    """The expdir's ``Experiment`` and ``Runner`` (each None when absent); a registered
    experiment named by ``experiment_params.experiment`` (Catalyst 20.x) wins over the export."""
    validate_config(config)
    expdir = (config.get("args") or {}).get("expdir")
    experiment, runner = experiment_and_runner(import_expdir(expdir) if expdir else None)
    name = (config.get("experiment_params") or {}).get("experiment")
    if name is not None:
        experiment = registry.Experiment.get(name, "experiment_params.experiment")
        if not (isinstance(experiment, type) and issubclass(experiment, Experiment)):
            raise ConfigError(f"experiment_params.experiment: {name!r} is {experiment!r}, not an Experiment subclass")
    return experiment, runner


def _make_runner(config: Mapping, runner_cls):
    """``runner_cls`` (or the registered runner ``runner_params.runner`` names, else
    ``SupervisedRunner``) built with the other ``runner_params``."""
    params = dict(config.get("runner_params") or {})
    name = params.pop("runner", None)
    if name is not None:
        runner_cls = registry.Runner.get(name, "runner_params.runner")
    elif runner_cls is None:
        runner_cls = registry.Runner.get("SupervisedRunner")
    registry.check_arguments(runner_cls, f"runner {runner_cls.__name__}", "runner_params", (), params)
    return runner_cls(**params)


def run_config(config: Mapping[str, Any], *, logdir=None, resume=None, check: bool = False,
               overfit: bool = False, extra_callbacks=None, verbose: bool = False):
    """Runs a config dict end to end and returns the runner (its metrics and model are set).

    The keyword arguments override ``args`` when given (``logdir``, ``resume``, ``check``,
    ``overfit``, ``verbose``); ``logdir="none"`` runs without a logdir. Environment references
    (``${MLCOMP_DATA_DIR}``) in the config's strings are expanded first (:func:`mlcomp.configkit.expand_env`), so
    the saved ``config.yml`` holds the values the run used. The expdir is imported,
    its ``Experiment``/``Runner`` used if it exports them (``runner_params.runner`` names a
    registered runner instead), the merged config is written to ``logdir/config.yml`` (rank 0),
    and the run resumes from ``args.resume`` or, with ``args.autoresume``, from
    ``logdir/checkpoints/{last|best}_full.pth`` when it exists: a full checkpoint continues
    exactly, a model-only one (``best.pth``) gives its weights to a run from the start
    (:mod:`mlcomp.runner.weights`). ``args.check`` limits the run by the config's Catalyst era
    (:func:`mlcomp.runner.check.check_rule`); ``args.out_dir``/``out_prefix`` are set on the
    runner, where ``InferCallback`` finds them (Catalyst 20.x handed every ``args`` key to the
    run's state).

    Args:
        config: a config dict (e.g. from :func:`mlcomp.runner.config_io.load_config`).
        extra_callbacks: callbacks added to every stage: a ``{name: Callback}`` mapping or a
            list (named by class).

    Raises:
        ConfigError: any problem of the config, found before training starts where it can be
            (e.g. a ``${VAR}`` of an unset variable);
            the runner raises it for a ``main_metric`` nothing produces or a resume file that
            does not fit.
        mlcomp.runner.RunStopped: the run was stopped (SIGTERM or ``request_stop``); it wrote
            ``logdir/checkpoints/last_full.pth``.
    """
    config = expand_env(copy.deepcopy(dict(config)))
    args = dict(config.get("args") or {})
    for key, value in (("logdir", logdir), ("resume", resume)):
        if value is not None:
            args[key] = str(value)
    for key, value in (("check", check), ("overfit", overfit), ("verbose", verbose)):
        if value:
            args[key] = True
    config["args"] = args
    experiment_cls, runner_cls = _expdir_classes(config)
    experiment = (experiment_cls or ConfigExperiment)(config)
    experiment.extra_callbacks.update(callbacks_by_name(extra_callbacks))
    if args.get("timeit") and "TimerCallback" in registry.Callback:
        experiment.extra_callbacks.setdefault("_timer", registry.Callback.create("TimerCallback"))
    resume_path = _resume_from(args, experiment)
    _prepare_cudnn(args)
    runner = _make_runner(config, runner_cls)
    if experiment.logdir and _is_master():
        save_config(config, Path(experiment.logdir) / "config.yml")
    runner.verbose = bool(args.get("verbose"))
    runner.out_dir, runner.out_prefix = args.get("out_dir"), args.get("out_prefix")
    runner.run_experiment(experiment, resume=resume_path, check=check_rule(config) if args.get("check") else False,
                          overfit=args.get("overfit") or False)
    return runner


def _resume_from(args: Mapping[str, Any], experiment) -> Path | None:
    """The full checkpoint the run continues from (``args.resume``/``autoresume``); a model-only
    one instead gives its weights to the run's start (:class:`LoadWeightsCallback`)."""
    path = resume_checkpoint(args, experiment.logdir)
    if path is not None and not is_full_checkpoint(path):
        experiment.extra_callbacks["_resume_weights"] = LoadWeightsCallback(path)
        return None
    return path


def _prepare_cudnn(args: Mapping[str, Any]) -> None:
    """``args.deterministic`` / ``args.benchmark`` → cuDNN's flags (Catalyst's ``prepare_cudnn``)."""
    if "deterministic" in args:
        torch.backends.cudnn.deterministic = bool(args["deterministic"])
    if "benchmark" in args:
        torch.backends.cudnn.benchmark = bool(args["benchmark"])


def _is_master() -> bool:
    """Whether this process is rank 0 (or not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0
