"""Catalyst 20.x's ``ConfigExperiment``: the experiment a config dict describes (models,
criteria, optimizers, schedulers, callbacks, datasets, transforms and loaders per stage, built
from the registries), checked when it is constructed and built when the runner asks for each part.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
from collections import OrderedDict
from typing import Any, Mapping

from mlcomp.errors import ConfigError
from mlcomp.runner import registry
from mlcomp.runner.augmentor import per_key
from mlcomp.runner.callbacks import CheckpointCallback
from mlcomp.runner.config_schema import (LOADER_KEYS, LOADER_SECTIONS, OPTIMIZER_OPTIONS, STAGE_PARAMS_DEFAULTS,
                                         as_mapping, reject_unknown, stages_config, validate_config)
from mlcomp.runner.expdir import import_expdir
from mlcomp.runner.experiment import Experiment

__all__ = ["ConfigExperiment"]


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
        config: a config dict (see :mod:`mlcomp.runner.config_schema`); it is deep-copied.

    Attributes:
        extra_callbacks: callbacks by name added to every stage after the configured ones (e.g.
            the train executor's reporter); set them before the run starts.

    Raises:
        ConfigError: see :func:`mlcomp.runner.config_schema.validate_config`; an unknown model, criterion, optimizer,
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
                    registry.Model.check_params(as_mapping(params, f"model_params.{key}"), "model",
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
        loaders = as_mapping(data.get("loaders"), f"{where}.loaders")
        for name, options in loaders.items():
            as_mapping(options, f"{where}.loaders.{name}")
        for name, options in as_mapping(data.get("loaders_params"), f"{where}.loaders_params").items():
            reject_unknown(as_mapping(options, f"{where}.loaders_params.{name}"), LOADER_KEYS, f"{where}.loaders_params.{name}.")
        for name, params in as_mapping(data.get("samplers_params"), f"{where}.samplers_params").items():
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
        layerwise = as_mapping(params.pop("layerwise_params", None), f"{where}.layerwise_params")
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
            params, where = as_mapping(params.get(dataset), f"{where}.{dataset}"), f"{where}.{dataset}"
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
        built = {key: _build_transform(as_mapping(value, f"{where}.{key}"), f"{where}.{key}", check)
                 for key, value in params.items()}
        return None if check else per_key({key: value for key, value in built.items() if value is not None})
    if not params:
        return None
    if "transforms" in params:
        nested = params["transforms"]
        if not isinstance(nested, list):
            raise ConfigError(f"{where}.transforms: expected a list of transforms, got {nested!r}")
        params["transforms"] = [_build_transform(as_mapping(item, f"{where}.transforms[{i}]"),
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

