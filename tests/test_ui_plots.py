"""Server-side downsampling (LTTB) and the figure builders."""
import numpy as np
import plotly.graph_objects as go
import pytest

from ui.downsample import lttb
from ui.plots import dag_graph, metric_figures


def test_lttb_keeps_ends_order_and_size():
    x = np.arange(10_000, dtype=float)
    y = np.sin(x / 300)
    dx, dy = lttb(x, y, 500)
    assert len(dx) == 500 and dx[0] == 0 and dx[-1] == 9_999 and np.all(np.diff(dx) > 0)
    assert np.allclose(dy, np.sin(dx / 300))  # points are taken from the input


def test_lttb_keeps_a_spike_that_a_stride_would_lose():
    x = np.arange(10_000, dtype=float)
    y = np.zeros_like(x)
    y[5_003] = 100.0
    dx, dy = lttb(x, y, 100)
    assert 5_003 in dx and dy.max() == 100.0
    assert 5_003 not in x[::100]


def test_lttb_returns_short_series_unchanged_and_checks_arguments():
    x, y = np.arange(5.0), np.arange(5.0)
    assert lttb(x, y, 10)[0].tolist() == x.tolist()
    with pytest.raises(ValueError, match="at least 3"):
        lttb(x, y, 2)
    with pytest.raises(ValueError, match="differ"):
        lttb(x, y[:3], 3)


def _task(id_, status="not_ran", depends=(), parent=None):
    return {"id": id_, "name": f"t{id_}", "type": "bash", "status": status, "parent_id": parent, "depends": list(depends)}


def test_dag_graph_generations_and_edges():
    tasks = [_task(1, "success"), _task(2, depends=[1]), _task(3, depends=[1]), _task(4, depends=[2, 3])]
    figure = dag_graph(tasks)
    go.Figure(figure)
    xs = {i: x for trace in figure["data"][1:] for i, x in zip(trace["customdata"], trace["x"])}
    assert xs == {1: 0, 2: 1, 3: 1, 4: 2}
    assert figure["data"][0]["x"].count(None) == 4  # four edges


def test_dag_graph_of_an_empty_dag():
    go.Figure(dag_graph([]))


def test_metric_figures_use_webgl_for_long_series():
    series = [{"task_id": 1, "name": "loss", "kind": "batch", "loader": "train", "points": 900,
               "x": list(range(900)), "y": [1.0] * 900},
              {"task_id": 1, "name": "loss", "kind": "epoch", "loader": None, "points": 2, "x": [1, 2], "y": [1.0, None]}]
    figures = metric_figures(series)
    assert [(f["name"], f["kind"]) for f in figures] == [("loss", "batch"), ("loss", "epoch")]
    assert figures[0]["figure"]["data"][0]["type"] == "scattergl" and figures[1]["figure"]["data"][0]["name"] == "all"
    assert figures[1]["figure"]["layout"]["xaxis"]["dtick"] == 1  # whole epochs
    long = metric_figures([{**series[1], "x": list(range(1, 101)), "y": [1.0] * 100}])
    assert long[0]["figure"]["layout"]["xaxis"]["dtick"] == 10
    for f in figures:
        go.Figure(f["figure"])
