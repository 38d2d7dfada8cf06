"""Asynchronous successive halving (ASHA), promotion-based: pure bookkeeping over rung records.

From Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020), Algorithm 2:
rungs sit at ``grace_epochs · η^k`` epochs up to ``max_epochs`` (the last rung is ``max_epochs``
itself). Whenever a worker is free, ``get_job`` looks at the rungs from the second highest down and
promotes a trial that is in the top ``⌊n_k / η⌋`` of rung k (``n_k`` trials recorded there) and
has not been promoted yet; when there is none, it starts a new trial at rung 0.

In mlcomp a trial that reaches a rung is *paused* (full checkpoint, process ends), so "not promoted
yet" is "paused at rung k", and a promotion resumes it exactly from its checkpoint up to rung k+1.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Collection, Iterable

__all__ = ["RungRecord", "rung_epochs", "promotion", "rank_key"]


@dataclasses.dataclass(frozen=True)
class RungRecord:
    """Trial ``trial`` reached rung ``rung`` (an index into :func:`rung_epochs`) with ``value``."""

    trial: int
    rung: int
    value: float


def rung_epochs(grace_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """The epochs of the rungs: ``grace · η^k`` below ``max_epochs``, then ``max_epochs``.

    >>> rung_epochs(1, 3, 9)
    [1, 3, 9]
    >>> rung_epochs(2, 2, 10)
    [2, 4, 8, 10]

    Raises:
        ValueError: ``grace_epochs`` < 1, ``reduction_factor`` < 2 or ``max_epochs`` < ``grace_epochs``.
    """
    if grace_epochs < 1 or reduction_factor < 2 or max_epochs < grace_epochs:
        raise ValueError(f"need 1 <= grace_epochs ({grace_epochs}) <= max_epochs ({max_epochs}) and "
                         f"reduction_factor ({reduction_factor}) >= 2")
    epochs, epoch = [], grace_epochs
    while epoch < max_epochs:
        epochs.append(epoch)
        epoch *= reduction_factor
    return epochs + [max_epochs]


def rank_key(value: float, trial: int, minimize: bool) -> tuple:
    """Sort key putting better values first (NaN last), ties broken by the lower trial number."""
    bad = value is None or math.isnan(value)
    return (bad, 0.0 if bad else (value if minimize else -value), trial)


def promotion(records: Iterable[RungRecord], paused: Collection[int], reduction_factor: int, top: int,
              minimize: bool) -> tuple[int, int] | None:
    """The trial to promote and the rung it goes to, or None (start a new trial instead).

    Args:
        records: every rung record of the search.
        paused: the paused trials; one may be promoted from its highest recorded rung only.
        reduction_factor: η.
        top: the index of the last rung (``max_epochs``); nothing is promoted from it.
        minimize: lower values are better.

    Returns:
        ``(trial, k + 1)`` for the best paused trial within the top ``⌊n_k / η⌋`` of the highest
        rung k that has one.
    """
    rungs: dict[int, list[RungRecord]] = defaultdict(list)
    highest: dict[int, int] = {}
    for record in records:
        rungs[record.rung].append(record)
        highest[record.trial] = max(record.rung, highest.get(record.trial, -1))
    for k in range(top - 1, -1, -1):
        ranked = sorted(rungs[k], key=lambda r: rank_key(r.value, r.trial, minimize))
        for record in ranked[:len(ranked) // reduction_factor]:
            if record.trial in paused and highest[record.trial] == k:  # not promoted from k yet
                return record.trial, k + 1
    return None
