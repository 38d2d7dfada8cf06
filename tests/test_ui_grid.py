"""The grid-search leaderboard and its parallel-coordinates figure."""
import plotly.graph_objects as go
import pytest

from mlcomp.search.rollup import best_cell, leaderboard
from mlcomp.db import Task
from ui_fill import app, client, filled, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def test_leaderboard_ranks_cells_by_the_templates_main_metric(ro_client, ro_filled):
    board = ro_client.get(f"/api/grid/{ro_filled.grid}").get_json()
    assert (board["metric"], board["loader"], board["minimize"], board["descending"]) == ("accuracy01", "valid", False, True)
    assert [c["id"] for c in board["cells"]] == ro_filled.cells  # offset 0, 0.05, 0.1 lower the accuracy
    assert board["cells"][0]["value"] == pytest.approx(0.7)  # best epoch (3) of the valid loader
    assert client_value(ro_client, ro_filled, "loader=train") == pytest.approx(0.8)
    assert board["params"] == ["lr", "model"] and board["cells"][1]["params"] == {"lr": 0.01, "model": "m1"}


def client_value(client, filled, query):
    return client.get(f"/api/grid/{filled.grid}?{query}").get_json()["cells"][0]["value"]


def test_leaderboard_sort_metric_and_loader(ro_client, ro_filled):
    ascending = ro_client.get(f"/api/grid/{ro_filled.grid}?sort=asc").get_json()
    assert [c["id"] for c in ascending["cells"]] == ro_filled.cells[::-1]
    loss = ro_client.get(f"/api/grid/{ro_filled.grid}?metric=loss&loader=valid").get_json()
    assert loss["minimize"] is True and [c["id"] for c in loss["cells"]] == ro_filled.cells
    assert loss["cells"][0]["value"] == pytest.approx(1 / 3 + 0.1)
    highest = ro_client.get(f"/api/grid/{ro_filled.grid}?metric=loss&minimize=false").get_json()
    assert highest["cells"][0]["value"] == pytest.approx(1.2)


def test_parallel_coordinates_has_an_axis_per_parameter_and_the_metric(ro_client, ro_filled):
    figure = ro_client.get(f"/api/grid/{ro_filled.grid}").get_json()["figure"]
    go.Figure(figure)
    dims = figure["data"][0]["dimensions"]
    assert [d["label"] for d in dims] == ["lr", "model", "accuracy01"]
    assert dims[1]["ticktext"] == ["m0", "m1", "m2"]  # strings become a categorical axis


def test_grid_page_renders_links_to_cells(ro_client, ro_filled):
    html = ro_client.get(f"/grid/{ro_filled.grid}").get_data(as_text=True)
    assert 'id="parcoords"' in html and all(f'href="/tasks/{c}"' in html for c in ro_filled.cells)


@pytest.mark.parametrize("query, status", [("sort=up", 400), ("minimize=maybe", 400)])
def test_grid_rejects_bad_arguments(ro_client, ro_filled, query, status):
    assert ro_client.get(f"/api/grid/{ro_filled.grid}?{query}").status_code == status


def test_a_task_without_cells_is_not_a_grid(ro_client, ro_filled):
    response = ro_client.get(f"/api/grid/{ro_filled.train}")
    assert response.status_code == 404 and "not a grid search" in response.get_json()["error"]["message"]
    assert ro_client.get("/api/grid/999").status_code == 404


def test_leaderboard_is_the_supervisors_ranking_final_results_first(client, filled, store):
    """The UI ranks as :func:`mlcomp.search.rollup.leaderboard` (which picks the best cell): a
    finished cell's final ``best`` beats the epochs it reported."""
    with store.begin() as session:
        first, failed, last = (session.get(Task, c) for c in filled.cells)
        first.result, last.result = {"best": 0.5}, {"best": 0.9}
    board = client.get(f"/api/grid/{filled.grid}").get_json()
    assert [c["id"] for c in board["cells"]] == [filled.cells[2], filled.cells[1], filled.cells[0]]
    assert [(c["value"], c["final"]) for c in board["cells"]] == [
        (0.9, True), (pytest.approx(0.65), False), (0.5, True)]
    with store() as session:
        parent = session.get(Task, filled.grid)
        assert [r["task_id"] for r in leaderboard(session, parent)] == [c["id"] for c in board["cells"]]
        assert best_cell(session, parent).id == board["cells"][0]["id"]
    other = client.get(f"/api/grid/{filled.grid}?metric=accuracy01&loader=train").get_json()
    assert not any(c["final"] for c in other["cells"]) and other["cells"][0]["id"] == filled.cells[0]
