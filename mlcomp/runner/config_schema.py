"""The shape of a runner config (Catalyst 20.x's Config API): which keys each section may hold,
the stage defaults, and the structural checks.

A config has the top-level keys of :data:`TOP_LEVEL_KEYS`; ``model_params`` and ``stages`` are
required. Under ``stages``, the keys of :data:`STAGE_KEYS` are defaults deep-merged into every
named stage (the stage's own values win); every other key names a stage, run in file order
(a stage set to ``null`` is skipped); :func:`stages_config` gives the merged stages and
:func:`validate_config` checks the structure. Names (models, callbacks...) are checked by
:class:`mlcomp.runner.config_experiment.ConfigExperiment`, once the expdir's registrations ran.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Iterable, Mapping, Sequence

from mlcomp.configkit import RUNNER_ARGS_KEYS, RUNNER_CONFIG_KEYS, deep_merge
from mlcomp.errors import ConfigError

__all__ = [
    "TOP_LEVEL_KEYS",
    "REQUIRED_KEYS",
    "ARGS_KEYS",
    "RUNNER_KEYS",
    "STAGE_KEYS",
    "STAGE_PARAMS_KEYS",
    "STAGE_PARAMS_DEFAULTS",
    "LOADER_KEYS",
    "LOADER_SECTIONS",
    "EXPERIMENT_KEYS",
    "OPTIMIZER_OPTIONS",
    "AUTORESUME",
    "reject_unknown",
    "as_mapping",
    "stages_config",
    "validate_config",
]

TOP_LEVEL_KEYS = RUNNER_CONFIG_KEYS
"""The top-level keys of a config (:data:`mlcomp.configkit.RUNNER_CONFIG_KEYS`, where the override rules
read them)."""
REQUIRED_KEYS = ("model_params", "stages")
ARGS_KEYS = RUNNER_ARGS_KEYS
"""``args`` keys (Catalyst 20.x ``catalyst-dl run``'s; :data:`mlcomp.configkit.RUNNER_ARGS_KEYS`)."""
RUNNER_KEYS = ("runner", "input_key", "output_key", "input_target_key", "device")
STAGE_KEYS = ("data_params", "stage_params", "state_params", "criterion_params", "optimizer_params",
              "scheduler_params", "callbacks_params", "transform_params")
STAGE_PARAMS_KEYS = ("num_epochs", "main_metric", "minimize_metric", "valid_loader", "checkpoint_data")
STAGE_PARAMS_DEFAULTS = {"num_epochs": 1, "main_metric": "loss", "minimize_metric": True,
                         "valid_loader": "valid", "checkpoint_data": {}}
LOADER_KEYS = ("batch_size", "num_workers", "drop_last", "shuffle", "pin_memory", "per_gpu_scaling",
               "persistent_workers", "prefetch_factor")
"""``data_params`` keys that configure the ``DataLoader``; the other keys go to ``get_datasets``."""
LOADER_SECTIONS = ("loaders", "loaders_params", "samplers_params")
"""``data_params`` keys read by :meth:`mlcomp.runner.config_experiment.ConfigExperiment.get_loaders` itself, never given to
``get_datasets``: the per-loader dataset arguments and options, Catalyst's per-loader
``DataLoader`` options and the per-loader samplers."""
EXPERIMENT_KEYS = ("experiment",)
OPTIMIZER_OPTIONS = ("layerwise_params", "no_bias_weight_decay", "load_from_previous_stage",
                     "lr_linear_scaling", "optimizer_key", "_model")
AUTORESUME = ("last", "best")


def reject_unknown(keys: Iterable[str], allowed: Sequence[str], where: str) -> None:
    """Raises for the first of ``keys`` not in ``allowed``: ``"{where}{key}: unknown key (did you mean
    ...?); allowed: ..."``.

    Raises:
        ConfigError: a key is not allowed.
    """
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}{key}: unknown key{hint}; allowed: {', '.join(allowed)}")


def as_mapping(value, where: str, allow_none: bool = True) -> dict:
    """``value`` as a new dict (``None`` → ``{}`` when ``allow_none``).

    Raises:
        ConfigError: ``value`` is not a mapping; the message names ``where``.
    """
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _normalize_stage(section: Mapping, where: str) -> dict:
    """A stage (or the stage defaults) with ``state_params`` folded into ``stage_params``."""
    section = {k: v for k, v in section.items()}
    if "state_params" in section:
        state = as_mapping(section.pop("state_params"), f"{where}state_params")
        section["stage_params"] = deep_merge(state, as_mapping(section.get("stage_params"), f"{where}stage_params"))
    for key in STAGE_KEYS:
        if key in section:
            section[key] = as_mapping(section[key], f"{where}{key}")
    return section


def stages_config(config: Mapping) -> "OrderedDict[str, dict]":
    """The named stages with the stage-level defaults deep-merged in (a stage's keys win).

    Raises:
        ConfigError: ``stages`` is not a mapping or has no stage, or a stage has an unknown key.
    """
    stages = as_mapping(config.get("stages"), "stages", allow_none=False)
    defaults = _normalize_stage({k: v for k, v in stages.items() if k in STAGE_KEYS}, "stages.")
    result: "OrderedDict[str, dict]" = OrderedDict()
    for name, section in stages.items():
        if name in STAGE_KEYS or section is None:
            continue
        where = f"stages.{name}."
        section = as_mapping(section, f"stages.{name}", allow_none=False)
        reject_unknown(section, STAGE_KEYS, where)
        section = _normalize_stage(section, where)
        result[str(name)] = {key: deep_merge(defaults.get(key, {}), section.get(key, {})) for key in STAGE_KEYS
                             if key != "state_params"}
    if not result:
        raise ConfigError("stages: no stage defined; add a named stage, e.g. stages: {train: {stage_params: "
                          "{num_epochs: 1}}}")
    return result


def validate_config(config: Mapping) -> None:
    """Checks the structure of a config: required and unknown keys, the type of each section,
    ``args`` keys and values, ``runner_params`` keys, and ``stage_params`` keys of every stage.
    Names (models, callbacks...) are checked by :class:`ConfigExperiment`, once the expdir's
    registrations ran.

    Raises:
        ConfigError: the first problem found, naming the key path and what is allowed.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(config).__name__}")
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ConfigError(f"config: missing required key {key!r} (top-level keys: {', '.join(TOP_LEVEL_KEYS)})")
    if "study_params" in config:
        raise ConfigError("study_params: a `catalyst-dl tune` config; run it with `mlcomp tune --config …`")
    reject_unknown(config, TOP_LEVEL_KEYS, "")
    args = as_mapping(config.get("args"), "args")
    reject_unknown(args, ARGS_KEYS, "args.")
    if args.get("autoresume") not in (None, *AUTORESUME):
        raise ConfigError(f"args.autoresume: {args['autoresume']!r}; allowed: {', '.join(AUTORESUME)}")
    if "seed" in args and not isinstance(args["seed"], int):
        raise ConfigError(f"args.seed: {args['seed']!r} is not an int")
    reject_unknown(as_mapping(config.get("runner_params"), "runner_params"), RUNNER_KEYS, "runner_params.")
    as_mapping(config.get("distributed_params"), "distributed_params")
    reject_unknown(as_mapping(config.get("experiment_params"), "experiment_params"), EXPERIMENT_KEYS, "experiment_params.")
    as_mapping(config.get("model_params"), "model_params", allow_none=False)
    for name, stage in stages_config(config).items():
        params = stage["stage_params"]
        reject_unknown(params, STAGE_PARAMS_KEYS, f"stages.{name}.stage_params.")
        epochs = params.get("num_epochs", 1)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"stages.{name}.stage_params.num_epochs: {epochs!r} is not a positive int")
        for key, value in stage["callbacks_params"].items():
            as_mapping(value, f"stages.{name}.callbacks_params.{key}", allow_none=False)

