"""Tuning a runner config with an Optuna study, in this process (Catalyst 20.10–20.12's
``catalyst-dl tune``; what ``mlcomp tune`` runs). No database or server is involved.

A config to tune has string values that call the trial (:mod:`mlcomp.search.trial_strings`) and
an optional ``study_params`` section, in Catalyst's form::

    study_params:
      sampler_params: {sampler: TPESampler, n_startup_trials: 5}   # a class of optuna.samplers
      pruner_params: {pruner: MedianPruner, n_warmup_steps: 1}     # a class of optuna.pruners
      storage: sqlite:///study.db      # optional: keep the study in an Optuna storage
      study_name: digits               # optional: its name there (continued when it exists)
    model_params: {model: SimpleNet, hidden: "trial.suggest_int('hidden', 8, 64)"}

Each trial resolves those strings, runs the config through :func:`mlcomp.runner.config.run_config`
in the logdir the caller names for it, and returns ``best_valid_metrics[main_metric]`` of its last
stage; the study minimizes or maximizes it as the last training stage's ``minimize_metric`` says
(Catalyst read the ``stages.stage_params`` defaults only). Per-epoch reporting and pruning are the
:class:`~mlcomp.runner.callbacks.optuna.OptunaPruningCallback`'s, in the stages whose
``callbacks_params`` name it; when ``pruner_params`` names a pruner and no stage names the
callback, every stage gets one.

Departures from Catalyst, to make a study reproducible and its mistakes early: a sampler whose
constructor takes ``seed`` gets ``args.seed`` unless ``sampler_params`` gives one (Optuna's
default, ``TPESampler``, included); an existing study of the storage is continued; ``study_params``
keys and the sampler's and pruner's arguments are checked before the first trial.
"""
from __future__ import annotations

import copy
import difflib
import inspect
from typing import Any, Callable, Mapping

from mlcomp.errors import ConfigError
from mlcomp.search.trial_strings import resolve_trial_strings

__all__ = ["STUDY_KEYS", "TUNE_ARGS", "PRUNING_CALLBACKS", "create_study", "tune_config"]

STUDY_KEYS = ("sampler_params", "pruner_params", "storage", "study_name")
"""The keys of ``study_params``."""
TUNE_ARGS = ("n_trials", "timeout", "storage", "study_name")
"""The ``args`` keys that concern the study (Catalyst's ``catalyst-dl tune`` flags); removed
before each trial's run, whose ``args`` the runner checks."""
PRUNING_CALLBACKS = ("OptunaPruningCallback", "OptunaCallback")
"""The callback names that report to the trial."""


def _optuna_class(module, base_name: str, params: Mapping, name_key: str, where: str):
    """The instance of the class of ``module`` named by ``params[name_key]``, built with the other
    keys (``None`` when ``params`` is empty)."""
    from mlcomp.runner.registry import check_arguments

    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a {name_key!r} key, got {params!r}")
    if not params:
        return None
    kwargs = dict(params)
    name = kwargs.pop(name_key, None)
    base = getattr(module, base_name)
    classes = sorted(n for n, c in vars(module).items()
                     if not n.startswith("_") and inspect.isclass(c) and issubclass(c, base) and c is not base)
    if name not in classes:
        close = difflib.get_close_matches(str(name), classes, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"allowed: {', '.join(classes)}"
        raise ConfigError(f"{where}.{name_key}: unknown {module.__name__} class {name!r}; {hint}")
    cls = getattr(module, name)
    check_arguments(cls, name, where, (), kwargs)
    return cls(**kwargs)


def _with_seed(sampler_params: Mapping, seed: int) -> dict:
    """``sampler_params`` with ``seed`` added when the sampler takes one and none is given."""
    import optuna

    if sampler_params is not None and not isinstance(sampler_params, Mapping):
        return sampler_params  # refused by _optuna_class
    params = dict(sampler_params or {})
    cls = getattr(optuna.samplers, str(params.setdefault("sampler", "TPESampler")), None)
    if cls is not None and "seed" not in params and "seed" in inspect.signature(cls).parameters:
        params["seed"] = seed
    return params


def create_study(study_params: Mapping[str, Any], *, minimize: bool, seed: int, storage: str | None = None,
                 study_name: str | None = None):
    """The Optuna study of ``study_params`` (the module docstring's form). ``storage`` and
    ``study_name`` win over the keys of that name; a stored study of that name is continued.

    Raises:
        ConfigError: an unknown key, sampler or pruner (close names listed), or arguments the
            sampler's or pruner's constructor does not take.
    """
    import optuna

    if not isinstance(study_params, Mapping):
        raise ConfigError(f"study_params: expected a mapping, got {study_params!r}")
    for key in study_params:
        if key not in STUDY_KEYS:
            raise ConfigError(f"study_params.{key}: unknown key; allowed: {', '.join(STUDY_KEYS)}")
    sampler = _optuna_class(optuna.samplers, "BaseSampler", _with_seed(study_params.get("sampler_params"), seed),
                            "sampler", "study_params.sampler_params")
    pruner = _optuna_class(optuna.pruners, "BasePruner", study_params.get("pruner_params") or {},
                           "pruner", "study_params.pruner_params")
    return optuna.create_study(direction="minimize" if minimize else "maximize", sampler=sampler, pruner=pruner,
                               storage=storage or study_params.get("storage"),
                               study_name=study_name or study_params.get("study_name"), load_if_exists=True)


def _last_training_stage(config: Mapping) -> dict:
    from mlcomp.runner.config_schema import stages_config

    stages = [s for name, s in stages_config(config).items() if not name.startswith("infer")]
    if not stages:
        raise ConfigError("stages: no training stage to tune (every stage is an infer stage)")
    return stages[-1]["stage_params"]


def _names_pruning_callback(config: Mapping) -> bool:
    from mlcomp.runner.config_schema import stages_config

    return any(isinstance(params, Mapping) and params.get("callback") in PRUNING_CALLBACKS
               for stage in stages_config(config).values() for params in stage["callbacks_params"].values())


def _objective(config: Mapping, trial_logdir: Callable[[int, dict], str], add_callback: bool):
    """The function of a trial: resolve, run in the trial's logdir, return the main metric's best."""
    from mlcomp.runner.callbacks.optuna import OptunaPruningCallback, trial_scope
    from mlcomp.runner.config import run_config

    def objective(trial) -> float:
        trial_config = resolve_trial_strings(config, trial)  # new mappings and lists throughout
        args = trial_config["args"] = dict(trial_config.get("args") or {})
        args["logdir"] = trial_logdir(trial.number, trial_config)
        if str(args["logdir"]).lower() != "none":
            trial.set_user_attr("logdir", args["logdir"])
        extra = {"_optuna_pruning": OptunaPruningCallback(trial)} if add_callback else None
        with trial_scope(trial):
            runner = run_config(trial_config, extra_callbacks=extra)
        if runner.main_metric not in runner.best_valid_metrics:
            raise ConfigError(f"main metric {runner.main_metric!r} has no best valid value; "
                              f"valid metrics: {sorted(runner.best_valid_metrics)}")
        return float(runner.best_valid_metrics[runner.main_metric])

    return objective


def tune_config(config: Mapping[str, Any], trial_logdir: Callable[[int, dict], str], *,
                on_trial_end: Callable[[Any, Any], None] | None = None):
    """Runs the study of ``config`` (a loaded config dict with ``study_params``) and returns it.

    Read from ``config["args"]`` and removed before the runs (:data:`TUNE_ARGS`): ``n_trials``
    and ``timeout`` (seconds; Optuna starts no trial after it; neither given runs until
    interrupted, as Optuna does), ``storage`` and ``study_name``; ``seed`` (default 42) seeds
    the sampler too. The other ``args`` go to every trial's run.

    Args:
        trial_logdir: the logdir of a trial from its number and resolved config (``"none"``
            writes nothing); stored as the trial's user attribute ``logdir``.
        on_trial_end: called with the study and each finished trial (an ``optuna.trial.FrozenTrial``).

    Raises:
        ConfigError: see :func:`create_study`; a trial's config is refused (its trial strings, or
            anything :func:`~mlcomp.runner.config.run_config` refuses); the study stops there.
        mlcomp.runner.RunStopped: a trial's run was stopped (SIGTERM).
    """
    config = copy.deepcopy(dict(config))
    study_params = config.pop("study_params", None) or {}
    args = config["args"] = dict(config.get("args") or {})
    tune = {key: args.pop(key) for key in TUNE_ARGS if key in args}
    study = create_study(study_params, minimize=bool(_last_training_stage(config).get("minimize_metric", True)),
                         seed=int(args.get("seed", 42)), storage=tune.get("storage"),
                         study_name=tune.get("study_name"))
    add_callback = bool(study_params.get("pruner_params")) and not _names_pruning_callback(config)
    study.optimize(_objective(config, trial_logdir, add_callback),
                   n_trials=tune.get("n_trials"), timeout=tune.get("timeout"),
                   callbacks=[on_trial_end] if on_trial_end else None)
    return study
