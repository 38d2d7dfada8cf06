"""Metric series at any length: every point, LTTB over real points, or SQL buckets with a
min–max envelope; the same on SQLite and PostgreSQL."""
import math

import numpy as np
import plotly.graph_objects as go
import pytest
from sqlalchemy import event

from mlcomp.db import Dag, Metric, Project, Task
from ui.plots import metric_figures
from ui import series
from ui.series import EXACT_FACTOR, metric_series, series_keys


def _task_with_series(sessionmaker, points: int) -> tuple[int, np.ndarray]:
    values = np.array([math.sin(i / 50) + (5.0 if i == points // 3 else 0.0) for i in range(points)])
    with sessionmaker.begin() as session:
        dag = Dag(name="d", project=Project(name="p"), config="")
        task = Task(dag=dag, name="t", type="bash")
        session.add(task)
        session.flush()
        session.execute(Metric.__table__.insert(), [
            {"task_id": task.id, "name": "loss", "loader": "train", "kind": "batch", "step": 10 + i, "value": v}
            for i, v in enumerate(values)] + [
            {"task_id": task.id, "name": "loss", "loader": None, "kind": "epoch", "step": 1, "value": float("inf")}])
        return task.id, values


@pytest.mark.parametrize("points, mode", [(50, None), (400, "lttb"), (EXACT_FACTOR * 100 + 1, "buckets")])
def test_series_modes(any_store, points, mode):
    task_id, values = _task_with_series(any_store, points)
    with any_store() as session:
        batch, epoch = metric_series(session, [task_id], max_points=100)
    assert (batch["kind"], batch["points"], batch["downsampled"]) == ("batch", points, mode)
    assert len(batch["x"]) <= 100 and batch["x"][0] == 10 and batch["x"] == sorted(batch["x"])
    top = values.max()
    if mode == "buckets":
        assert max(batch["y_max"]) == pytest.approx(top)  # the spike survives in the envelope
        assert min(batch["y_min"]) == pytest.approx(values.min())
        assert all(lo <= y <= hi for lo, y, hi in zip(batch["y_min"], batch["y"], batch["y_max"]))
        assert np.mean(batch["y"]) == pytest.approx(values.mean(), abs=0.05)
    else:
        assert max(batch["y"]) == pytest.approx(top) and batch["x"][-1] == 10 + points - 1
    assert (epoch["loader"], epoch["y"]) == (None, [None])  # inf is not JSON


def test_bucketed_series_draws_a_band_under_its_line(store):
    task_id, _ = _task_with_series(store, EXACT_FACTOR * 100 + 1)
    with store() as session:
        [figure] = metric_figures(metric_series(session, [task_id], kind="batch", max_points=100))
    go.Figure(figure["figure"])
    lower, upper, line = figure["figure"]["data"]
    assert upper["fill"] == "tonexty" and line["name"] == "train" and not upper["showlegend"]


def _task_with_points(sessionmaker, points: list[tuple]) -> int:
    """A task with metric rows ``(name, kind, loader, step, value)``."""
    with sessionmaker.begin() as session:
        task = Task(dag=Dag(name="d", project=Project(name="p"), config=""), name="t", type="bash")
        session.add(task)
        session.flush()
        session.execute(Metric.__table__.insert(), [
            {"task_id": task.id, "name": n, "kind": k, "loader": l, "step": s, "value": v} for n, k, l, s, v in points])
        return task.id


def test_sqlite_ranged_buckets_equal_the_group_by(store):
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(5000, 1500, replace=False)) + 7  # gaps, an odd start
    points = [("loss", "batch", loader, int(s), float(rng.normal())) for loader in (None, "train", "valid")
              for s in steps] + [("loss", "batch", "train", int(steps[3]), 9.5)]  # a repeated step
    task_id = _task_with_points(store, points)
    where = (Metric.task_id == task_id, Metric.name == "loss", Metric.kind == "batch")
    lo, hi = int(steps.min()), int(steps.max())
    with store() as session:
        for buckets in (7, 100, 1000, 6000):  # more buckets than steps: empty ones are left out
            ranged = series._ranged_rows(session, where, lo, hi, buckets)
            assert ranged == series._grouped_rows(session, where, lo, hi, buckets)
    assert [row[0] for row in ranged[:1]] == [None] and sum(row[1] for row in ranged) == len(points)


def test_sparse_series_over_a_long_span_is_every_point(store):
    task_id = _task_with_points(store, [("loss", "batch", "train", 10_000 * i, float(i)) for i in range(50)])
    with store() as session:
        [found] = metric_series(session, [task_id], max_points=100)
    assert found["downsampled"] is None and found["points"] == 50 and "y_min" not in found
    assert found["x"] == [10_000 * i for i in range(50)] and found["y"] == [float(i) for i in range(50)]


def test_many_points_on_a_short_span_fall_back_to_buckets(any_store):
    # resumed attempts may report a step again: the span is short, the points are many
    task_id = _task_with_points(any_store, [("loss", "batch", "train", i % 50, float(i)) for i in range(2000)])
    with any_store() as session:
        [found] = metric_series(session, [task_id], max_points=100)
    assert found["downsampled"] == "buckets" and found["points"] == 2000 and len(found["x"]) == 50
    assert min(found["y_min"]) == 0.0 and max(found["y_max"]) == 1999.0


def test_series_keys_are_distinct_name_kind_pairs(any_store):
    task_id = _task_with_points(any_store, [(n, k, l, s, 1.0) for n in ("b", "a") for k in ("epoch", "batch")
                                            for l in ("train", None) for s in range(3)])
    with any_store() as session:
        assert series_keys(session, task_id) == [("a", "batch"), ("a", "epoch"), ("b", "batch"), ("b", "epoch")]
        assert series_keys(session, task_id, kind="epoch") == [("a", "epoch"), ("b", "epoch")]
        assert series_keys(session, task_id, name="b", kind="batch") == [("b", "batch")]
        assert series_keys(session, task_id + 1) == []


def test_a_long_series_is_read_from_the_covering_index_without_sorting(store):
    """The metric endpoint's speed rests on these plans: no table visit, no full scan, no sort of
    the points (only the 100 bucket rows are ordered)."""
    task_id, _ = _task_with_series(store, EXACT_FACTOR * 100 + 1)
    statements = []
    engine = store.kw["bind"]
    listen = lambda conn, cursor, statement, params, context, many: statements.append((statement, params))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        with store() as session:
            assert metric_series(session, [task_id], kind="batch", max_points=100)[0]["downsampled"] == "buckets"
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    with engine.connect() as conn:
        plans = [" | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in statements if "metric" in sql]
    assert plans and not [p for p in plans if "SCAN metric" in p or "B-TREE FOR GROUP BY" in p], plans
    assert any("COVERING INDEX ix_metric_series" in p for p in plans), plans
