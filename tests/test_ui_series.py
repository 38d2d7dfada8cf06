"""Metric series at any length: every point, LTTB over real points, or SQL buckets with a
min–max envelope; the same on SQLite and PostgreSQL."""
import math

import numpy as np
import plotly.graph_objects as go
import pytest

from mlcomp.db import Dag, Metric, Project, Task
from ui.plots import metric_figures
from ui.series import EXACT_FACTOR, metric_series


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
