"""Sampling a search's next configuration through Optuna's ask-and-tell interface.

No sampler state lives in memory between calls: each call builds an in-memory study from the
trials the store holds (their parameters, Optuna system attributes, rung values and states, through
``optuna.trial.create_trial``) and asks it for one more trial. The sampler is seeded with
``seed + number`` (the new trial's number; the grid sampler, which shuffles its grid once
with the seed, with ``seed``), so with one trial at a time (``parallel: 1``) the
sequence of configurations is the same on every run; a restarted server continues it.

Samplers: ``random`` (``RandomSampler``), ``tpe`` (``TPESampler``, Bergstra et al. 2011; trials
that stopped early count by their intermediate values, as Optuna's pruned trials), ``grid``
(``GridSampler`` over the ``choice`` values and ``int`` ranges; every dimension must be discrete).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from mlcomp.search.space import Dimension, distributions, grid_values

__all__ = ["SAMPLERS", "PastTrial", "sample"]

SAMPLERS = ("random", "tpe", "grid")


@dataclasses.dataclass(frozen=True)
class PastTrial:
    """A trial the study already has: its ``params``, Optuna ``system_attrs`` (the grid id of a
    grid sampler), ``intermediate`` values by epoch, ``state`` (``complete``, ``pruned``,
    ``running`` or ``fail``) and final ``value`` (for ``complete``)."""

    params: Mapping[str, Any]
    system_attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    intermediate: Mapping[int, float] = dataclasses.field(default_factory=dict)
    state: str = "running"
    value: float | None = None


def _sampler(name: str, seed: int, space: Mapping[str, Dimension]):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_values(space), seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")


def sample(space: Mapping[str, Dimension], sampler: str, seed: int, minimize: bool,
           past: Sequence[PastTrial]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of trial number ``len(past)`` and the Optuna system attributes to store with
    them (replayed through :class:`PastTrial` next time).

    Raises:
        ValueError: an unknown sampler name.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(space)
    study = optuna.create_study(direction="minimize" if minimize else "maximize",
                                sampler=_sampler(sampler, seed if sampler == "grid" else seed + len(past), space))
    state = optuna.trial.TrialState
    states = {"complete": state.COMPLETE, "pruned": state.PRUNED, "running": state.RUNNING, "fail": state.FAIL}
    study.add_trials([optuna.trial.create_trial(
        params=dict(t.params), distributions=dists, state=states[t.state],
        value=t.value if t.state == "complete" else None,
        intermediate_values={int(k): float(v) for k, v in t.intermediate.items()},
        system_attrs=dict(t.system_attrs)) for t in past])
    trial = study.ask(dists)
    frozen = study.trials[-1]
    return dict(trial.params), dict(frozen.system_attrs)
