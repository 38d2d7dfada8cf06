"""Security of the UI: loopback binding, token login and bearer auth, CSRF on state changes."""
import dataclasses

import pytest

from mlcomp.errors import ConfigError
from ui.security import check_bind, is_loopback, secret_key
from ui_fill import app, client, dispose, filled, ro_app, ro_client, ro_shared  # noqa: F401 (fixtures)

TOKEN = "s3cret-token"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_other_hosts_need_a_token(host):
    with pytest.raises(ConfigError, match=host.replace(".", r"\.")):
        check_bind(host, None)
    check_bind(host, TOKEN)


def test_the_app_refuses_a_public_host_without_a_token(settings):
    from ui import create_app

    with pytest.raises(ConfigError, match="0.0.0.0"):
        create_app(dataclasses.replace(settings, host="0.0.0.0"))


def test_secret_key_is_derived_from_the_token_else_random():
    assert secret_key(TOKEN) == secret_key(TOKEN) != secret_key("other")
    assert secret_key(None) != secret_key(None)


def _secured_client(settings):
    from ui import create_app

    app = create_app(dataclasses.replace(settings, token=TOKEN), {"TESTING": True})
    yield app.test_client()
    dispose(app)


@pytest.fixture
def secured(ro_app):
    """A client of an app with a token over the module's shared store (tests that only read)."""
    yield from _secured_client(ro_app.config["MLCOMP_SETTINGS"])


@pytest.fixture
def secured_fresh(settings, filled):
    """A client of an app with a token over a store of its own (tests that change it)."""
    yield from _secured_client(settings)


def _csrf(client) -> str:
    with client.session_transaction() as session:
        return session["csrf"]


def _login(client, token=TOKEN, next_=""):
    client.get("/login")
    return client.post(f"/login?next={next_}", data={"token": token, "csrf_token": _csrf(client)})


@pytest.mark.parametrize("url", ["/api/dags", "/api/tasks/1", "/api/computers", "/api/openapi.json"])
def test_api_without_token_is_401_json(secured, url):
    response = secured.get(url)
    assert response.status_code == 401 and response.get_json()["error"]["status"] == 401


@pytest.mark.parametrize("header", ["Bearer wrong", "Bearer", "Basic czNjcmV0", TOKEN])
def test_api_with_a_wrong_authorization_is_401(secured, header):
    assert secured.get("/api/dags", headers={"Authorization": header}).status_code == 401


def test_api_with_the_bearer_token_works_and_needs_no_csrf(secured_fresh, filled):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert secured_fresh.get("/api/dags", headers=headers).status_code == 200
    response = secured_fresh.post(f"/api/tasks/{filled.train}/stop", headers=headers)
    assert response.status_code == 200 and response.get_json()["tasks"][0]["status"] == "stopping"


def test_pages_redirect_to_login_and_static_stays_public(secured):
    response = secured.get("/dags?page=1")
    assert response.status_code == 302 and "/login?next=/dags?page%3D1" in response.headers["Location"]
    with secured.get("/static/style.css") as response:
        assert response.status_code == 200


def test_login_with_a_wrong_token_is_refused(secured):
    response = _login(secured, "nope")
    assert response.status_code == 401 and "wrong token" in response.get_data(as_text=True)
    assert secured.get("/api/dags").status_code == 401


def test_login_sets_a_session_that_opens_pages_and_api_then_logout(secured):
    response = _login(secured, next_="/computers")
    assert response.status_code == 302 and response.headers["Location"] == "/computers"
    assert secured.get("/dags").status_code == 200 and secured.get("/api/dags").status_code == 200
    assert secured.post("/logout", data={"csrf_token": _csrf(secured)}).status_code == 302
    assert secured.get("/api/dags").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_login_does_not_redirect_off_site(secured, target):
    assert _login(secured, next_=target).headers["Location"] == "/dags"


def test_cookie_session_needs_the_csrf_token_for_commands(secured_fresh, filled):
    _login(secured_fresh)
    secured_fresh.get("/dags")  # a page gives the fresh session its CSRF token
    url = f"/api/tasks/{filled.train}/stop"
    refused = secured_fresh.post(url)
    assert refused.status_code == 403 and "CSRF" in refused.get_json()["error"]["message"]
    assert secured_fresh.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert secured_fresh.post(url, headers={"X-CSRF-Token": _csrf(secured_fresh)}).status_code == 200


def test_csrf_is_required_without_a_token_too(client, filled):
    refused = client.post(f"/api/dags/{filled.dag}/stop")
    assert refused.status_code == 403
    client.get("/dags")
    assert client.post(f"/api/dags/{filled.dag}/stop", data={"csrf_token": _csrf(client)}).status_code == 200


def test_login_form_needs_its_csrf_token(secured):
    assert secured.post("/login", data={"token": TOKEN}).status_code == 403


def test_responses_carry_security_headers(ro_client):
    headers = ro_client.get("/dags").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def make_secured(ro_app):
    """``make_secured(**settings)``: a client of an app with a token and these settings over the
    module's shared store (logins add ``ui_session`` rows, which no other test reads)."""
    from ui import create_app

    apps = []

    def make(**overrides):
        settings = dataclasses.replace(ro_app.config["MLCOMP_SETTINGS"], token=TOKEN, **overrides)
        apps.append(create_app(settings, {"TESTING": True}))
        return apps[-1].test_client()
    yield make
    for app in apps:
        dispose(app)


def test_wrong_logins_are_throttled_per_address_with_retry_after(make_secured):
    client = make_secured()  # the defaults: 10 failures within 60 s
    statuses = [_login(client, "nope").status_code for _ in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    refused = _login(client)  # even the right token: the address must wait
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "try again in" in refused.get_data(as_text=True)
    elsewhere = client.application.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"  # another client address counts on its own
    assert _login(elsewhere).status_code == 302


def test_a_right_login_below_the_limit_is_not_blocked(make_secured):
    client = make_secured(login_attempts=3)
    assert [_login(client, "nope").status_code for _ in range(2)] == [401, 401]
    assert _login(client).status_code == 302 and client.get("/api/dags").status_code == 200


def test_wrong_bearer_tokens_are_throttled_per_address(make_secured):
    client = make_secured(login_attempts=3)
    wrong, right = {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {TOKEN}"}
    assert [client.get("/api/dags", headers=wrong).status_code for _ in range(3)] == [401] * 3
    refused = client.get("/api/dags", headers=right)
    assert refused.status_code == 429 and refused.get_json()["error"]["status"] == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/api/dags", headers=right, environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 200


def test_the_throttle_forgets_failures_older_than_its_window():
    from ui.security import Throttle

    now = [100.0]
    throttle = Throttle(2, 60.0, clock=lambda: now[0])
    throttle.failed("a")
    now[0] += 30
    throttle.failed("a")
    assert throttle.retry_after("a") == pytest.approx(30.0) and throttle.retry_after("b") == 0.0
    now[0] += 30  # the first failure is 60 s old
    assert throttle.retry_after("a") == 0.0
    with pytest.raises(ConfigError, match="login_attempts"):
        Throttle(0, 60.0)


def _session_cookie(response) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, response.headers
    return cookies[0]


def test_the_session_cookie_is_secure_over_https_behind_a_trusted_proxy(make_secured):
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.9"}
    assert "Secure" not in _session_cookie(make_secured().get("/login"))
    assert "Secure" in _session_cookie(make_secured().get("/login", base_url="https://localhost"))
    assert "Secure" not in _session_cookie(make_secured().get("/login", headers=https))  # no proxy trusted
    assert "Secure" in _session_cookie(make_secured(trusted_proxies=1).get("/login", headers=https))
    assert "Secure" in _session_cookie(make_secured(cookie_secure=True).get("/login"))


def test_a_trusted_proxy_gives_the_throttle_the_client_address(make_secured):
    client = make_secured(trusted_proxies=1, login_attempts=2)
    wrong = {"Authorization": "Bearer nope"}
    for _ in range(2):
        client.get("/api/dags", headers={**wrong, "X-Forwarded-For": "192.0.2.10"})
    assert client.get("/api/dags", headers={**wrong, "X-Forwarded-For": "192.0.2.10"}).status_code == 429
    assert client.get("/api/dags", headers={**wrong, "X-Forwarded-For": "192.0.2.11"}).status_code == 401


def test_a_cookie_copied_before_logout_is_refused_after_it(make_secured):
    client = make_secured()
    _login(client)
    assert client.get("/dags").status_code == 200  # the page gives the session its CSRF token
    copied = client.get_cookie("session").value
    assert client.post("/logout", data={"csrf_token": _csrf(client)}).status_code == 302
    thief = client.application.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/api/dags").status_code == 401
    page = thief.get("/dags")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    again = client.application.test_client()  # another login from the same browser works as before
    _login(again)
    assert again.get("/api/dags").status_code == 200
