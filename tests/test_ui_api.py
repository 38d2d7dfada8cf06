"""The API as a whole: the OpenAPI document is valid and matches the routes; errors are JSON."""
import re

import pytest
from openapi_spec_validator import validate

from ui.api import openapi
from ui_fill import csrf_post, dispose, fill, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)


def test_openapi_document_is_valid_and_served(ro_client):
    validate(openapi())
    assert ro_client.get("/api/openapi.json").get_json() == openapi()


def _api_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_api_route_is_documented_and_every_documented_path_exists(ro_app):
    documented = {(path, method) for path, item in openapi()["paths"].items() for method in item}
    assert _api_routes(ro_app) == documented


def test_api_index_lists_the_paths(ro_client):
    assert "/api/tasks/{task_id}/logs" in ro_client.get("/api/").get_json()["paths"]


def test_unknown_api_route_and_wrong_method_are_json(ro_client):
    missing = ro_client.get("/api/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "Not Found"
    wrong = ro_client.get("/api/tasks/1/stop")
    assert wrong.status_code == 405 and wrong.get_json()["error"]["status"] == 405


def test_unknown_page_is_html(ro_client):
    response = ro_client.get("/nothing")
    assert response.status_code == 404 and response.mimetype == "text/html"


def test_vendor_plotly_is_served_from_the_plotly_package(ro_client):
    import plotly

    with ro_client.get("/static/vendor/plotly.min.js") as response:
        assert response.status_code == 200 and response.mimetype in ("application/javascript", "text/javascript")
        assert response.data.startswith(b"/**") and plotly.__file__


@pytest.mark.postgres
def test_every_page_and_command_on_postgresql(pg_url, tmp_path):
    from mlcomp.db import open_store
    from mlcomp.settings import Settings
    from ui import create_app

    settings = Settings(root=tmp_path / "mlcomp", db_url=pg_url)
    store = open_store(settings)
    with store.begin() as session:
        ids = fill(session, settings)
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    for url in ["/dags", "/api/dags?status=failed&name=bash&tag=x", f"/dags/{ids.dag}", f"/dags/{ids.dag}/files/train.py",
                f"/tasks/{ids.train}", f"/api/tasks/{ids.train}/logs?after=3", f"/api/tasks/{ids.train}/metrics?figures=1",
                f"/api/tasks/{ids.train}/metrics?max_points=100", f"/grid/{ids.grid}", f"/compare?tasks={ids.cells[0]}",
                "/computers"]:
        assert client.get(url).status_code == 200, url
    assert [d["id"] for d in client.get("/api/dags?status=failed").get_json()["dags"]] == [ids.failed_dag]
    assert csrf_post(client, f"/api/tasks/{ids.train}/stop").get_json()["tasks"][0]["status"] == "stopping"
    assert csrf_post(client, f"/api/dags/{ids.failed_dag}/resume").status_code == 200
    dispose(app)
    store.kw["bind"].dispose()


@pytest.mark.parametrize("path, url", [
    ("/api/dags", "/api/dags"), ("/api/dags/{dag_id}", "/api/dags/{dag}"),
    ("/api/dags/{dag_id}/files/{path}", "/api/dags/{dag}/files/train.py"), ("/api/tasks/{task_id}", "/api/tasks/{train}"),
    ("/api/tasks/{task_id}/logs", "/api/tasks/{train}/logs?after=0"),
    ("/api/tasks/{task_id}/metrics", "/api/tasks/{train}/metrics?figures=1&max_points=100"),
    ("/api/grid/{task_id}", "/api/grid/{grid}"), ("/api/compare", "/api/compare?tasks={train}"),
    ("/api/computers", "/api/computers"), ("/api/tasks/{task_id}/resources", "/api/tasks/{train}/resources"),
    ("/api/computers/{computer}/resources", "/api/computers/box/resources?window=86400&figures=1"),
])
def test_responses_match_the_documented_schemas(ro_client, ro_filled, path, url):
    from openapi_schema_validator import OAS31Validator

    doc = openapi()
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    body = ro_client.get(url.format(dag=ro_filled.dag, train=ro_filled.train, grid=ro_filled.grid)).get_json()
    OAS31Validator({**schema, "components": doc["components"]}).validate(body)


def _documented(with_ids_only: bool = False) -> list[tuple[str, str]]:
    return sorted((path, method) for path, item in openapi()["paths"].items() for method in item
                  if not with_ids_only or "_id}" in path)


@pytest.mark.parametrize("path, method", _documented(with_ids_only=True))
def test_every_endpoint_answers_an_unknown_id_with_a_404_naming_it(ro_client, path, method):
    url = path.format(dag_id=987654, task_id=987654, model_id=987654, path="train.py")
    response = csrf_post(ro_client, url) if method == "post" else ro_client.get(url)
    assert response.status_code == 404 and response.mimetype == "application/json", url
    assert response.get_json()["error"]["status"] == 404 and "987654" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("path, method", _documented())
def test_every_endpoint_needs_the_token_when_one_is_set(ro_app, ro_filled, path, method):
    import dataclasses

    from ui import create_app

    settings = dataclasses.replace(ro_app.config["MLCOMP_SETTINGS"], token="t0ken")
    app = create_app(settings, {"TESTING": True})
    url = path.format(dag_id=ro_filled.dag, task_id=ro_filled.train, model_id=1, path="train.py", computer="box")
    response = app.test_client().open(url, method=method.upper())
    dispose(app)
    assert response.status_code == 401 and response.get_json()["error"]["status"] == 401, url
