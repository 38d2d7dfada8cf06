"""The median stopping rule (Golovin et al., "Google Vizier: A Service for Black-Box
Optimization", KDD 2017, section 3.2.2), as a pure function.

A trial is stopped after epoch ``e`` when its best value over epochs ``1..e`` is strictly worse
than the median of the other trials' running averages over their epochs ``1..e`` (only the trials
that have reported epoch ``e`` count). Like Optuna's ``MedianPruner``, nothing is stopped before
``grace_epochs`` epochs, nor when no other trial has reached epoch ``e``.
"""
from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

__all__ = ["median_stop"]


def median_stop(history: Sequence[float], others: Iterable[Sequence[float]], minimize: bool,
                grace_epochs: int = 1) -> bool:
    """Whether to stop a trial whose metric at epochs ``1..e`` is ``history`` (``e = len(history)``).

    Args:
        others: the other trials' metric values by epoch, from epoch 1.
        minimize: lower values are better.
        grace_epochs: the fewest epochs a trial trains before it can be stopped.
    """
    epoch = len(history)
    if epoch < max(1, grace_epochs):
        return False
    averages = [sum(values[:epoch]) / epoch for values in others if len(values) >= epoch]
    averages = [a for a in averages if not math.isnan(a)]
    clean = [v for v in history if not math.isnan(v)]
    if not averages:
        return False
    if not clean:
        return True
    median = statistics.median(averages)
    best = min(clean) if minimize else max(clean)
    return best > median if minimize else best < median
