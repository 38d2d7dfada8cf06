"""The ``search:`` block of a DAG task, checked at submission against the task's resolved config.

```yaml
search:
  space: {lr: {loguniform: [0.0001, 0.1]}, width: {choice: [8, 16, 32]}}   # keys as grid keys
  sampler: tpe          # random | tpe | grid (default tpe)
  trials: 24            # how many configurations to sample (default 10)
  parallel: 4           # trials training at once (default 1)
  seed: 0               # the samplers' seed (default 0)
  scheduler: {type: asha, metric: accuracy01, loader: valid, mode: max,
              grace_epochs: 1, max_epochs: 9, reduction_factor: 3}   # type: asha | median | none
```

The scheduler's ``metric``, ``loader`` and ``mode`` default to the config's main metric, valid
loader and direction; ``max_epochs`` to the config's training epochs, ``grace_epochs`` to 1 and
``reduction_factor`` to 3. A trial's config is the task's with the sampled values set at the
dotted paths the space keys resolve to, its training stages cut at ``max_epochs``.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from mlcomp.configkit import set_by_path
from mlcomp.errors import ConfigError
from mlcomp.search.asha import rung_epochs
from mlcomp.search.sampler import SAMPLERS
from mlcomp.search.space import parse_space

__all__ = ["SEARCH_KEYS", "SCHEDULER_KEYS", "SCHEDULERS", "check_search", "trial_config", "training_epochs"]

SEARCH_KEYS = ("space", "sampler", "trials", "parallel", "seed", "scheduler")
SCHEDULER_KEYS = ("type", "metric", "loader", "mode", "grace_epochs", "max_epochs", "reduction_factor")
SCHEDULERS = ("asha", "median", "none")

Error = Callable[[tuple, str], Exception]  # (key path below the task's spec, message) → exception


def _int(raw: Mapping, key: str, default: int, minimum: int, error: Error, where: tuple) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(where + (key,), f"got {value!r}; allowed: an int >= {minimum}")
    return value


def _training_stages(config: dict) -> list[tuple[str, int]]:
    from mlcomp.runner.config_schema import stages_config

    return [(name, int(stage["stage_params"].get("num_epochs", 1)))
            for name, stage in stages_config(config).items() if not name.startswith("infer")]


def training_epochs(config: dict) -> int:
    """The epochs of ``config``'s training stages, all stages together."""
    return sum(epochs for _, epochs in _training_stages(config))


def _cut(config: dict, max_epochs: int) -> None:
    """Cuts ``config``'s training stages (in place) so that they train ``max_epochs`` in all."""
    left = max_epochs
    for name, epochs in _training_stages(config):
        if left <= 0:
            del config["stages"][name]
        elif epochs > left:
            stage = config["stages"][name] = dict(config["stages"][name] or {})
            stage["stage_params"] = {**(stage.get("stage_params") or {}), "num_epochs": left}
        left -= epochs


def trial_config(template: dict, search: dict, params: Mapping[str, Any]) -> dict:
    """The resolved config of a trial: ``template`` (the task's config) with ``params`` set at the
    paths of ``search["space"]`` and its training cut at the scheduler's ``max_epochs``."""
    config = copy.deepcopy(template)
    for name, value in params.items():
        set_by_path(config, search["space"][name]["path"], copy.deepcopy(value))
    _cut(config, search["scheduler"]["max_epochs"])
    return config


def _produced(experiment, config: dict) -> tuple[set[str] | None, set[str] | None]:
    """The metric names the training stages' callbacks declare (None when one cannot say) and
    the loader names (None when the config does not list them)."""
    from mlcomp.runner.callbacks.validation import _declared_names
    from mlcomp.runner.config_schema import stages_config

    names, loaders = {"loss"}, set()
    for stage, _ in _training_stages(config):
        for callback in experiment.get_callbacks(stage).values():
            declared = _declared_names(callback)
            if declared is None:
                names = None
                break
            names.update(declared)
        stage_loaders = (stages_config(config)[stage].get("data_params") or {}).get("loaders")
        loaders = loaders if isinstance(stage_loaders, Mapping) and loaders is not None else None
        if loaders is not None:
            loaders.update(stage_loaders)
        if names is None:
            break
    return names, loaders


def _scheduler(raw: Any, main: dict, epochs: int, error: Error) -> dict:
    where = ("search", "scheduler")
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise error(where, f"got {raw!r}; allowed: a mapping with {', '.join(SCHEDULER_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(SCHEDULER_KEYS))
    if unknown:
        raise error(where + (unknown[0],), f"unknown key; allowed: {', '.join(SCHEDULER_KEYS)}")
    kind = raw.get("type", "none")
    if kind not in SCHEDULERS:
        raise error(where + ("type",), f"got {kind!r}; allowed: {', '.join(SCHEDULERS)}")
    mode = raw.get("mode", "min" if main["minimize"] else "max")
    if mode not in ("min", "max"):
        raise error(where + ("mode",), f"got {mode!r}; allowed: min, max")
    for key, default in (("metric", main["metric"]), ("loader", main["loader"])):
        if not isinstance(raw.get(key, default), str) or not raw.get(key, default):
            raise error(where + (key,), f"got {raw.get(key)!r}; allowed: a {key} name")
    max_epochs = _int(raw, "max_epochs", epochs, 1, error, where)
    if max_epochs > epochs:
        raise error(where + ("max_epochs",), f"max_epochs {max_epochs} is above the config's {epochs} training "
                                             f"epochs")
    grace = _int(raw, "grace_epochs", 1, 1, error, where)
    if grace > max_epochs:
        raise error(where + ("grace_epochs",), f"grace_epochs {grace} is above max_epochs {max_epochs}")
    eta = _int(raw, "reduction_factor", 3, 2, error, where)
    rungs = rung_epochs(grace, eta, max_epochs) if kind == "asha" else [max_epochs]
    return {"type": kind, "metric": raw.get("metric", main["metric"]), "loader": raw.get("loader", main["loader"]),
            "mode": mode, "grace_epochs": grace, "max_epochs": max_epochs, "reduction_factor": eta, "rungs": rungs}


def _space(raw: Any, config: dict, error: Error) -> dict:
    where = ("search", "space")
    space = parse_space(raw, lambda sub, message: error(where + sub, message))
    checked = {}
    for name, dim in space.items():
        try:
            path = set_by_path(copy.deepcopy(config), name, dim.values[0])
        except ConfigError as e:
            raise error(where + (name,), str(e)) from None
        checked[name] = {"kind": dim.kind, "values": list(dim.values), "path": path}
    return checked


def check_search(raw: Any, template: dict, experiment, error: Error) -> dict:
    """The stored form of a task's ``search:`` block (``space`` with each key's resolved
    ``path``, ``sampler``, ``trials``, ``parallel``, ``seed``, ``scheduler`` with its ``rungs``
    in epochs).

    Args:
        template: what the train executor's ``validate`` returned for the task (``config``, ``main``).
        experiment: the task's experiment (to know the metrics its callbacks produce).
        error: makes the exception for a key path below the task's spec and a message.

    Raises:
        whatever ``error`` makes: an unknown key, an unknown distribution or sampler, low >= high,
        a loguniform low <= 0, an empty choice, a space key that matches no config path or
        several, a scheduler metric or loader the config does not produce, ``max_epochs`` above
        the config's epochs, a grid sampler over a continuous dimension.
    """
    if not isinstance(raw, Mapping):
        raise error(("search",), f"got {raw!r}; allowed: a mapping with {', '.join(SEARCH_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(SEARCH_KEYS))
    if unknown:
        raise error(("search", unknown[0]), f"unknown key; allowed: {', '.join(SEARCH_KEYS)}")
    config = template["config"]
    space = _space(raw.get("space"), config, error)
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise error(("search", "sampler"), f"got {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if sampler == "grid" and any(d["kind"] not in ("choice", "int") for d in space.values()):
        raise error(("search", "sampler"), "the grid sampler needs choice or int dimensions only")
    scheduler = _scheduler(raw.get("scheduler"), template["main"], training_epochs(config), error)
    names, loaders = _produced(experiment, config)
    if names is not None and scheduler["metric"] not in names:
        raise error(("search", "scheduler", "metric"), f"metric {scheduler['metric']!r} is not produced by the "
                                                       f"config; it produces {', '.join(sorted(names))}")
    if loaders is not None and scheduler["loader"] not in loaders:
        raise error(("search", "scheduler", "loader"), f"loader {scheduler['loader']!r} is not in the config; "
                                                       f"its loaders: {', '.join(sorted(loaders))}")
    return {"space": space, "sampler": sampler, "trials": _int(raw, "trials", 10, 1, error, ("search",)),
            "parallel": _int(raw, "parallel", 1, 1, error, ("search",)),
            "seed": _int(raw, "seed", 0, 0, error, ("search",)), "scheduler": scheduler}
