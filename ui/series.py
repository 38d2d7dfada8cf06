"""Metric series for the curves, at most ``max_points`` points each whatever their length.

The policy, per (task, name, kind), from its step span ``hi - lo + 1`` and its stored points:

- span and points within ``EXACT_FACTOR * max_points``: every point is read (one query, in index
  order), and LTTB (:mod:`ui.downsample`) keeps ``max_points`` of a loader's points when it has
  more, so the curve is drawn through real points, spikes included;
- longer: the database aggregates each loader's points into ``max_points`` equal step buckets
  (integer division of the step; PostgreSQL by a ``GROUP BY``, SQLite, which would sort every
  point for it, by one index range per bucket) and returns
  each bucket's first step, mean, minimum and maximum: the curve is the bucket means with a
  min–max envelope, so a 100,000-point series costs one aggregate query instead of 100,000 rows
  crossing into Python (the min/max decimation of e.g. plotly-resampler, with the mean as the
  line). Buckets holding one point each are every point, and are returned as such.

Nothing counts the points beforehand: the (name, kind) pairs of a task are found by a loose index
scan (one index seek per pair, :func:`series_keys`) and a series' step span by two seeks, on the
``(task_id, name, kind, step)`` index; the exact read stops after ``EXACT_FACTOR * max_points + 1``
rows. The values are read from the covering index ``(task_id, name, kind, loader, step, value)``
(``ix_metric_series``), so SQLite never visits the table rows. The cost of a request thus grows
with the points it draws, not with everything the task ever reported.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from sqlalchemy import BigInteger, cast, func, literal, select
from sqlalchemy.orm import Session

from mlcomp.db import Metric
from ui.downsample import lttb
from ui.queries import unix

__all__ = ["EXACT_FACTOR", "X_AXES", "metric_series", "series_keys", "series_marks", "relabel"]

EXACT_FACTOR = 8
X_AXES = ("step", "epoch", "time")


def series_keys(session: Session, task_id: int, *, name: str | None = None,
                kind: str | None = None) -> list[tuple[str, str]]:
    """The distinct ``(name, kind)`` of a task's metrics (optionally of one name or kind), sorted,
    found by loose index scans (a seek per name and per pair, whatever the number of points)."""
    where = [Metric.task_id == task_id]
    if name:
        where.append(Metric.name == name)
    if kind:
        where.append(Metric.kind == kind)
    return [(name_, kind_) for name_ in _loose_scan(session, Metric.name, where)
            for kind_ in _loose_scan(session, Metric.kind, [*where, Metric.name == name_])]


def series_marks(session: Session, task_id: int) -> list[dict]:
    """Where a task's epoch series change stage or attempt (a resume), by epoch step, read from
    its epoch-level points only (one ``GROUP BY``).

    Returns:
        ``[{"step", "kind": "stage" | "resume", "label"}]`` ordered by step: a ``stage`` mark where
        each named stage after the first begins, a ``resume`` mark where each attempt after the first
        reported its first point.
    """
    rows = session.execute(select(Metric.attempt, Metric.stage, func.min(Metric.step).label("first"))
                           .where(Metric.task_id == task_id, Metric.kind == "epoch")
                           .group_by(Metric.attempt, Metric.stage).order_by("first")).all()
    marks, stages, attempts = [], set(), set()
    for attempt, stage, first in rows:
        if stage is not None and stage not in stages and stages:
            marks.append({"step": first, "kind": "stage", "label": stage})
        if attempt not in attempts and attempts:
            marks.append({"step": first, "kind": "resume", "label": f"resumed: attempt {attempt}"})
        stages.update({stage} - {None})
        attempts.add(attempt)
    return marks


def relabel(session: Session, series: list[dict], axis: str) -> None:
    """Replaces each series' ``x`` (steps) in place by its drawn points' ``epoch`` or wall ``time``
    (Unix milliseconds), read for those points only (at most ``max_points`` index seeks per series).
    A batch point's epoch is fractional: epoch ``e``'s points spread over ``[e - 1, e)`` in step
    order, so that its epoch-level value, drawn at ``e``, closes it."""
    if axis == "step":
        return
    for s in series:
        same = Metric.loader.is_(None) if s["loader"] is None else Metric.loader == s["loader"]
        where = (Metric.task_id == s["task_id"], Metric.name == s["name"], Metric.kind == s["kind"], same)
        found: dict[int, tuple] = {}
        for start in range(0, len(s["x"]), 500):
            found.update((step, (epoch, when)) for step, epoch, when in session.execute(
                select(Metric.step, Metric.epoch, Metric.time).where(*where, Metric.step.in_(s["x"][start:start + 500]))))
        if axis == "time":
            s["x"] = [round(unix(found[x][1], 0.0) * 1000) for x in s["x"]]
        elif s["kind"] == "batch":
            s["x"] = _fractional_epochs(s["x"], [found[x][0] for x in s["x"]])


def _fractional_epochs(steps: list[int], epochs: list[int | None]) -> list[float]:
    spans: dict = {}
    for step, epoch in zip(steps, epochs):
        lo, hi = spans.get(epoch, (step, step))
        spans[epoch] = (min(lo, step), max(hi, step))
    return [step if epoch is None else epoch - 1 + (step - spans[epoch][0]) / (spans[epoch][1] - spans[epoch][0] + 1)
            for step, epoch in zip(steps, epochs)]


def metric_series(session: Session, task_ids: Iterable[int], *, name: str | None = None,
                  kind: str | None = None, max_points: int = 2000) -> list[dict]:
    """Metric series of tasks, one per (task, name, kind, loader), each at most ``max_points``
    points (see the module docstring for the policy, chosen per (task, name, kind)).

    Returns:
        ``[{"task_id", "name", "kind", "loader", "points" (stored), "downsampled" (None, "lttb"
        or "buckets"), "x": [step], "y": [value], and for "buckets" "y_min", "y_max"}]`` ordered by
        task, name, kind, loader (no loader first); non-finite values are ``None``.
    """
    series = []
    for task_id in sorted(set(task_ids)):
        for name_, kind_ in series_keys(session, task_id, name=name, kind=kind):
            found = _series(session, (Metric.task_id == task_id, Metric.name == name_, Metric.kind == kind_),
                            max_points)
            for loader in sorted(found, key=lambda loader: (loader is not None, loader or "")):
                series.append({"task_id": task_id, "name": name_, "kind": kind_, "loader": loader,
                               **found[loader]})
    return series


def _series(session: Session, where, max_points: int) -> dict[str | None, dict]:
    """One (task, name, kind)'s series by loader: exact (LTTB past ``max_points``) or buckets."""
    limit = EXACT_FACTOR * max_points
    lo = session.scalar(select(func.min(Metric.step)).where(*where))
    hi = session.scalar(select(func.max(Metric.step)).where(*where))
    if hi - lo + 1 <= limit:
        rows = session.execute(select(Metric.loader, Metric.step, Metric.value).where(*where)
                               .order_by(Metric.loader, Metric.step, Metric.id).limit(limit + 1)).all()
        if len(rows) <= limit:
            return _exact(rows, max_points)
    return _buckets(session, where, lo, hi, max_points)


def _values(values) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in np.asarray(values, np.float64).tolist()]


def _exact(rows, max_points: int) -> dict[str | None, dict]:
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
    """Each loader's points in ``buckets`` equal step ranges of ``[lo, hi]``: bucket ``i`` holds
    the steps ``s`` with ``(s - lo) * buckets // (hi - lo + 1) == i``."""
    rows = (_ranged_rows if session.get_bind().dialect.name == "sqlite" else _grouped_rows)(
        session, where, lo, hi, buckets)
    by_loader: dict[str | None, list] = {}
    for loader, *values in rows:
        by_loader.setdefault(loader, []).append(values)
    found = {}
    for loader, values in by_loader.items():
        counts, steps, means, lows, highs = zip(*values)
        found[loader] = {"points": sum(counts), "downsampled": "buckets", "x": [int(s) for s in steps],
                         "y": _values(means), "y_min": _values(lows), "y_max": _values(highs)}
        if max(counts) == 1:  # a sparse series: every bucket is one real point
            found[loader] = {"points": len(counts), "downsampled": None, "x": found[loader]["x"],
                             "y": found[loader]["y"]}
    return found


def _grouped_rows(session: Session, where, lo: int, hi: int, buckets: int) -> list[tuple]:
    """``[(loader, count, first step, mean, min, max)]`` of the non-empty buckets, ordered by
    loader and bucket, by one ``GROUP BY`` (PostgreSQL hashes it)."""
    bucket = ((cast(Metric.step, BigInteger) - lo) * buckets // (hi - lo + 1)).label("bucket")
    rows = session.execute(select(Metric.loader, bucket, func.count(), func.min(Metric.step), func.avg(Metric.value),
                                  func.min(Metric.value), func.max(Metric.value))
                           .where(*where).group_by(Metric.loader, bucket).order_by(Metric.loader, bucket))
    return [(loader, *values) for loader, _, *values in rows]


def _ranged_rows(session: Session, where, lo: int, hi: int, buckets: int) -> list[tuple]:
    """:func:`_grouped_rows` for SQLite, which would sort every point for the ``GROUP BY``: per
    loader, a recursive CTE counts the buckets and a correlated subquery aggregates each one's
    step range from the covering index (a seek and a short scan in step order, no sort), handing
    its five aggregates back as one string (17 significant digits: floats survive exactly)."""
    span = hi - lo + 1
    number = select(literal(0).label("i")).cte("bucket", recursive=True)
    number = number.union_all(select(number.c.i + 1).where(number.c.i < buckets - 1))

    def start(i):  # the first step of bucket i: lo + ceil(i * span / buckets)
        return lo + (i * span + buckets - 1) // buckets

    rows = []
    for loader in _loaders(session, where):
        same = Metric.loader.is_(None) if loader is None else Metric.loader == loader
        aggregates = (select(func.printf("%d %d %!.17g %!.17g %!.17g", func.count(), func.min(Metric.step),
                                         func.avg(Metric.value), func.min(Metric.value), func.max(Metric.value)))
                      .where(*where, same, Metric.step >= start(number.c.i), Metric.step < start(number.c.i + 1))
                      .scalar_subquery())
        texts = session.scalars(select(aggregates).select_from(number).order_by(number.c.i)).all()
        table = np.array(" ".join(texts).split(), np.float64).reshape(-1, 5)  # count step mean min max
        rows.extend((loader, int(count), int(step), *values)
                    for count, step, *values in table[table[:, 0] > 0].tolist())
    return rows


def _loaders(session: Session, where) -> list[str | None]:
    """The loaders of a (task, name, kind), no loader first, by index seeks."""
    unnamed = session.scalar(select(Metric.id).where(*where, Metric.loader.is_(None)).limit(1)) is not None
    return [None] * unnamed + _loose_scan(session, Metric.loader, where)


def _loose_scan(session: Session, column, where) -> list:
    """The distinct non-NULL values of ``column`` among the rows ``where``, sorted, by a loose
    index scan: one ``ORDER BY column LIMIT 1`` seek past the previous value per value, so the
    cost grows with the number of values, not of rows (SQLite has no skip scan for ``DISTINCT``;
    one column at a time, as SQLite seeks a row-value ``(a, b) > (x, y)`` on ``a`` alone)."""
    found: list = []
    query = select(column).where(*where, column.is_not(None)).order_by(column).limit(1)
    while (value := session.scalar(query.where(column > found[-1]) if found else query)) is not None:
        found.append(value)
    return found
