"""Plotly figures as JSON-able dicts (the figure schema of plotly.js), built without plotly's
Python validation so that large figures cost nothing extra; the tests check each against
``plotly.graph_objects.Figure``.

- :func:`dag_graph`: tasks laid out by topological generation (``networkx.topological_generations``),
  left to right, coloured by status; a grid search is one node labelled with its cell count.
- :func:`metric_figures`: one figure per metric (and kind), one line per loader (per task and loader
  when comparing: a colour per run, a dash per loader); :func:`scalar_values` the one-point ones.
- :func:`parallel_coordinates`: a grid search's parameters against its metric.
- :func:`resource_figures`: CPU, RAM and GPU use over wall time.
- :func:`search_curves`: a search's metric against epochs, one line per trial, the best marked.
- :func:`gpu_hours`: each project's GPU-hours per hour or day, stacked bars.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from typing import Any

import networkx as nx

__all__ = ["STATUS_COLORS", "dag_graph", "metric_figures", "scalar_values", "parallel_coordinates", "resource_figures",
           "search_curves", "gpu_hours"]

STATUS_COLORS = {
    "not_ran": "#9e9e9e", "queued": "#8e7cc3", "in_progress": "#1e88e5", "stopping": "#fb8c00",
    "success": "#43a047", "failed": "#e53935", "stopped": "#6d4c41", "skipped": "#cfd8dc",
    "paused": "#00897b", "pruned": "#b0bec5",
}
_LAYOUT = {"margin": {"l": 40, "r": 20, "t": 30, "b": 40},
           "paper_bgcolor": "white", "plot_bgcolor": "white"}


def _graph(tasks: list[dict]) -> tuple[nx.DiGraph, dict[int, int]]:
    """The DAG's graph with each grid cell folded into its parent; also the cell counts (those
    of the cells among ``tasks``, or a parent's ``cell_count`` when it has one)."""
    cells = Counter(t["parent_id"] for t in tasks if t["parent_id"] is not None)
    for t in tasks:
        if t.get("cell_count"):
            cells[t["id"]] = t["cell_count"]
    ids = {t["id"] for t in tasks}
    owner = {t["id"]: (t["parent_id"] if t["parent_id"] in ids else t["id"]) for t in tasks}
    graph = nx.DiGraph()
    graph.add_nodes_from(t["id"] for t in tasks if owner[t["id"]] == t["id"])
    for t in tasks:
        for dep in t["depends"]:
            if dep in owner and owner[dep] != owner[t["id"]]:
                graph.add_edge(owner[dep], owner[t["id"]])
    return graph, dict(cells)


def dag_graph(tasks: list[dict]) -> dict[str, Any]:
    """The DAG drawn as a plotly figure.

    Args:
        tasks: :func:`ui.queries.dag_tasks` rows (``id``, ``name``, ``type``, ``status``,
            ``parent_id``, ``depends``, a parent's ``cell_count``); cells among them are folded
            into their parent (a cell depends on what its parent depends on).

    Returns:
        a figure dict: one line trace for the edges, one marker trace per status (its legend entry);
        each node's ``customdata`` is its task id (the page opens the task on click).
    """
    graph, cells = _graph(tasks)
    by_id = {t["id"]: t for t in tasks}
    position: dict[int, tuple[float, float]] = {}
    for x, generation in enumerate(nx.topological_generations(graph)):
        for y, node in enumerate(sorted(generation)):
            position[node] = (x, -(y - (len(generation) - 1) / 2))
    edge_x: list = []
    edge_y: list = []
    for a, b in graph.edges:
        edge_x += [position[a][0], position[b][0], None]
        edge_y += [position[a][1], position[b][1], None]
    data: list[dict] = [{"type": "scatter", "mode": "lines", "x": edge_x, "y": edge_y, "hoverinfo": "skip",
                         "line": {"color": "#b0bec5", "width": 2}, "showlegend": False}]
    groups: dict[str, list[int]] = defaultdict(list)
    for node in sorted(graph.nodes):
        groups[by_id[node]["status"]].append(node)
    for status, nodes in groups.items():
        labels = [by_id[n]["name"] + (f" ({cells[n]} cells)" if n in cells else "") for n in nodes]
        data.append({
            "type": "scatter", "mode": "markers+text", "name": status,
            "x": [position[n][0] for n in nodes], "y": [position[n][1] for n in nodes],
            "text": labels, "textposition": "top center", "customdata": nodes,
            "hovertext": [f"#{n} {by_id[n]['type']}: {label}" for n, label in zip(nodes, labels)],
            "hoverinfo": "text",
            "marker": {"size": [26 if n in cells else 18 for n in nodes], "color": STATUS_COLORS.get(status),
                       "symbol": ["square" if n in cells else "circle" for n in nodes],
                       "line": {"color": "#37474f", "width": 1}},
        })
    hidden = {"visible": False, "zeroline": False, "showgrid": False}
    layout = {**_LAYOUT, "margin": {"l": 20, "r": 20, "t": 50, "b": 20}, "xaxis": {**hidden, "range": _padded([p[0] for p in position.values()])},
              "yaxis": hidden, "height": 160 + 60 * max((len(g) for g in _generations(graph)), default=1),
              "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}, "clickmode": "event"}
    return {"data": data, "layout": layout}


def _generations(graph: nx.DiGraph) -> list[list]:
    return [list(g) for g in nx.topological_generations(graph)]


def _padded(values: list[float]) -> list[float]:
    if not values:
        return [-1, 1]
    return [min(values) - 0.5, max(values) + 0.5]


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


DASHES = {"train": "solid", "valid": "dash"}


def _traces(s: dict, label: str, colour: str, dash: str = "solid", axis: str = "step") -> list[dict]:
    """The line of one series; a bucketed series (:mod:`ui.series`) also gets its min–max band."""
    line = {
        "type": "scattergl" if len(s["x"]) > 500 else "scatter",
        "mode": "lines" if s["kind"] == "batch" else "lines+markers",
        "name": label, "legendgroup": label, "x": s["x"], "y": s["y"], "line": {"color": colour, "dash": dash},
        "hovertemplate": f"{label} {axis} %{{x}}: %{{y:.5g}}<extra></extra>",
    }
    if "y_min" not in s:
        return [line]
    band = {"type": "scatter", "mode": "lines", "x": s["x"], "line": {"width": 0}, "legendgroup": label,
            "showlegend": False, "hoverinfo": "skip"}
    return [{**band, "y": s["y_min"]},
            {**band, "y": s["y_max"], "fill": "tonexty", "fillcolor": _rgba(colour, 0.2)}, line]


def _scalar_keys(series: list[dict]) -> set[tuple[str, str]]:
    """The (name, kind) whose every series is one point: results (test, infer), not curves."""
    points: dict[tuple[str, str], int] = defaultdict(int)
    for s in series:
        points[s["name"], s["kind"]] = max(points[s["name"], s["kind"]], len(s["x"]))
    return {key for key, n in points.items() if n <= 1}


def scalar_values(series: list[dict], labels: dict[int, str] | None = None) -> list[dict]:
    """The one-point series (see :func:`metric_figures`) as values: ``[{"name", "kind", "label",
    "value"}]``, labelled by loader (and run, with ``labels``)."""
    keys = _scalar_keys(series)
    return [{"name": s["name"], "kind": s["kind"], "value": s["y"][0] if s["y"] else None,
             "label": (f"{labels[s['task_id']]} · " if labels else "") + (s["loader"] or "all")}
            for s in series if (s["name"], s["kind"]) in keys]


def metric_figures(series: list[dict], *, labels: dict[int, str] | None = None,
                   marks: list[dict] | None = None, axis: str = "step") -> list[dict]:
    """One figure per (metric name, kind) with more than one point (one-point series are
    :func:`scalar_values`), one line per loader (bucketed series with their min–max band).

    Args:
        series: :func:`ui.series.metric_series` rows.
        labels: comparing runs: a name per task id (its differing hyper-parameters); a task has one
            colour across every figure (by its place in ``labels``) and its loaders a dash each
            (train solid, valid dashed, others dotted). None: one task, one colour per loader.
        marks: the one task's stage boundaries and resume points (:func:`ui.series.series_marks`),
            drawn as labelled vertical lines on its epoch figures (not on a wall-time axis).
        axis: what ``x`` holds (:func:`ui.series.relabel`): ``step``, ``epoch`` or ``time``
            (Unix milliseconds, drawn as dates).

    Returns:
        ``[{"name", "kind", "figure"}]`` in the order of the series; ``layout.meta`` is
        ``"metric"`` (the page's smoothing and log-axis settings apply).
    """
    scalars = _scalar_keys(series)
    colours = {task_id: PALETTE[i % len(PALETTE)] for i, task_id in enumerate(labels or {})}
    figures: dict[tuple[str, str], list[dict]] = {}
    for s in series:
        if (s["name"], s["kind"]) in scalars:
            continue
        loader = s["loader"] or "all"
        traces = figures.setdefault((s["name"], s["kind"]), [])
        if labels:
            traces.extend(_traces(s, f"{labels[s['task_id']]} · {loader}", colours[s["task_id"]],
                                  DASHES.get(loader, "dot"), axis))
        else:
            colour = PALETTE[sum(1 for t in traces if "hovertemplate" in t) % len(PALETTE)]
            traces.extend(_traces(s, loader, colour, axis=axis))
    return [{"name": name, "kind": kind, "figure": {"data": traces, "layout": {
        **_LAYOUT, "meta": "metric", "title": {"text": f"{name} ({kind})"}, "height": 320,
        "xaxis": _x_axis(kind, traces, axis), "yaxis": {"title": {"text": name}},
        **(_marks(marks) if marks and kind == "epoch" and axis != "time" else {})}}}
        for (name, kind), traces in figures.items()]


def _marks(marks: list[dict]) -> dict:
    """Vertical lines (``shapes``) and their labels (``annotations``) at stage boundaries (grey)
    and resume points (orange)."""
    colour = {"stage": "#90a4ae", "resume": "#fb8c00"}
    return {"shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": m["step"], "x1": m["step"], "y0": 0,
                        "y1": 1, "line": {"color": colour[m["kind"]], "dash": "dot", "width": 1}} for m in marks],
            "annotations": [{"xref": "x", "yref": "paper", "x": m["step"], "y": 1, "yanchor": "bottom",
                             "text": m["label"], "showarrow": False, "font": {"size": 10, "color": colour[m["kind"]]}}
                            for m in marks]}


def _x_axis(kind: str, traces: list[dict], axis: str) -> dict:
    """The x axis: wall time, steps, or epochs with whole-number ticks (at most about 10)."""
    if axis == "time":
        return {"title": {"text": "wall time"}, "type": "date"}
    if kind != "epoch" and axis == "step":
        return {"title": {"text": "step"}}
    last = max((x for t in traces for x in t["x"]), default=1)
    return {"title": {"text": "epoch"}, "tick0": 0, "dtick": max(1, math.ceil(last / 10)), "tickformat": "d"}


def _dimension(label: str, values: list) -> dict:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
    if numeric:
        return {"label": label, "values": [v for v in values]}
    levels = sorted({str(v) for v in values})
    index = {v: i for i, v in enumerate(levels)}
    return {"label": label, "values": [index[str(v)] for v in values],
            "tickvals": list(range(len(levels))), "ticktext": levels}


def parallel_coordinates(board: dict) -> dict[str, Any]:
    """A grid search's parameters (one axis each; strings become categorical axes) and its metric
    (the last axis, also the line colour), from :func:`ui.queries.grid_leaderboard`. Cells without a
    value are left out."""
    cells = [c for c in board["cells"] if c["value"] is not None]
    dims = [_dimension(p, [c["params"].get(p) for c in cells]) for p in board["params"]]
    values = [c["value"] for c in cells]
    metric = board["metric"] or "metric"
    dims.append({"label": metric, "values": values})
    line = {"color": values, "colorscale": "Viridis", "showscale": True,
            "reversescale": bool(board["minimize"])}
    return {"data": [{"type": "parcoords", "dimensions": dims, "line": line}],
            "layout": {**_LAYOUT, "height": 420, "margin": {"l": 60, "r": 60, "t": 50, "b": 30}}}


def resource_figures(series: list[dict]) -> list[dict]:
    """Two figures over wall time from :func:`mlcomp.worker.resources.resource_history` rows:
    utilization (%) and memory (GiB) of the computer's CPU and RAM (or the task's processes) and
    of each GPU; a GPU's hover names the task holding it.

    Returns:
        ``[{"name": "utilization" | "memory", "kind": "resources", "figure"}]``.
    """
    labels = {"cpu": "CPU / RAM", "task": "task processes"}
    figures = []
    for name, key, unit, scale in (("utilization", "utilization", "%", 1.0), ("memory", "memory", "GiB", 2.0 ** -30)):
        traces = []
        for i, s in enumerate(series):
            label = labels.get(s["source"], f"GPU {s['gpu']}")
            holders = [f"task {t}" if t is not None else "free" for t in s["task_id"]]
            traces.append({
                "type": "scatter", "mode": "lines", "name": label, "x": [t * 1000 for t in s["x"]],
                "y": [None if v is None else round(v * scale, 3) for v in s[key]],
                "line": {"color": PALETTE[i % len(PALETTE)], "width": 1.5},
                "customdata": holders if s["gpu"] is not None else None,
                "hovertemplate": f"{label}: %{{y:.4g}} {unit}"
                                 + (" (%{customdata})" if s["gpu"] is not None else "") + "<extra></extra>"})
        figures.append({"name": name, "kind": "resources", "figure": {"data": traces, "layout": {
            **_LAYOUT, "title": {"text": f"{name} ({unit})"}, "height": 260, "uirevision": name,
            "xaxis": {"type": "date"}, "yaxis": {"title": {"text": unit}, "rangemode": "tozero"},
            "legend": {"orientation": "h"}}}})
    return figures


def search_curves(trials: list[dict], curves: dict[int, dict[int, float]], metric: str) -> dict[str, Any]:
    """A search's metric against the epoch, every trial on one plot: a line per trial coloured by
    its status (pruned and paused trials end where they stopped, with a marker), the best trial
    drawn thick with a star at its end.

    Args:
        trials: :func:`mlcomp.search.board.leaderboard` rows.
        curves: each trial's metric by epoch (task id → {epoch: value}).
    """
    data = []
    for row in trials:
        curve = curves.get(row["task_id"], {})
        epochs = sorted(curve)
        symbols = ["circle"] * max(len(epochs) - 1, 0) + ["star" if row["best"] else "x"] if epochs else []
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"trial {row['number']} ({row['status']})",
                     "x": epochs, "y": [curve[e] for e in epochs], "customdata": [row["task_id"]] * len(epochs),
                     "line": {"color": STATUS_COLORS.get(row["status"], "#000"), "width": 4 if row["best"] else 1.5},
                     "marker": {"symbol": symbols, "size": [4] * max(len(epochs) - 1, 0) + [14 if row["best"] else 8]}})
    return {"data": data, "layout": {**_LAYOUT, "height": 420, "xaxis": {"title": {"text": "epoch"}, "dtick": 1},
                                     "yaxis": {"title": {"text": metric}}, "showlegend": True}}


def gpu_hours(usage: dict) -> dict[str, Any]:
    """Each project's GPU-hours per bucket as stacked bars over wall time, from
    :meth:`mlcomp.usage.Usage.as_dict` (a bar spans its bucket: an hour or a day)."""
    width = usage["bucket"] * 1000
    x = [dt.datetime.fromisoformat(start).timestamp() * 1000 for start in usage["buckets"]]
    data = [{"type": "bar", "name": project, "x": x, "y": [round(h, 3) for h in hours], "width": width, "offset": 0,
             "marker": {"color": PALETTE[i % len(PALETTE)]},
             "hovertemplate": "%{fullData.name}: %{y:.3g} GPU-hours<extra></extra>"}
            for i, (project, hours) in enumerate(usage["projects"].items())]
    unit = "hour" if usage["bucket"] == 3600 else "day"
    return {"data": data, "layout": {
        **_LAYOUT, "barmode": "stack", "height": 300, "showlegend": True, "legend": {"orientation": "h"},
        "title": {"text": f"GPU-hours per project and {unit}, last {usage['window']}"},
        "xaxis": {"type": "date", "range": [x[0], x[-1] + width]},
        "yaxis": {"title": {"text": "GPU-hours"}, "rangemode": "tozero"}}}
