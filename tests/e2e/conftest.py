"""Browser fixtures: Debian's Chromium driven by Playwright, and the UI served by a real waitress
server on 127.0.0.1 (a free port) over a test store.

No browser is ever downloaded, and the tests install nothing: ``make browser`` (run by
``make test``) installs Debian's ``chromium`` package when ``/usr/bin/chromium`` is missing;
without it the browser tests are skipped (failed under ``CI=true``). Screenshots go to
``$MLCOMP_SCREENSHOTS`` when set (``make screenshots`` sets ``docs/screenshots``), else to the
test's temporary folder.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _unavailable(message: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: the browser tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The path of Debian's Chromium (``make browser`` installs it)."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    """One headless Chromium for the session."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (its own cookies); JavaScript errors and console errors (such as a
    Content-Security-Policy refusal) fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def live_server(settings):
    """``live_server(app_settings=settings) -> base URL``: serves ``ui.create_app`` with waitress on
    127.0.0.1 and a free port, in a thread, until the test ends."""
    from waitress import create_server

    from ui import create_app

    servers = []
    closing = threading.Event()

    def serve(server) -> None:
        try:
            server.run()
        except OSError:  # its sockets closed under its select() by close() below: the end, not a fault
            if not closing.is_set():
                raise

    def start(app_settings=settings, **config) -> str:
        server = create_server(create_app(app_settings, config or None), host="127.0.0.1", port=0, threads=4)
        thread = threading.Thread(target=serve, args=(server,), name="ui-test-server", daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.effective_port}"

    yield start
    closing.set()
    for server, thread in servers:
        server.close()
        thread.join(5)


@pytest.fixture
def screenshot(tmp_path):
    """``screenshot(page, name)``: saves a full-page PNG as ``<name>.png``; returns its path."""
    folder = Path(os.environ.get("MLCOMP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
