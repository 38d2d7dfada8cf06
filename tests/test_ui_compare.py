"""Comparing runs: several tasks' curves overlaid, one figure per metric."""
import plotly.graph_objects as go
import pytest

from ui_fill import ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def test_compare_overlays_one_line_per_task_and_loader(ro_client, ro_filled):
    ids = ",".join(map(str, ro_filled.cells[:2]))
    body = ro_client.get(f"/api/compare?tasks={ids}&name=loss").get_json()
    assert [t["id"] for t in body["tasks"]] == ro_filled.cells[:2]
    [figure] = body["figures"]
    go.Figure(figure["figure"])
    a, b = ro_filled.cells[:2]
    assert [t["name"] for t in figure["figure"]["data"]] == [f"#{a} train", f"#{a} valid", f"#{b} train", f"#{b} valid"]


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
