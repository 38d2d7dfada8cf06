"""Registries: names in a config → classes and factories (Catalyst 20.x ``catalyst.registry``).

Each registry maps a name to a factory (usually a class). A config names a factory
(``model: DigitsCNN``, ``callback: AccuracyCallback``); the experiment looks it up here and calls
it with the rest of the mapping as keyword arguments.

Registering works as a call or as a decorator, with an optional explicit name::

    registry.Model(MyNet)                 # registered as "MyNet"
    @registry.Callback
    class MyCallback(Callback): ...
    registry.Criterion(my_loss, name="MyLoss")

Default entries come from modules that are imported lazily, on the first lookup, so that
``import mlcomp.runner`` stays cheap and no module registers anything as an import side effect:

=============  ==========================================================================
``Model``      ``mlcomp.runner.models.__all__``, then every ``torch.nn.Module`` in ``torch.nn``
``Criterion``  ``mlcomp.runner.losses.__all__`` (when present), then ``torch.nn``'s ``*Loss``
``Optimizer``  ``mlcomp.runner.optimizers.__all__`` (Ralamb, Lookahead), every ``torch.optim.Optimizer``
               subclass in ``torch.optim``, then in ``torch_optimizer`` (Lamb...)
``Scheduler``  every scheduler class in ``torch.optim.lr_scheduler``, then
               ``mlcomp.runner.schedulers.__all__`` (OneCycleLRWithWarmup)
``Sampler``    ``mlcomp.runner.samplers.__all__`` (for ``data_params.samplers_params``)
``Transform``  ``mlcomp.runner.transforms.__all__`` as ``catalyst.Name`` and ``C.Name``, then the
               transforms of ``albumentations`` and ``albumentations.pytorch`` (when installed),
               as ``Name``, ``A.Name``, ``albu.Name`` and ``albumentations.Name``
``Callback``   ``mlcomp.runner.callbacks.__all__`` (a callback's ``_wrapper`` key wraps it: ``CallbackRegistry``)
``Dataset``    ``mlcomp.runner.datasets.__all__``
``Experiment`` ``ConfigExperiment``
``Runner``     ``SupervisedRunner`` and ``Runner``
=============  ==========================================================================

Entries registered by the user (typically by the config's expdir) shadow the defaults, and a
later registration of a name replaces an earlier one (re-running a notebook cell or importing
an edited expdir works).

A name that Catalyst 20.x registered but mlcomp does not have (the data of
:mod:`mlcomp.runner.compat.surface`) fails saying "Catalyst's X is not supported by mlcomp".

Catalyst's other spellings are aliases of the same objects: ``Module`` (= ``Model``) and the
upper-case ``MODEL``/``MODELS``, ``CRITERION``/``CRITERIONS``, ``OPTIMIZER``/``OPTIMIZERS``,
``SCHEDULER``/``SCHEDULERS``, ``CALLBACK``/``CALLBACKS``, ``EXPERIMENT``/``EXPERIMENTS``,
``RUNNER``/``RUNNERS``, ``SAMPLER``/``SAMPLERS``, ``TRANSFORM``/``TRANSFORMS``, ``DATASET``/
``DATASETS``, ``MODULE``/``MODULES``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from typing import Any, Callable, Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.runner.compat import surface

LOADED_EXPDIRS: list[str] = []
"""Folders imported as expdirs in this process, in order (:func:`mlcomp.runner.expdir.import_expdir`
appends); an unknown name's message says where registrations were looked for."""

__all__ = [
    "Registry",
    "Model",
    "Criterion",
    "Optimizer",
    "Scheduler",
    "Callback",
    "Dataset",
    "Experiment",
    "Runner",
    "Sampler",
    "Transform",
    "Module",
    "REGISTRIES",
    "LOADED_EXPDIRS",
    "check_arguments",
]


def _module_exports(module_name: str, predicate: Callable[[Any], bool] = callable) -> dict[str, Any]:
    """The names in ``module_name.__all__`` that satisfy ``predicate``; empty when the module
    does not exist (a part of mlcomp not written or not installed)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            return {}
        raise
    names = getattr(module, "__all__", [])
    return {name: getattr(module, name) for name in names if predicate(getattr(module, name, None))}


def _subclasses_in(module_name: str, base_path: tuple[str, str], name_filter=lambda name: True):
    """A defaults loader: the public classes of ``module_name`` that subclass ``base_path``
    (``(module, attribute)``) and whose names pass ``name_filter``."""

    def load() -> dict[str, Any]:
        module = importlib.import_module(module_name)
        base = getattr(importlib.import_module(base_path[0]), base_path[1])
        return {
            name: obj
            for name, obj in vars(module).items()
            if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, base)
            and obj is not base and name_filter(name)
        }

    return load


def _exports(*module_names: str, predicate: Callable[[Any], bool] = callable):
    """A defaults loader: the ``__all__`` exports of each module, earlier modules first."""

    def load() -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for module_name in reversed(module_names):
            entries.update(_module_exports(module_name, predicate))
        return entries

    return load


def _chain(*loaders):
    """A defaults loader combining ``loaders``; the first one to define a name wins."""

    def load() -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for loader in reversed(loaders):
            entries.update(loader())
        return entries

    return load


class Registry:
    """A named mapping from names to factories, filled by registration and by lazy defaults.

    Args:
        kind: what the registry holds, used in messages (``"model"``, ``"callback"``).
        defaults: a callable returning ``{name: factory}``, called once, on the first lookup.
        origin: where the defaults come from, for messages (``"torch.nn"``).

    Example:
        >>> reg = Registry("model")
        >>> @reg
        ... class Net: ...
        >>> reg.get("Net") is Net
        True
    """

    def __init__(self, kind: str, defaults: Callable[[], Mapping[str, Any]] | None = None, origin: str = ""):
        self.kind = kind
        self.origin = origin
        self._defaults_loader = defaults
        self._defaults: dict[str, Any] | None = None
        self._user: dict[str, Any] = {}

    def __call__(self, factory=None, *, name: str | None = None):
        """Registers ``factory`` under ``name`` (default: its ``__name__``) and returns it, so
        it works as ``reg(Cls)``, ``@reg`` and ``@reg(name="Alias")``.

        Raises:
            TypeError: ``factory`` is not callable, or has no ``__name__`` and no name is given.
        """
        if factory is None:
            return lambda f: self(f, name=name)
        if not callable(factory):
            raise TypeError(f"{self.kind} registry: can only register callables, got {factory!r}")
        key = name or getattr(factory, "__name__", None)
        if not key:
            raise TypeError(f"{self.kind} registry: {factory!r} has no __name__; pass name=")
        self._user[key] = factory
        return factory

    add = __call__

    def add_from_module(self, module, prefix: str | Sequence[str] = "") -> None:
        """Registers every public callable of ``module`` (its ``__all__`` when it has one), under
        each of ``prefix + name`` (Catalyst's ``Registry.add_from_module``)."""
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for prefix_ in [prefix] if isinstance(prefix, str) else prefix:
            for name in names:
                if callable(getattr(module, name, None)):
                    self(getattr(module, name), name=f"{prefix_}{name}")

    def remove(self, name: str) -> None:
        """Forgets a user registration (defaults stay). Unknown names are ignored."""
        self._user.pop(name, None)

    def _all(self) -> dict[str, Any]:
        if self._defaults is None:
            self._defaults = dict(self._defaults_loader()) if self._defaults_loader else {}
        return {**self._defaults, **self._user}

    def defaults(self) -> dict[str, Any]:
        """The default entries (loaded on first use), without the user's registrations."""
        self._all()
        return dict(self._defaults)

    def names(self) -> list[str]:
        """Every name known now (defaults and registrations), sorted."""
        return sorted(self._all())

    def __contains__(self, name: str) -> bool:
        return name in self._user or name in self._all()

    def __iter__(self):
        return iter(self.names())

    def get(self, name: str, key_path: str | None = None):
        """The factory registered as ``name``.

        Raises:
            ConfigError: unknown name; the message names ``key_path`` (the config key that gave
                the name) and up to five close matches.
        """
        entries = self._all()
        if isinstance(name, str) and name in entries:
            return entries[name]
        where = f"{key_path}: " if key_path else ""
        catalyst_note = _catalyst_note(self.kind, name)
        if catalyst_note:
            raise ConfigError(f"{where}unknown {self.kind} {name!r}: {catalyst_note}")
        close = [n for n in entries if n.lower() == str(name).lower()]
        close += [n for n in difflib.get_close_matches(str(name), list(entries), n=5, cutoff=0.6) if n not in close]
        hint = f"did you mean {', '.join(close)}?" if close else self._looked()
        raise ConfigError(f"{where}unknown {self.kind} {name!r}; {hint}")

    def _looked(self) -> str:
        """Where a name was looked for and how to add one, for an unknown-name message."""
        origin = f"the defaults ({self.origin})" if self.origin else "the defaults"
        users = f"registrations by the expdir {', '.join(LOADED_EXPDIRS)}" if LOADED_EXPDIRS else \
            "no expdir was imported (the config has no args.expdir), so nothing of yours is registered"
        return (f"looked in {origin} and {users}; register it with "
                f"mlcomp.runner.registry.{self.kind.capitalize()}(...) in the expdir's __init__.py and set "
                "args.expdir to that folder")

    def create(self, name: str, key_path: str | None = None, /, *args, **kwargs):
        """Calls the factory ``name`` with ``args`` and ``kwargs``.

        Raises:
            ConfigError: unknown name, or the factory's signature rejects the arguments; the
                message names ``key_path`` and the signature.
        """
        factory = self.get(name, key_path)
        check_arguments(factory, f"{self.kind} {name}", key_path, args, kwargs)
        return factory(*args, **kwargs)

    def _split(self, params: Mapping[str, Any], name_key: str, key_path: str):
        """``(factory, kwargs)`` of ``params``: the factory named by ``params[name_key]``."""
        if not isinstance(params, Mapping):
            raise ConfigError(f"{key_path}: expected a mapping with a {name_key!r} key, got {params!r}")
        kwargs = dict(params)
        if name_key not in kwargs:
            raise ConfigError(f"{key_path}: missing key {name_key!r} naming the {self.kind} "
                              f"(keys given: {sorted(kwargs)})")
        name = kwargs.pop(name_key)
        return name, self.get(name, f"{key_path}.{name_key}"), kwargs

    def check_params(self, params: Mapping[str, Any], name_key: str, key_path: str, /, *args):
        """Checks, without calling anything, that ``params`` name a known factory that accepts
        ``args`` and the other keys (arguments it requires but that come later, such as an
        optimizer's parameters, are not demanded); returns the factory.

        Raises:
            ConfigError: see :meth:`create_from_params`.
        """
        name, factory, kwargs = self._split(params, name_key, key_path)
        check_arguments(factory, f"{self.kind} {name}", key_path, args, kwargs, partial=True)
        return factory

    def create_from_params(self, params: Mapping[str, Any], name_key: str, key_path: str,
                           /, *args, **extra):
        """Calls the factory named by ``params[name_key]`` with ``args``, the other keys of
        ``params`` and ``extra``: Catalyst's ``get_from_params``.

        Raises:
            ConfigError: ``params`` is not a mapping or lacks ``name_key``; the name is unknown
                (the message names ``key_path.name_key``); the factory rejects the arguments
                (the message names ``key_path``).
        """
        name, factory, kwargs = self._split(params, name_key, key_path)
        kwargs.update(extra)
        check_arguments(factory, f"{self.kind} {name}", key_path, args, kwargs)
        return factory(*args, **kwargs)

    def __repr__(self):
        return f"Registry({self.kind!r}, user={sorted(self._user)})"


class CallbackRegistry(Registry):
    """The callback registry: a callback's params may hold ``_wrapper: {callback: Name, ...}``,
    a callback built around the one the params describe (passed as ``base_callback``), as
    Catalyst 20.08+'s ``ConfigExperiment._get_callback`` read it (wrappers may nest)."""

    def check_params(self, params, name_key: str, key_path: str, /, *args):
        """:meth:`Registry.check_params` of the callback and of its ``_wrapper``."""
        params, wrapper = _split_wrapper(params, key_path)
        factory = super().check_params(params, name_key, key_path, *args)
        if wrapper is not None:
            self.check_params(wrapper, name_key, f"{key_path}._wrapper")
        return factory

    def create_from_params(self, params, name_key: str, key_path: str, /, *args, **extra):
        """:meth:`Registry.create_from_params` of the callback, then of its ``_wrapper`` around it."""
        params, wrapper = _split_wrapper(params, key_path)
        callback = super().create_from_params(params, name_key, key_path, *args, **extra)
        if wrapper is None:
            return callback
        return self.create_from_params(wrapper, name_key, f"{key_path}._wrapper", base_callback=callback)


def _split_wrapper(params, key_path: str):
    """``(params less _wrapper, the _wrapper mapping or None)``.

    Raises:
        ConfigError: ``_wrapper`` is not a mapping.
    """
    if not isinstance(params, Mapping) or "_wrapper" not in params:
        return params, None
    params = dict(params)
    wrapper = params.pop("_wrapper")
    if not isinstance(wrapper, Mapping):
        raise ConfigError(f"{key_path}._wrapper: expected a mapping with a 'callback' key, got {wrapper!r}")
    return params, wrapper


def _catalyst_note(kind: str, name) -> str:
    """Why a name Catalyst's registry of ``kind`` had (:mod:`mlcomp.runner.compat.surface`) is
    unknown here: ``"Catalyst 20.08–20.12's callback 'X' is not supported by mlcomp (...)"``, or,
    for a prefixed name Catalyst took from another package (``A.Blur``, ``smp.Unet``), which
    package; ``""`` for other names."""
    kinds = ("model", "module") if kind == "model" else (kind,)
    tags = next((surface.registered(k)[name] for k in kinds if name in surface.registered(k)), None)
    if tags:
        return (f"Catalyst {surface.tags_text(tags)}'s {kind} {name!r} is not supported by mlcomp "
                "(register your own under that name in the expdir)")
    for module, prefixes, tags in (source for k in kinds for source in surface.external(k)):
        if any(prefix and str(name).startswith(prefix) for prefix in prefixes):
            root = module.split(".")[0]
            if root == "albumentations" and importlib.util.find_spec(root) is None:
                return (f"Catalyst {surface.tags_text(tags)} took {kind}s named like {name!r} from {module}, "
                        "which is not installed (pip install 'mlcomp[albumentations]')")
            if root != "albumentations":
                return (f"Catalyst {surface.tags_text(tags)} took {kind}s named like {name!r} from {module}, "
                        "which mlcomp's registry does not read (register them in the expdir)")
    return ""


def check_arguments(factory, description: str, key_path: str | None, args: tuple, kwargs: Mapping,
                    partial: bool = False) -> None:
    """Checks that ``factory(*args, **kwargs)`` binds to its signature (``partial``: missing
    required arguments are allowed). Factories without a signature (some builtins) pass.

    Raises:
        ConfigError: ``"{key_path}: {description} does not accept the arguments [...] (why);
            signature Name(...)"``.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        (signature.bind_partial if partial else signature.bind)(*args, **kwargs)
    except TypeError as e:
        where = f"{key_path}: " if key_path else ""
        raise ConfigError(f"{where}{description} does not accept the arguments {sorted(kwargs)} ({e}); "
                          f"signature {getattr(factory, '__name__', factory)}{signature}") from None


def _optional(loader):
    """A defaults loader that gives nothing when the module it needs is not installed."""

    def load() -> dict[str, Any]:
        try:
            return loader()
        except ModuleNotFoundError:
            return {}

    return load


_TRANSFORM_PREFIXES = ("A.", "albu.", "albumentations.")
"""Catalyst's prefixes of albumentations' transforms (``A.Compose``, ``albumentations.Normalize``)."""


def _albumentations() -> dict[str, Any]:
    import albumentations
    from albumentations import pytorch

    entries = {}
    for module in (albumentations, pytorch):
        for name in dir(module):
            obj = getattr(module, name)
            if not name.startswith("_") and inspect.isclass(obj):
                entries.update({name: obj, **{prefix + name: obj for prefix in _TRANSFORM_PREFIXES}})
    return entries


def _catalyst_transforms() -> dict[str, Any]:
    """mlcomp's versions of Catalyst's own transforms, as ``catalyst.Name`` and ``C.Name``."""
    return {prefix + name: obj for name, obj in _module_exports("mlcomp.runner.transforms").items()
            for prefix in ("catalyst.", "C.")}


def _catalyst_transforms_in_albumentations() -> dict[str, Any]:
    """Catalyst's transforms as albumentations transforms and a tensor-tolerant ``A.Compose``,
    when albumentations imports (:mod:`mlcomp.runner.albu`)."""
    return importlib.import_module("mlcomp.runner.albu").registry_entries(_TRANSFORM_PREFIXES)


def _is_class(obj) -> bool:
    return inspect.isclass(obj)


def _torch_schedulers() -> dict[str, Any]:
    module = importlib.import_module("torch.optim.lr_scheduler")
    bases = tuple(getattr(module, n) for n in ("LRScheduler", "ReduceLROnPlateau") if hasattr(module, n))
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, bases)
            and name != "LRScheduler"}


def _runners() -> dict[str, Any]:
    return {name: getattr(importlib.import_module(module), name)
            for module, name in (("mlcomp.runner.runner", "Runner"),
                                 ("mlcomp.runner.supervised", "SupervisedRunner"))}


def _experiments() -> dict[str, Any]:
    return {"ConfigExperiment": importlib.import_module("mlcomp.runner.config_experiment").ConfigExperiment}


Model = Registry("model", _chain(_exports("mlcomp.runner.models", predicate=_is_class),
                                 _subclasses_in("torch.nn", ("torch.nn", "Module"))),
                 "mlcomp.runner.models, torch.nn")
Criterion = Registry("criterion", _chain(
    _exports("mlcomp.runner.losses"),
    _subclasses_in("torch.nn", ("torch.nn", "Module"), lambda name: name.endswith("Loss"))),
    "mlcomp.runner.losses, torch.nn's *Loss")
Optimizer = Registry("optimizer", _chain(
    _exports("mlcomp.runner.optimizers"),
    _subclasses_in("torch.optim", ("torch.optim", "Optimizer")),
    _optional(_subclasses_in("torch_optimizer", ("torch.optim", "Optimizer")))),
    "mlcomp.runner.optimizers, torch.optim, torch_optimizer")
Scheduler = Registry("scheduler", _chain(_torch_schedulers, _exports("mlcomp.runner.schedulers", predicate=_is_class)),
                     "torch.optim.lr_scheduler, mlcomp.runner.schedulers")
Callback = CallbackRegistry("callback", _exports("mlcomp.runner.callbacks", predicate=_is_class),
                            "mlcomp.runner.callbacks")
Dataset = Registry("dataset", _exports("mlcomp.runner.datasets", predicate=_is_class), "mlcomp.runner.datasets")
Experiment = Registry("experiment", _experiments, "ConfigExperiment")
Runner = Registry("runner", _runners, "Runner, SupervisedRunner")
Sampler = Registry("sampler", _exports("mlcomp.runner.samplers", predicate=_is_class), "mlcomp.runner.samplers")
Transform = Registry("transform", _chain(_catalyst_transforms_in_albumentations, _catalyst_transforms,
                                         _optional(_albumentations)),
                     "mlcomp.runner.transforms as catalyst.Name / C.Name, albumentations when installed")
Module = Model

REGISTRIES: dict[str, Registry] = {
    "Model": Model, "Criterion": Criterion, "Optimizer": Optimizer, "Scheduler": Scheduler,
    "Callback": Callback, "Dataset": Dataset, "Experiment": Experiment, "Runner": Runner,
    "Sampler": Sampler, "Transform": Transform,
}
"""Every registry by its public name."""

MODEL = MODELS = MODULE = MODULES = Model
CRITERION = CRITERIONS = Criterion
OPTIMIZER = OPTIMIZERS = Optimizer
SCHEDULER = SCHEDULERS = Scheduler
CALLBACK = CALLBACKS = Callback
DATASET = DATASETS = Dataset
EXPERIMENT = EXPERIMENTS = Experiment
RUNNER = RUNNERS = Runner
SAMPLER = SAMPLERS = Sampler
TRANSFORM = TRANSFORMS = Transform
