"""Comparing runs: several tasks' curves overlaid, one figure per metric."""
import plotly.graph_objects as go
import pytest

from ui_fill import ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def test_compare_names_runs_by_their_differing_parameters_one_colour_each(ro_client, ro_filled):
    ids = ",".join(map(str, ro_filled.cells[:2]))
    body = ro_client.get(f"/api/compare?tasks={ids}").get_json()
    assert [t["id"] for t in body["tasks"]] == ro_filled.cells[:2]
    assert [t["label"] for t in body["tasks"]] == ["lr=0.1 model=m0 · digits#1", "lr=0.01 model=m1 · digits#1"]
    lines = {}
    for figure in body["figures"]:
        go.Figure(figure["figure"])
        for trace in figure["figure"]["data"]:
            lines.setdefault(trace["name"], set()).add((trace["line"]["color"], trace["line"]["dash"]))
    a, b = (t["label"] for t in body["tasks"])
    assert sorted(lines) == sorted(f"{run} · {loader}" for run in (a, b) for loader in ("train", "valid"))
    colour = {run: {c for name, styles in lines.items() if name.startswith(run) for c, _ in styles} for run in (a, b)}
    assert len(colour[a]) == len(colour[b]) == 1 and colour[a] != colour[b]  # one colour per run, in every figure
    assert lines[f"{a} · train"] == {(colour[a].pop(), "solid")} and {d for _, d in lines[f"{a} · valid"]} == {"dash"}


def test_compare_summary_has_best_and_final_values(ro_client, ro_filled):
    body = ro_client.get(f"/api/compare?tasks={ro_filled.cells[0]}&name=loss").get_json()
    [series] = [s for s in body["series"] if s["loader"] == "valid"]
    [row] = [r for r in body["summary"] if r["loader"] == "valid"]
    assert row["minimize"] and row["best"] == min(series["y"]) and row["final"] == series["y"][-1]
    html = ro_client.get(f"/compare?tasks={ro_filled.cells[0]}").get_data(as_text=True)
    assert 'class="summary sortable"' in html


def test_compare_picks_the_runs_of_dags(ro_client, ro_filled):
    body = ro_client.get(f"/api/compare?dags={ro_filled.dag}").get_json()
    ids = [t["id"] for t in body["tasks"]]
    assert ro_filled.train in ids and set(ro_filled.cells) <= set(ids) and ro_filled.prepare not in ids
    assert ro_client.get("/api/compare?dags=987654").status_code == 404


def test_compare_batch_level_and_repeated_ids(ro_client, ro_filled):
    body = ro_client.get(f"/api/compare?tasks={ro_filled.train}&tasks={ro_filled.train}&kind=batch").get_json()
    assert [t["id"] for t in body["tasks"]] == [ro_filled.train]
    assert [(s["kind"], len(s["x"])) for s in body["series"]] == [("batch", 2000)]


def test_compare_page_without_tasks_explains(ro_client):
    assert "Pick tasks to compare" in ro_client.get("/compare").get_data(as_text=True)


@pytest.mark.parametrize("query, status", [("tasks=a,b", 400), ("tasks=" + ",".join(map(str, range(1, 30))), 400),
                                           ("tasks=1&kind=step", 400), ("tasks=1,999", 404)])
def test_compare_rejects_bad_arguments(ro_client, ro_filled, query, status):
    assert ro_client.get(f"/api/compare?{query}").status_code == status
