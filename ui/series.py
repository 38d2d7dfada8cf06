"""Metric series for the curves, at most ``max_points`` points each whatever their length.

The policy, by the number of stored points ``n`` of a series:

- ``n <= max_points``: every point;
- ``n <= EXACT_FACTOR * max_points``: every point is read and LTTB (:mod:`ui.downsample`) keeps
  ``max_points`` of them, so the curve is drawn through real points, spikes included;
- longer: the database aggregates the series into ``max_points`` step buckets (``GROUP BY``
  loader and bucket number, in SQLite and PostgreSQL alike) and returns each bucket's first step,
  mean, minimum and maximum: the curve is the bucket means with a min–max envelope, so a
  100,000-point series costs one aggregate query instead of 100,000 rows crossing into Python
  (the min/max decimation of e.g. plotly-resampler, with the mean as the line).

``n`` counts the points of a (task, name, kind) over all its loaders, so that it comes from the
``(task_id, name, kind, step)`` index without reading the rows.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.orm import Session

from mlcomp.db import Metric
from ui.downsample import lttb

__all__ = ["EXACT_FACTOR", "metric_series"]

EXACT_FACTOR = 8


def metric_series(session: Session, task_ids: Iterable[int], *, name: str | None = None,
                  kind: str | None = None, max_points: int = 2000) -> list[dict]:
    """Metric series of tasks, one per (task, name, kind, loader), each at most ``max_points``
    points (see the module docstring; the policy is chosen per (task, name, kind) from its number
    of stored points, counted on the ``(task_id, name, kind, step)`` index alone).

    Returns:
        ``[{"task_id", "name", "kind", "loader", "points" (stored), "downsampled" (None, "lttb"
        or "buckets"), "x": [step], "y": [value], and for "buckets" "y_min", "y_max"}]`` ordered by
        task, name, kind, loader (no loader first); non-finite values are ``None``.
    """
    where = [Metric.task_id.in_(list(task_ids))]
    if name:
        where.append(Metric.name == name)
    if kind:
        where.append(Metric.kind == kind)
    group = (Metric.task_id, Metric.name, Metric.kind)
    keys = session.execute(select(*group, func.count(), func.min(Metric.step), func.max(Metric.step))
                           .where(*where).group_by(*group).order_by(*group)).all()
    series = []
    for task_id, name_, kind_, points, lo, hi in keys:
        where_one = (Metric.task_id == task_id, Metric.name == name_, Metric.kind == kind_)
        if points > EXACT_FACTOR * max_points:
            found = _buckets(session, where_one, lo, hi, max_points)
        else:
            found = _exact(session, where_one, max_points)
        for loader in sorted(found, key=lambda loader: (loader is not None, loader or "")):
            series.append({"task_id": task_id, "name": name_, "kind": kind_, "loader": loader, **found[loader]})
    return series


def _values(values) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in np.asarray(values, np.float64).tolist()]


def _exact(session: Session, where, max_points: int) -> dict[str | None, dict]:
    rows = session.execute(select(Metric.loader, Metric.step, Metric.value).where(*where)
                           .order_by(Metric.step, Metric.id)).all()
    by_loader: dict[str | None, list] = {}
    for loader, step, value in rows:
        by_loader.setdefault(loader, []).append((step, value))
    found = {}
    for loader, points in by_loader.items():
        x, y = (np.asarray(column, np.float64) for column in zip(*points))
        downsampled = None
        if len(x) > max_points:
            x, y = lttb(x, y, max_points)
            downsampled = "lttb"
        found[loader] = {"points": len(points), "downsampled": downsampled, "x": x.astype(np.int64).tolist(),
                         "y": _values(y)}
    return found


def _buckets(session: Session, where, lo: int, hi: int, buckets: int) -> dict[str | None, dict]:
    span = hi - lo + 1
    bucket = ((cast(Metric.step, BigInteger) - lo) * buckets // span).label("bucket")
    rows = session.execute(select(Metric.loader, bucket, func.count(), func.min(Metric.step), func.avg(Metric.value),
                                  func.min(Metric.value), func.max(Metric.value))
                           .where(*where).group_by(Metric.loader, bucket).order_by(Metric.loader, bucket)).all()
    by_loader: dict[str | None, list] = {}
    for loader, *values in rows:
        by_loader.setdefault(loader, []).append(values)
    found = {}
    for loader, values in by_loader.items():
        _, counts, steps, means, lows, highs = zip(*values)
        found[loader] = {"points": sum(counts), "downsampled": "buckets", "x": [int(s) for s in steps],
                         "y": _values(means), "y_min": _values(lows), "y_max": _values(highs)}
    return found
