"""The config API (Catalyst 20.x): YAML configs → a validated dict → a :class:`ConfigExperiment`
→ a run.

A config has the top-level keys of :data:`TOP_LEVEL_KEYS`; ``model_params`` and ``stages`` are
required. Under ``stages``, the keys of :data:`STAGE_KEYS` are defaults deep-merged into every
named stage (the stage's own values win); every other key names a stage, run in file order
(a stage set to ``null`` is skipped)::

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

Several files are deep-merged in order (:func:`load_config`); overrides (``--a.b.c=value``, or
Catalyst's typed ``--a/b/c=value:int``, read by :func:`parse_overrides`) are set with
:func:`set_by_path`, which also takes a unique key suffix (``lr``); merging, setting and
``${VAR}`` expansion follow :mod:`mlcomp.configkit`, as the DAG spec and grid cells do. :func:`run_config` runs
a config dict end to end and is what ``mlcomp run`` and the train executor call.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mlcomp.configkit import PathError, deep_merge, expand_env, key_paths, set_path, split_path
from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.runner.augmentor import per_key
from mlcomp.runner.check import check_rule
from mlcomp.runner.checkpoint import resume_checkpoint
from mlcomp.runner.experiment import Experiment
from mlcomp.runner.simple import callbacks_by_name
from mlcomp.runner.weights import LoadWeightsCallback, is_full_checkpoint

__all__ = [
    "TOP_LEVEL_KEYS",
    "ARGS_KEYS",
    "STAGE_KEYS",
    "STAGE_PARAMS_KEYS",
    "LOADER_KEYS",
    "ConfigExperiment",
    "stages_config",
    "deep_merge",
    "expand_env",
    "load_config",
    "save_config",
    "parse_overrides",
    "OVERRIDE_TYPES",
    "set_by_path",
    "validate_config",
    "make_experiment",
    "make_runner",
    "run_config",
]

TOP_LEVEL_KEYS = ("model_params", "args", "runner_params", "distributed_params", "experiment_params", "stages")
REQUIRED_KEYS = ("model_params", "stages")
ARGS_KEYS = ("expdir", "logdir", "baselogdir", "seed", "verbose", "check", "overfit", "timeit",
             "resume", "autoresume", "deterministic", "benchmark", "out_dir", "out_prefix")
"""``args`` keys (Catalyst 20.x ``catalyst-dl run``'s): ``baselogdir`` gives a logdir under it when
there is none (see :func:`mlcomp.cli.catalyst.derived_logdir`); ``out_dir``/``out_prefix`` say where
an ``InferCallback`` writes its ``.npy`` files, as Catalyst's run state handed them to it."""
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
"""``data_params`` keys read by :meth:`ConfigExperiment.get_loaders` itself, never given to
``get_datasets``: the per-loader dataset arguments and options, Catalyst's per-loader
``DataLoader`` options and the per-loader samplers."""
EXPERIMENT_KEYS = ("experiment",)
OPTIMIZER_OPTIONS = ("layerwise_params", "no_bias_weight_decay", "load_from_previous_stage",
                     "lr_linear_scaling", "optimizer_key", "_model")
AUTORESUME = ("last", "best")
FOLDER_ARGS = ("expdir", "out_dir")
"""``args`` keys that :func:`load_config` makes absolute against the working folder."""


# ---------------------------------------------------------------------------------------------
# dict helpers


def set_by_path(config: dict, key: str, value: Any) -> str:
    """Sets ``value`` in ``config`` (in place) at ``key`` and returns the full dotted path used.

    ``key`` is, in this order:

    - a ``/``-separated path from the root (``stages/state_params/num_epochs``, Catalyst 20.x's
      ``catalyst-dl run`` form): set there, missing mappings created, as Catalyst's
      ``parse_config_args`` did;
    - a dotted path from the root (``stages.main.optimizer_params.lr``) when its first part is a
      top-level key, set by :func:`mlcomp.configkit.set_path` (missing mappings created, a
      mapping deep-merged into a mapping);
    - otherwise a suffix of exactly one existing path (``lr``, ``main.optimizer_params.lr``), as a
      grid search cell uses it; a single name that matches no path but is an ``args`` key
      (:data:`ARGS_KEYS`, e.g. ``out_dir``) is set under ``args``.

    Raises:
        ConfigError: the suffix matches no path (close matches are listed) or several (all of
            them are listed), or a part of the path is not a mapping.
    """
    matches = []
    try:
        if "/" in key:
            return ".".join(set_path(config, tuple(key.strip("/").split("/")), value))
        parts = split_path(key)
        if parts[0] in config or parts[0] in TOP_LEVEL_KEYS:
            return ".".join(set_path(config, parts, value))
        matches = [p for p in key_paths(config) if p[-len(parts):] == parts]
        if len(matches) == 1:
            return ".".join(set_path(config, matches[0], value))
        if not matches and len(parts) == 1 and key in ARGS_KEYS:
            return ".".join(set_path(config, ("args", key), value))
    except PathError as e:
        raise ConfigError(f"override {key!r}: {e}") from None
    if matches:
        listed = ", ".join(".".join(p) for p in matches)
        raise ConfigError(f"override {key!r} is ambiguous: it matches {listed}; give a longer dotted path")
    every = [".".join(p) for p in key_paths(config)]
    close = difflib.get_close_matches(key, every, n=5, cutoff=0.5) or \
        difflib.get_close_matches(parts[-1], sorted({p[-1] for p in key_paths(config)}), n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else f"; top-level keys: {', '.join(TOP_LEVEL_KEYS)}"
    raise ConfigError(f"override {key!r} matches no key of the config{hint}")


OVERRIDE_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple, "dict": dict}
"""Type suffixes of Catalyst 20.x's typed overrides (``--key=value:int``) and their constructors."""
_TYPED = re.compile(rf"(?s)(.*):({'|'.join(OVERRIDE_TYPES)})")


def parse_overrides(tokens: Sequence[str]) -> list[tuple[str, Any]]:
    """``--key=value`` command-line tokens → ``(key, value)`` pairs for :func:`set_by_path`.

    Two forms are read (a token may also be ``--key value``):

    - **typed**, Catalyst 20.x's ``catalyst-dl run`` form (``parse_config_args`` of 20.02–20.12):
      a value ending in ``:int``, ``:float``, ``:bool``, ``:str``, ``:list``, ``:tuple`` or
      ``:dict``. The text before the suffix is a Python literal given to that type
      (``1e-3:float``, ``[1, 2]:list``, ``True:bool``; empty → the type's empty value), or, for
      ``str``, the text itself (``none`` → None in a ``/`` path, as in Catalyst). As in Catalyst,
      a key without ``/`` names an ``args`` key (``--out_dir=logs:str`` → ``args/out_dir``);
      Catalyst evaluated the text with ``eval``, this reads literals only.
    - **untyped**, mlcomp's: the value is a YAML scalar (``5`` → int, ``true`` → bool, ``null``
      → None, ``[1, 2]`` → list) and the key a dotted path, ``/`` path or unique key suffix.

    Raises:
        ConfigError: a token is not ``--key=value`` or ``--key value``, a value is bad YAML, or
            a typed value is not a literal of its type.
    """
    pairs, rest = [], list(tokens)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--") or len(token) < 3:
            raise ConfigError(f"override {token!r}: expected --dotted.key=value or --a/b/c=value:type")
        key, eq, text = token[2:].partition("=")
        if not eq:
            if not rest or rest[0].startswith("--"):
                raise ConfigError(f"override --{key}: no value (use --{key}=VALUE)")
            text = rest.pop(0)
        pairs.append(_override(key, text))
    return pairs


def _override(key: str, text: str) -> tuple[str, Any]:
    """One ``--key=text`` token as a ``(key, value)`` pair (see :func:`parse_overrides`)."""
    from mlcomp.yamlfile import parse_yaml

    typed = _TYPED.fullmatch(text)
    if typed is None:
        return key, parse_yaml(text, f"override --{key}", ConfigError).data if text else ""
    content, kind = typed.groups()
    path = "/" in key
    key = key if path else f"args/{key}"
    if kind == "str":
        return key, None if path and content.lower() == "none" else content
    return key, _typed_value(key, content, kind)


def _typed_value(key: str, content: str, kind: str) -> Any:
    """``content`` read as a Python literal and converted by ``kind`` (Catalyst's ``kind(content)``)."""
    import ast

    try:
        return OVERRIDE_TYPES[kind](*([ast.literal_eval(content)] if content.strip() else []))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ConfigError(f"override --{key}: {content!r} is not a Python literal of type {kind} ({e}); "
                          f"e.g. 3:int, 1e-3:float, True:bool, [1, 2]:list, {{'a': 1}}:dict") from None


# ---------------------------------------------------------------------------------------------
# files


def _read_yaml(path: Path) -> dict:
    from mlcomp.yamlfile import read_yaml

    if not path.is_file():
        raise ConfigError(f"config {path}: no such file")
    data = read_yaml(path, ConfigError, "config").data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(*paths: str | os.PathLike, overrides: Sequence[tuple[str, Any]] = (),
                base: str | os.PathLike | None = None) -> dict:
    """Reads YAML configs, deep-merges them in order and applies ``overrides`` (key, value pairs,
    see :func:`set_by_path`). A relative ``args.expdir`` or ``args.out_dir`` (from a file or an
    override) is made absolute against ``base``, by default the working folder, as Catalyst's
    ``catalyst-dl run`` takes them (a DAG's train task passes its expdir, the folder MLComp runs
    the task in).

    Raises:
        ConfigError: no path, a missing file, a YAML syntax error (file, line and column), a
            top level that is not a mapping, or a bad override.
    """
    if not paths:
        raise ConfigError("no config file given")
    config: dict = {}
    for path in map(Path, paths):
        config = deep_merge(config, _read_yaml(path))
    for key, value in overrides:
        set_by_path(config, key, value)
    args = config.get("args") if isinstance(config.get("args"), dict) else {}
    for key in FOLDER_ARGS:
        if isinstance(args.get(key), (str, Path)) and not os.path.isabs(args[key]):
            args[key] = str((Path(base or os.getcwd()) / args[key]).resolve())
    return config


def save_config(config: Mapping, path: str | os.PathLike) -> Path:
    """Writes ``config`` as YAML (keys in their order) to ``path``, creating its folder."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_plain(config), sort_keys=False), encoding="utf-8")
    return path


def _plain(node):
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, Path):
        return str(node)
    return node


# ---------------------------------------------------------------------------------------------
# validation


def _unknown(keys: Iterable[str], allowed: Sequence[str], where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}{key}: unknown key{hint}; allowed: {', '.join(allowed)}")


def _mapping(value, where: str, allow_none: bool = True) -> dict:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _normalize_stage(section: Mapping, where: str) -> dict:
    """A stage (or the stage defaults) with ``state_params`` folded into ``stage_params``."""
    section = {k: v for k, v in section.items()}
    if "state_params" in section:
        state = _mapping(section.pop("state_params"), f"{where}state_params")
        section["stage_params"] = deep_merge(state, _mapping(section.get("stage_params"), f"{where}stage_params"))
    for key in STAGE_KEYS:
        if key in section:
            section[key] = _mapping(section[key], f"{where}{key}")
    return section


def stages_config(config: Mapping) -> "OrderedDict[str, dict]":
    """The named stages with the stage-level defaults deep-merged in (a stage's keys win).

    Raises:
        ConfigError: ``stages`` is not a mapping or has no stage, or a stage has an unknown key.
    """
    stages = _mapping(config.get("stages"), "stages", allow_none=False)
    defaults = _normalize_stage({k: v for k, v in stages.items() if k in STAGE_KEYS}, "stages.")
    result: "OrderedDict[str, dict]" = OrderedDict()
    for name, section in stages.items():
        if name in STAGE_KEYS or section is None:
            continue
        where = f"stages.{name}."
        section = _mapping(section, f"stages.{name}", allow_none=False)
        _unknown(section, STAGE_KEYS, where)
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
    _unknown(config, TOP_LEVEL_KEYS, "")
    args = _mapping(config.get("args"), "args")
    _unknown(args, ARGS_KEYS, "args.")
    if args.get("autoresume") not in (None, *AUTORESUME):
        raise ConfigError(f"args.autoresume: {args['autoresume']!r}; allowed: {', '.join(AUTORESUME)}")
    if "seed" in args and not isinstance(args["seed"], int):
        raise ConfigError(f"args.seed: {args['seed']!r} is not an int")
    _unknown(_mapping(config.get("runner_params"), "runner_params"), RUNNER_KEYS, "runner_params.")
    _mapping(config.get("distributed_params"), "distributed_params")
    _unknown(_mapping(config.get("experiment_params"), "experiment_params"), EXPERIMENT_KEYS, "experiment_params.")
    _mapping(config.get("model_params"), "model_params", allow_none=False)
    for name, stage in stages_config(config).items():
        params = stage["stage_params"]
        _unknown(params, STAGE_PARAMS_KEYS, f"stages.{name}.stage_params.")
        epochs = params.get("num_epochs", 1)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"stages.{name}.stage_params.num_epochs: {epochs!r} is not a positive int")
        for key, value in stage["callbacks_params"].items():
            _mapping(value, f"stages.{name}.callbacks_params.{key}", allow_none=False)


# ---------------------------------------------------------------------------------------------
# the experiment


def _is_key_value(params: Mapping, name_key: str) -> bool:
    """Whether ``params`` is a mapping of several named components (Catalyst's ``_key_value``)."""
    if params.get("_key_value"):
        return True
    return bool(params) and name_key not in params and all(
        isinstance(v, Mapping) and name_key in v for v in params.values())


class ConfigExperiment(Experiment):
    """An experiment built from a config dict (Catalyst 20.x ``ConfigExperiment``).

    Construction is cheap: it validates the config, imports the expdir (idempotent) so that its
    registered names resolve, and checks every name and keyword against the registries; models,
    datasets and loaders are built only when asked for, so ``get_model(stage)`` and
    ``get_loaders(stage)`` are usable alone (e.g. to trace a model).

    The model is built once and shared by all stages, so weights carry from stage to stage.

    Subclass it in an expdir and override :meth:`get_datasets` (and any ``get_*``) to load your
    own data; export the subclass as ``Experiment`` from the expdir's ``__init__.py``.

    Args:
        config: a config dict (see the module docstring); it is deep-copied.

    Attributes:
        extra_callbacks: callbacks by name added to every stage after the configured ones (e.g.
            the train executor's reporter); set them before the run starts.

    Raises:
        ConfigError: see :func:`validate_config`; an unknown model, criterion, optimizer,
            scheduler, callback or dataset name, or a keyword its factory does not take; a
            stage whose loaders (when the config lists them) lack its ``valid_loader``.
    """

    def __init__(self, config: Mapping[str, Any]):
        validate_config(config)
        self._config = copy.deepcopy(dict(config))
        self._args = dict(self._config.get("args") or {})
        self.stages_config = stages_config(self._config)
        self.extra_callbacks: "OrderedDict[str, Any]" = OrderedDict()
        self._model = None
        self._optimizers: dict[str, Any] = {}
        expdir = self._args.get("expdir")
        if expdir:
            from mlcomp.runner.expdir import import_expdir

            import_expdir(expdir)
        self._check_names()

    # -- properties ---------------------------------------------------------------------------

    @property
    def config(self) -> dict:
        """The config this experiment was built from (a private deep copy; do not mutate)."""
        return self._config

    @property
    def initial_seed(self) -> int:
        """``args.seed`` (default 42)."""
        return int(self._args.get("seed", 42))

    @property
    def logdir(self) -> str | None:
        """``args.logdir``; ``None`` (or the string ``"none"``) writes nothing."""
        logdir = self._args.get("logdir")
        if logdir is None or str(logdir).lower() == "none":
            return None
        return str(logdir)

    @property
    def stages(self) -> list[str]:
        """Names of the stages in config order."""
        return list(self.stages_config)

    @property
    def hparams(self) -> dict:
        """The whole config; checkpoints store it and ``logdir/config.yml`` is written from it."""
        return self._config

    @property
    def distributed_params(self) -> dict:
        """``distributed_params`` of the config."""
        return dict(self._config.get("distributed_params") or {})

    @property
    def runner_params(self) -> dict:
        """``runner_params`` of the config without the ``runner`` name: keyword arguments of the
        runner's constructor (``input_key``, ``output_key``, ``input_target_key``, ``device``)."""
        return {k: v for k, v in (self._config.get("runner_params") or {}).items() if k != "runner"}

    # -- validation ---------------------------------------------------------------------------

    def _check_names(self) -> None:
        model_params = self._config["model_params"]
        if _is_key_value(model_params, "model"):
            for key, params in model_params.items():
                if key != "_key_value":
                    registry.Model.check_params(_mapping(params, f"model_params.{key}"), "model",
                                                f"model_params.{key}")
        else:
            registry.Model.check_params(model_params, "model", "model_params")
        for stage, section in self.stages_config.items():
            where = f"stages.{stage}."
            if section["criterion_params"]:
                registry.Criterion.check_params(section["criterion_params"], "criterion", where + "criterion_params")
            optimizer = {k: v for k, v in section["optimizer_params"].items() if k not in OPTIMIZER_OPTIONS}
            if optimizer:
                registry.Optimizer.check_params(optimizer, "optimizer", where + "optimizer_params", "params")
            if section["scheduler_params"]:
                registry.Scheduler.check_params(section["scheduler_params"], "scheduler", where + "scheduler_params",
                                                "optimizer")
            for name, params in section["callbacks_params"].items():
                registry.Callback.check_params(params, "callback", f"{where}callbacks_params.{name}")
            self._check_data(stage, section["data_params"])
            _build_transform(section["transform_params"], where + "transform_params", check=True)

    def _check_data(self, stage: str, data: Mapping) -> None:
        where = f"stages.{stage}.data_params"
        loaders = _mapping(data.get("loaders"), f"{where}.loaders")
        for name, options in loaders.items():
            _mapping(options, f"{where}.loaders.{name}")
        for name, options in _mapping(data.get("loaders_params"), f"{where}.loaders_params").items():
            _unknown(_mapping(options, f"{where}.loaders_params.{name}"), LOADER_KEYS, f"{where}.loaders_params.{name}.")
        for name, params in _mapping(data.get("samplers_params"), f"{where}.samplers_params").items():
            registry.Sampler.check_params(params, "sampler", f"{where}.samplers_params.{name}")
        if "dataset" in data and type(self).get_datasets is ConfigExperiment.get_datasets:
            registry.Dataset.get(data["dataset"], f"{where}.dataset")
            if not loaders:
                raise ConfigError(f"{where}.loaders: missing; name the loaders and their dataset arguments, "
                                  "e.g. loaders: {train: {split: train}, valid: {split: valid}}")
        valid = self.get_stage_params(stage)["valid_loader"]
        static = type(self).get_datasets is ConfigExperiment.get_datasets  # loaders known before running
        if static and loaders and not stage.startswith("infer") and valid not in loaders:
            raise ConfigError(f"stages.{stage}: no valid loader {valid!r} (stage_params.valid_loader) among the "
                              f"loaders {', '.join(map(str, loaders))}; add it to data_params.loaders or set "
                              "stage_params.valid_loader")

    # -- stage parts --------------------------------------------------------------------------

    def get_stage_params(self, stage: str) -> dict:
        """``stage_params`` of ``stage`` with Catalyst's defaults filled in (``num_epochs`` 1,
        ``main_metric`` "loss", ``minimize_metric`` True, ``valid_loader`` "valid",
        ``checkpoint_data`` {})."""
        return {**copy.deepcopy(STAGE_PARAMS_DEFAULTS), **copy.deepcopy(self.stages_config[stage]["stage_params"])}

    def _build_model(self, params: Mapping, where: str):
        import torch

        if _is_key_value(params, "model"):
            return torch.nn.ModuleDict({key: self._build_model(value, f"{where}.{key}")
                                        for key, value in params.items() if key != "_key_value"})
        return registry.Model.create_from_params(params, "model", where)

    def get_model(self, stage: str):
        """The model (built on the first call from ``model_params``, then the same object for
        every stage), passed through :meth:`_preprocess_model_for_stage` and
        :meth:`_postprocess_model_for_stage`. ``model_params`` may also map names to several
        models' params: a ``torch.nn.ModuleDict``."""
        if self._model is None:
            self._model = self._build_model(self._config["model_params"], "model_params")
        self._model = self._postprocess_model_for_stage(stage, self._preprocess_model_for_stage(stage, self._model))
        return self._model

    def _preprocess_model_for_stage(self, stage: str, model):
        """Catalyst 20.x's hook, called with the model before each stage; returns the model to use."""
        return model

    def _postprocess_model_for_stage(self, stage: str, model):
        """Catalyst 20.x's hook after :meth:`_preprocess_model_for_stage`: override it to change
        the model per stage (e.g. freeze an encoder with ``requires_grad_(False)``; the stage's
        optimizer then gets only the trainable parameters)."""
        return model

    def get_criterion(self, stage: str):
        """The loss of ``stage`` from ``criterion_params`` (``criterion: Name`` plus keyword
        arguments), a dict of them (``_key_value``), or ``None`` when not configured."""
        params = self.stages_config[stage]["criterion_params"]
        where = f"stages.{stage}.criterion_params"
        if not params:
            return None
        if _is_key_value(params, "criterion"):
            return {key: registry.Criterion.create_from_params(value, "criterion", f"{where}.{key}")
                    for key, value in params.items() if key != "_key_value"}
        return registry.Criterion.create_from_params(params, "criterion", where)

    def get_optimizer(self, stage: str, model):
        """The optimizer of ``stage`` over ``model``'s trainable parameters, or ``None``.

        ``optimizer_params``: ``optimizer: Name`` and its keyword arguments, plus
        ``layerwise_params`` (``{regex: {lr: ..., weight_decay: ...}}`` applied to the parameters
        whose names match, later patterns winning), ``no_bias_weight_decay`` (default True:
        biases get ``weight_decay: 0``), ``lr_linear_scaling`` (``{lr, base_batch_size}``: lr
        scaled by batch_size / base_batch_size, Goyal et al. 2017), ``_model`` (the key of a
        model in a ``ModuleDict``) and ``load_from_previous_stage`` (carry the optimizer state,
        e.g. Adam's moments, from the previous stage's optimizer, keeping this stage's
        hyperparameters).

        Raises:
            ConfigError: the previous stage's optimizer state does not fit this optimizer.
        """
        params = dict(self.stages_config[stage]["optimizer_params"])
        where = f"stages.{stage}.optimizer_params"
        load_previous = params.pop("load_from_previous_stage", False)
        layerwise = _mapping(params.pop("layerwise_params", None), f"{where}.layerwise_params")
        no_bias_decay = params.pop("no_bias_weight_decay", True)
        scaling = params.pop("lr_linear_scaling", None)
        model_key = params.pop("_model", None)
        params.pop("optimizer_key", None)
        if "optimizer" not in params:
            return None
        if scaling:
            batch_size = self._loader_options(stage)["batch_size"]
            params["lr"] = scaling["lr"] * batch_size / scaling.get("base_batch_size", 256)
        module = model if model_key is None else model[model_key]
        groups = _param_groups(module, layerwise, no_bias_decay)
        optimizer = registry.Optimizer.create_from_params(params, "optimizer", where, groups)
        index = self.stages.index(stage)
        previous = self._optimizers.get(self.stages[index - 1]) if index > 0 else None
        if load_previous and previous is not None:
            _load_optimizer_state(optimizer, previous, where)
        self._optimizers[stage] = optimizer
        return optimizer

    def get_scheduler(self, stage: str, optimizer):
        """The LR scheduler of ``stage`` (``scheduler: Name`` plus keyword arguments), or
        ``None`` when not configured or when there is no optimizer."""
        params = self.stages_config[stage]["scheduler_params"]
        if not params or optimizer is None:
            return None
        return registry.Scheduler.create_from_params(params, "scheduler", f"stages.{stage}.scheduler_params",
                                                     optimizer)

    def get_callbacks(self, stage: str) -> "OrderedDict[str, Any]":
        """The callbacks of ``stage`` by name, from ``callbacks_params`` (``{name: {callback:
        ClassName, **kwargs}}``, in config order), then :attr:`extra_callbacks`. Default
        callbacks (criterion, optimizer, scheduler, checkpoints, loggers) are the runner's, except
        that a stage after the first starts from the best model (:func:`_start_from_best`)."""
        callbacks: "OrderedDict[str, Any]" = OrderedDict()
        for name, params in self.stages_config[stage]["callbacks_params"].items():
            callbacks[name] = registry.Callback.create_from_params(
                params, "callback", f"stages.{stage}.callbacks_params.{name}")
        callbacks.update(self.extra_callbacks)
        if self.stages.index(stage) > 0 and self.logdir:
            _start_from_best(callbacks, add=not stage.startswith("infer"))
        return callbacks

    def get_data_params(self, stage: str) -> dict:
        """``data_params`` of ``stage`` (a deep copy)."""
        return copy.deepcopy(self.stages_config[stage]["data_params"])

    def get_transforms(self, stage: str | None = None, dataset: str | None = None):
        """The transform of ``dataset`` in ``stage`` (Catalyst 20.x's hook, for datasets built in
        an expdir's ``get_datasets``): a function from a sample dict to a sample dict, calling the
        transform with the dict's items as keyword arguments (as albumentations takes
        ``image=..., mask=...``); the identity when nothing is configured.

        ``stages.<stage>.transform_params`` is ``{transform: Name, **kwargs}``, where a
        ``transforms`` list holds nested transforms (``A.Compose``), or, with ``_key_value:
        true``, one such mapping per dataset name. Names come from the ``Transform`` registry:
        Catalyst's ``catalyst.ImageToTensor``-style transforms (:mod:`mlcomp.runner.transforms`)
        and albumentations' (``Name``, ``A.Name``, ``albu.Name``, ``albumentations.Name``, when
        installed).

        Raises:
            ConfigError: an unknown transform or arguments it does not take.
        """
        stage = stage or self.stages[0]
        params = copy.deepcopy(self.stages_config[stage]["transform_params"])
        where = f"stages.{stage}.transform_params"
        if params.pop("_key_value", False):
            params, where = _mapping(params.get(dataset), f"{where}.{dataset}"), f"{where}.{dataset}"
        transform = _build_transform(params, where)
        if transform is None:
            return lambda sample: sample
        return lambda sample: transform(**sample)

    def get_datasets(self, stage: str, epoch: int | None = None, **data_params) -> "OrderedDict[str, Any]":
        """The datasets of ``stage`` by loader name (Catalyst 20.x's hook; override it in an
        expdir's ``Experiment`` to load your own data).

        Args:
            stage: the stage name.
            epoch: the epoch the loaders are for, or ``None`` (datasets that change per epoch).
            **data_params: ``data_params`` without the loader options (:data:`LOADER_KEYS`) and
                without ``loaders``: the dataset arguments.

        This default builds, for each loader in ``data_params.loaders``, the registered dataset
        ``data_params.dataset`` (or the loader's own ``dataset``) with the stage's dataset
        arguments updated by the loader's (its keys that are not loader options).

        Returns:
            ``{loader name: Dataset}``; a value may also be ``{"dataset": ..., "sampler": ...,
            "collate_fn": ...}`` (extra ``DataLoader`` arguments) or a ready iterable.

        Raises:
            ConfigError: no ``dataset`` is named, or the dataset rejects its arguments.
        """
        where = f"stages.{stage}.data_params"
        loaders = self.stages_config[stage]["data_params"].get("loaders") or {}
        datasets: "OrderedDict[str, Any]" = OrderedDict()
        for name, options in loaders.items():
            own = {k: v for k, v in (options or {}).items() if k not in LOADER_KEYS}
            kwargs = {**data_params, **own}
            if "dataset" not in kwargs:
                raise ConfigError(f"{where}: no 'dataset' for loader {name!r}; name a registered dataset "
                                  f"({', '.join(registry.Dataset.names())}) or override get_datasets in the "
                                  "expdir's Experiment")
            dataset = kwargs.pop("dataset")
            datasets[name] = registry.Dataset.create(dataset, f"{where}.dataset", **kwargs)
        return datasets

    def _loader_options(self, stage: str, loader: str | None = None) -> dict:
        data = self.stages_config[stage]["data_params"]
        options = {key: data[key] for key in LOADER_KEYS if key in data}
        if loader is not None:
            options.update((data.get("loaders_params") or {}).get(loader) or {})
            own = (data.get("loaders") or {}).get(loader) or {}
            options.update({key: own[key] for key in LOADER_KEYS if key in own})
        options.setdefault("batch_size", 1)
        options.setdefault("num_workers", 0)
        if options.pop("per_gpu_scaling", False) and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            import torch

            gpus = max(1, torch.cuda.device_count())
            options["batch_size"] *= gpus
            options["num_workers"] *= gpus
        return options

    def _sampler(self, stage: str, name: str, dataset, params: Mapping):
        where = f"stages.{stage}.data_params.samplers_params.{name}"
        factory = registry.Sampler.check_params(params, "sampler", where)
        kwargs = {k: v for k, v in params.items() if k != "sampler"}
        accepted = inspect.signature(factory).parameters
        if "data_len" in accepted and "data_len" not in kwargs:
            kwargs["data_len"] = len(dataset)
        if "labels" in accepted and "labels" not in kwargs:
            target = (self._config.get("runner_params") or {}).get("input_target_key", "targets")
            try:
                kwargs["labels"] = _labels(dataset, target)
            except (KeyError, TypeError, IndexError) as e:
                raise ConfigError(f"{where}: no labels given and none found in the dataset (its 'targets' "
                                  f"attribute or each sample's {target!r}: {e}); give labels: [...]") from None
        try:
            return registry.Sampler.create(params["sampler"], where, **kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def get_loaders(self, stage: str, epoch: int | None = None) -> "OrderedDict[str, Any]":
        """The loaders of ``stage`` by name, in the order :meth:`get_datasets` returns them.

        Loader options (:data:`LOADER_KEYS`) come from ``data_params``, overridden per loader by
        Catalyst's ``data_params.loaders_params.<name>``, then by ``data_params.loaders.<name>``;
        ``shuffle`` defaults to True for ``train*`` loaders without a sampler.
        ``data_params.samplers_params.<name>`` (``{sampler: Name, **kwargs}``, a registered
        sampler) gives a loader its sampler; a sampler's ``data_len`` and ``labels`` arguments
        default to the dataset's length and labels (:func:`_labels`).
        ``per_gpu_scaling`` multiplies batch size and workers by the number of GPUs when not
        distributed (Catalyst 20.x).

        Raises:
            ConfigError: ``loaders``, ``loaders_params`` or ``samplers_params`` name a loader
                ``get_datasets`` did not return; a sampler that cannot be built.
        """
        from torch.utils.data import DataLoader, Dataset

        data = self.get_data_params(stage)
        sections = {key: data.pop(key, None) or {} for key in LOADER_SECTIONS}
        for key in LOADER_KEYS:
            data.pop(key, None)
        datasets = self.get_datasets(stage, epoch=epoch, **data)
        for key, section in sections.items():
            missing = [name for name in section if name not in datasets]
            if missing:
                raise ConfigError(f"stages.{stage}.data_params.{key}: no dataset for {missing}; "
                                  f"get_datasets returned {list(datasets)}")
        loaders: "OrderedDict[str, Any]" = OrderedDict()
        for name, dataset in datasets.items():
            extra = {}
            if isinstance(dataset, Mapping):
                extra = {k: v for k, v in dataset.items() if k != "dataset"}
                dataset = dataset["dataset"]
            if not isinstance(dataset, Dataset):  # a ready loader or any iterable of batches
                loaders[name] = dataset
                continue
            options = {**self._loader_options(stage, name), **extra}
            if name in sections["samplers_params"]:
                options["sampler"] = self._sampler(stage, name, dataset, sections["samplers_params"][name])
            options.setdefault("shuffle", name.startswith("train") and "sampler" not in options)
            if options["num_workers"] == 0:
                options.pop("persistent_workers", None)
                options.pop("prefetch_factor", None)
            loaders[name] = DataLoader(dataset, **options)
        return loaders


def _start_from_best(callbacks: "OrderedDict[str, Any]", add: bool) -> None:
    """Makes a stage after the first start from ``checkpoints/best.pth``'s model, as Catalyst's
    Config API did (20.02–20.05 in ``_preprocess_model_for_stage``, 20.06–20.12 in
    ``_process_callbacks``): a CheckpointCallback without ``load_on_stage_start`` gets
    ``"best"``, one whose ``load_on_stage_start`` maps parts but not the model gets ``model:
    best``, and without a CheckpointCallback the stage gets one that loads ``"best"`` when ``add``
    (not for an ``infer*`` stage, which Catalyst gave no default saver)."""
    from mlcomp.runner.callbacks import CheckpointCallback

    savers = [callback for callback in callbacks.values() if isinstance(callback, CheckpointCallback)]
    if not savers and add:
        callbacks["_saver"] = CheckpointCallback(load_on_stage_start="best")
    for saver in savers:
        if saver.load_on_stage_start is None:
            saver.load_on_stage_start = "best"
        elif isinstance(saver.load_on_stage_start, Mapping) and "model" not in saver.load_on_stage_start:
            saver.load_on_stage_start = {**saver.load_on_stage_start, "model": "best"}


def _build_transform(params: Mapping, where: str, check: bool = False):
    """The transform ``params`` describe (nested ``transforms`` built first; ``_key_value``: one
    per sample key, :func:`mlcomp.runner.augmentor.per_key`), or None when empty; with
    ``check``, only checks names and arguments (a ``_key_value`` mapping per dataset included)
    and returns None."""
    params = dict(params)
    if params.pop("_key_value", False):
        built = {key: _build_transform(_mapping(value, f"{where}.{key}"), f"{where}.{key}", check)
                 for key, value in params.items()}
        return None if check else per_key({key: value for key, value in built.items() if value is not None})
    if not params:
        return None
    if "transforms" in params:
        nested = params["transforms"]
        if not isinstance(nested, list):
            raise ConfigError(f"{where}.transforms: expected a list of transforms, got {nested!r}")
        params["transforms"] = [_build_transform(_mapping(item, f"{where}.transforms[{i}]"),
                                                 f"{where}.transforms[{i}]", check) for i, item in enumerate(nested)]
    if check:
        registry.Transform.check_params(params, "transform", where)
        return None
    return registry.Transform.create_from_params(params, "transform", where)


def _labels(dataset, key: str) -> list:
    """The label of every sample: ``dataset.targets`` when it has them, else ``sample[key]``."""
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [dataset[index][key] for index in range(len(dataset))]
    return [label.item() if hasattr(label, "item") else label for label in labels]


def _param_groups(model, layerwise: Mapping[str, Mapping], no_bias_decay: bool) -> list[dict]:
    """Trainable parameters grouped by their options (Catalyst's ``process_model_params``, with
    parameters of equal options sharing one group)."""
    groups: dict[tuple, dict] = {}
    patterns = [(re.compile(pattern), dict(options)) for pattern, options in layerwise.items()]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        options: dict = {}
        for pattern, values in patterns:
            if pattern.match(name):
                options.update(values)
        if no_bias_decay and name.endswith("bias"):
            options["weight_decay"] = 0.0
        key = tuple(sorted(options.items()))
        groups.setdefault(key, {"params": [], **options})["params"].append(param)
    return list(groups.values())


def _load_optimizer_state(optimizer, previous, where: str) -> None:
    """Copies ``previous``'s per-parameter state (moments, step counts) into ``optimizer`` for
    every parameter both optimize, matched by the parameter itself, so the two stages may group
    parameters differently (``layerwise_params``, ``lr_linear_scaling``, a frozen part); the
    groups and hyperparameters (lr, betas...) stay the ones ``optimizer`` was configured with.

    Raises:
        ConfigError: the optimizers are of different kinds (their states mean different things).
    """
    if type(optimizer) is not type(previous):
        raise ConfigError(f"{where}.load_from_previous_stage: the previous stage's optimizer state does not fit: "
                          f"it is a {type(previous).__name__}, this stage's a {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param in previous.state:
                optimizer.state[param] = copy.deepcopy(previous.state[param])


# ---------------------------------------------------------------------------------------------
# running


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
    from mlcomp.runner.expdir import experiment_and_runner, import_expdir

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
    (``${MLCOMP_DATA_DIR}``) in the config's strings are expanded first (:func:`expand_env`), so
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
        config: a config dict (e.g. from :func:`load_config`).
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
    import torch

    if "deterministic" in args:
        torch.backends.cudnn.deterministic = bool(args["deterministic"])
    if "benchmark" in args:
        torch.backends.cudnn.benchmark = bool(args["benchmark"])


def _is_master() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
