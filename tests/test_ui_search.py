"""The search page: trials best first with parameters, rung, status and best metric, the curves
of every trial on one plot, parallel coordinates, the best trial marked."""
import plotly.graph_objects as go
import pytest

from ui.api import openapi
from ui_fill import fill_search, shared_app


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """:func:`fill`'s store plus a search (:func:`fill_search`), and its app: ``(app, ids)``."""
    yield from shared_app(tmp_path_factory, fill_search)


@pytest.fixture
def ro_filled(shared):
    return shared[1]


@pytest.fixture
def ro_client(shared):
    return shared[0].test_client()


def test_search_api_matches_its_documented_schema(ro_client, ro_filled):
    from openapi_schema_validator import OAS31Validator

    doc = openapi()
    schema = doc["paths"]["/api/search/{task_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": doc["components"]}).validate(
        ro_client.get(f"/api/search/{ro_filled.search}").get_json())


def test_search_api_ranks_trials_by_rung_then_metric_and_marks_the_best(ro_client, ro_filled):
    doc = ro_client.get(f"/api/search/{ro_filled.search}").get_json()
    assert (doc["metric"], doc["minimize"], doc["rungs"], doc["params"]) == ("accuracy01", False, [1, 3], ["lr", "width"])
    trials = doc["trials"]
    assert [t["task_id"] for t in trials] == ro_filled.trials  # rung 1 first, then rung 0 by accuracy
    first = trials[0]
    assert (first["status"], first["rung"], first["epochs"], first["best"]) == ("success", 1, 3, True)
    assert abs(first["value"] - 0.8) < 1e-9 and doc["best_task_id"] == first["task_id"]
    assert [(t["status"], t["rung"], t["epochs"], t["best"]) for t in trials[1:]] == [
        ("pruned", 0, 1, False), ("paused", 0, 1, False)]


def test_search_figures_draw_every_trial_and_the_parameters(ro_client, ro_filled):
    doc = ro_client.get(f"/api/search/{ro_filled.search}").get_json()
    go.Figure(doc["curves"])
    go.Figure(doc["parcoords"])
    lines = doc["curves"]["data"]
    assert [len(line["x"]) for line in lines] == [3, 1, 1]  # pruned and paused trials end where they stopped
    assert lines[0]["line"]["width"] > lines[1]["line"]["width"] and lines[0]["marker"]["symbol"][-1] == "star"
    assert [d["label"] for d in doc["parcoords"]["data"][0]["dimensions"]] == ["lr", "width", "accuracy01"]


def test_search_page_renders_the_leaderboard_and_reloads_while_running(ro_client, ro_filled):
    html = ro_client.get(f"/search/{ro_filled.search}").get_data(as_text=True)
    assert 'id="curves"' in html and 'id="parcoords"' in html and "★ best" in html
    assert all(f'href="/tasks/{t}"' in html for t in ro_filled.trials)
    assert f'data-watch="/api/search/{ro_filled.search}"' in html  # the search runs: the page follows it
    task = ro_client.get(f"/tasks/{ro_filled.trials[0]}").get_data(as_text=True)
    assert f'href="/search/{ro_filled.search}"' in task
    dag = ro_client.get(f"/dags/{ro_filled.dag}").get_data(as_text=True)
    assert f'href="/search/{ro_filled.search}"' in dag


def test_a_task_that_is_not_a_search_is_404(ro_client, ro_filled):
    response = ro_client.get(f"/api/search/{ro_filled.grid}")
    assert response.status_code == 404 and "not a search" in response.get_json()["error"]["message"]
