"""Hostile requests: open redirects after login, foreign Host names (DNS rebinding), ids and
arguments too large for the store, and a grid of bash tasks; each ends in a 3xx to this site or a
JSON 4xx with a message, never a 500."""
import dataclasses
from pathlib import Path

import pytest

from mlcomp.dag import submit
from mlcomp.db import Task, open_store
from ui.security import host_allowed
from ui_fill import dispose, ro_app, ro_client, ro_filled, ro_shared  # noqa: F401 (fixtures)

TOKEN = "s3cret-token"
DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture
def make_client(ro_app):
    """``make_client(**settings_changes)``: a test client of a new app over the shared store."""
    from ui import create_app

    apps = []

    def make(**changes):
        apps.append(create_app(dataclasses.replace(ro_app.config["MLCOMP_SETTINGS"], **changes), {"TESTING": True}))
        return apps[-1].test_client()

    yield make
    for app in apps:
        dispose(app)


def _login(client, target: str):
    client.get("/login")
    with client.session_transaction() as session:
        csrf = session["csrf"]
    return client.post(f"/login?next={target}", data={"token": TOKEN, "csrf_token": csrf})


@pytest.mark.parametrize("target", ["/%09/evil.com", "/\t/evil.com", "/%0a/evil.com", "//evil.com", "/\\evil.com",
                                    "https://evil.com/", "%2F%2Fevil.com", "/ /evil.com", "javascript:alert(1)",
                                    "/%E3%80%80/evil.com", "/%C2%A0/evil.com"])
def test_login_never_redirects_off_site(make_client, target):
    response = _login(make_client(token=TOKEN), target)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith("//") and "evil" not in location, location


def test_login_returns_to_a_path_of_this_site(make_client):
    response = _login(make_client(token=TOKEN), "/tasks/3%3Fa%3D1")
    assert response.headers["Location"] == "/tasks/3?a=1"


@pytest.mark.parametrize("host, token, allowed, ok", [
    ("127.0.0.1:4201", None, ("*",), True),
    ("localhost", None, ("*",), True),
    ("LocalHost:80", None, ("*",), True),
    ("[::1]:4201", None, ("*",), True),
    ("evil.com", None, ("*",), False),
    ("127.0.0.1.evil.com", None, ("*",), False),
    ("localhost:x", None, ("*",), False),
    ("localhost\t", None, ("*",), False),
    ("", None, ("*",), False),
    ("evil.com", TOKEN, ("*",), True),
    ("ml.example.org:443", TOKEN, ("ml.example.org",), True),
    ("evil.com", TOKEN, ("ml.example.org",), False),
])
def test_host_names_served(host, token, allowed, ok):
    assert host_allowed(host, token, allowed) is ok


def test_without_a_token_a_foreign_host_gets_nothing(make_client, ro_filled):
    client = make_client()
    for url in (f"/api/tasks/{ro_filled.train}", f"/tasks/{ro_filled.train}/files/checkpoints/best.pth", "/dags"):
        for host, status in (("rebound.evil.com", 400), ("127.0.0.1:4201", 200)):
            with client.get(url, headers={"Host": host}) as response:
                assert response.status_code == status
    body = client.get("/api/dags", headers={"Host": "rebound.evil.com:4201"}).get_json()
    assert "rebound.evil.com:4201" in body["error"]["message"]


def test_with_a_token_the_allowed_hosts_setting_decides(make_client):
    client = make_client(token=TOKEN, allowed_hosts=("ml.example.org",))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/dags", headers={**auth, "Host": "ml.example.org"}).status_code == 200
    assert client.get("/api/dags", headers={**auth, "Host": "evil.com"}).status_code == 400
    assert make_client(token=TOKEN).get("/api/dags", headers={**auth, "Host": "any.where"}).status_code == 200


@pytest.mark.parametrize("url", ["/api/tasks/{big}", "/api/grid/{big}", "/api/dags/{big}", "/api/tasks/{big}/logs",
                                 "/api/dags?page={big}", "/api/tasks/{train}/logs?after={big}",
                                 "/api/compare?tasks={big}", "/api/compare?tasks=-1", "/api/dags?page=1e999",
                                 "/api/dags?page=" + "9" * 5000])
@pytest.mark.parametrize("big", [2 ** 31, 2 ** 63, 2 ** 64 + 1])
def test_numbers_too_large_for_the_store_are_a_json_4xx(ro_client, ro_filled, url, big):
    response = ro_client.get(url.format(big=big, train=ro_filled.train))
    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]["message"]


def test_the_grid_page_of_bash_tasks(ro_app, ro_client):
    with open_store(ro_app.config["MLCOMP_SETTINGS"]).begin() as session:
        dag = submit(session, ro_app.config["MLCOMP_SETTINGS"], DAGS / "bash.yml")[0]
        grid = session.query(Task).filter_by(dag_id=dag.id, type="grid_search").one().id
    body = ro_client.get(f"/api/grid/{grid}").get_json()
    assert [cell["params"] for cell in body["cells"]] == [{"n": n} for n in range(1, 6)]
    assert body["metric"] is None and body["minimize"] is False
    assert ro_client.get(f"/grid/{grid}").status_code == 200


def test_a_huge_request_body_is_refused_unread(make_client, ro_filled):
    client = make_client(token=TOKEN)
    response = client.post(f"/api/tasks/{ro_filled.broken}/resume", data=b"{" + b" " * (2 << 20) + b"}",
                           content_type="application/json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413 and response.get_json()["error"]["message"]
