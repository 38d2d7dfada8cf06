"""A search space: parameter name → distribution, parsed from the DAG's ``search.space``.

Each entry is one distribution written as a one-key mapping::

    lr: {loguniform: [0.0001, 0.1]}     # float, sampled on a log scale; 0 < low < high
    dropout: {uniform: [0.0, 0.5]}      # float; low < high
    batch_size: {int: [16, 128]}        # int, both ends included; low < high
    width: {choice: [8, 16, 32]}        # one of the listed values (at least one)

:func:`parse_space` checks them and :func:`distributions` turns them into Optuna's
distributions (``FloatDistribution``, ``IntDistribution``, ``CategoricalDistribution``), which
the samplers of :mod:`mlcomp.search.sampler` draw from.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

__all__ = ["Dimension", "KINDS", "parse_space", "distributions", "grid_values"]

KINDS = ("loguniform", "uniform", "int", "choice")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One parameter of the space: its ``kind`` (one of :data:`KINDS`) and ``values`` (``[low,
    high]`` for ranges, the choices for ``choice``)."""

    kind: str
    values: tuple


def _number(value: Any, integer: bool) -> bool:
    kinds = (int,) if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _dimension(raw: Any) -> Dimension:
    """One entry; raises ValueError with the rule it breaks."""
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(f"got {raw!r}; allowed: a one-key mapping such as {{loguniform: [0.0001, 0.1]}} "
                         f"with the distribution {', '.join(KINDS)}")
    (kind, values), = raw.items()
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ValueError(f"choice: got {values!r}; allowed: a non-empty list of values")
        return Dimension(kind, tuple(values))
    integer = kind == "int"
    if not isinstance(values, list) or len(values) != 2 or not all(_number(v, integer) for v in values):
        raise ValueError(f"{kind}: got {values!r}; allowed: [low, high], two {'ints' if integer else 'numbers'}")
    low, high = values
    if low >= high:
        raise ValueError(f"{kind}: low {low!r} >= high {high!r}; allowed: low < high")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform: low {low!r} <= 0; allowed: 0 < low < high")
    return Dimension(kind, (low, high))


def parse_space(raw: Any, error: Callable[[tuple, str], Exception]) -> dict[str, Dimension]:
    """The checked space of ``raw`` (a mapping of parameter keys to distributions).

    Args:
        error: makes the exception to raise from a key path below the space (``()`` for the
            space itself) and a message.

    Raises:
        whatever ``error`` returns: ``raw`` is not a non-empty mapping, or an entry has an unknown
        distribution, low >= high, a loguniform low <= 0 or an empty choice.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise error((), f"got {raw!r}; allowed: a non-empty mapping of config keys to distributions")
    space = {}
    for key, entry in raw.items():
        try:
            space[str(key)] = _dimension(entry)
        except ValueError as e:
            raise error((str(key),), str(e)) from None
    return space


def distributions(space: Mapping[str, Dimension]) -> dict:
    """Optuna's distributions for ``space``, by parameter name."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made = {}
    for name, dim in space.items():
        if dim.kind == "choice":
            made[name] = CategoricalDistribution(list(dim.values))
        elif dim.kind == "int":
            made[name] = IntDistribution(*dim.values)
        else:
            made[name] = FloatDistribution(*map(float, dim.values), log=dim.kind == "loguniform")
    return made


def grid_values(space: Mapping[str, Dimension]) -> dict[str, list] | None:
    """The values of every parameter for a grid sampler (``choice`` lists, every int of an
    ``int`` range), or None when a dimension is continuous."""
    grid = {}
    for name, dim in space.items():
        if dim.kind == "choice":
            grid[name] = list(dim.values)
        elif dim.kind == "int":
            grid[name] = list(range(dim.values[0], dim.values[1] + 1))
        else:
            return None
    return grid
