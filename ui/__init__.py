"""The web UI: a Flask app factory in the style of flaskr (Flask tutorial).

``create_app(settings)`` builds everything; importing this package does nothing. Each area (DAGs,
tasks, grid searches, comparisons, computers, models, the queue, login) is a blueprint with server-rendered pages and
a JSON twin under ``/api/``; state changes call the same :mod:`mlcomp.control` functions as the CLI.
"""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from mlcomp.db import open_store
from mlcomp.settings import Settings
from ui import api, auth, compare, computers, dags, db, errors, grid, models, queue, search, security, tasks, views

__all__ = ["create_app"]

BLUEPRINTS = (auth.bp, api.bp, dags.bp, tasks.bp, grid.bp, search.bp, compare.bp, computers.bp, models.bp, queue.bp)


def create_app(settings=None, test_config: Mapping[str, Any] | None = None) -> Flask:
    """Builds the app for ``settings`` (default ``Settings.from_env()``).

    Args:
        settings: a :class:`mlcomp.settings.Settings`; its ``db_url`` is opened (and migrated) here,
            its ``token`` turns on login and bearer authentication.
        test_config: Flask config overrides (``TESTING``, ``SECRET_KEY``, ``MLCOMP_ON_CHANGE``: a
            callable run after every committed state change, e.g. to wake an in-process supervisor).

    Returns:
        the Flask app.

    Raises:
        ConfigError: ``settings.host`` is not a loopback address and no token is set
            (:func:`ui.security.check_bind`), or the settings or the store are wrong.
    """
    settings = settings or Settings.from_env()
    security.check_bind(settings.host, settings.token)
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=security.secret_key(settings.token),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,  # and on every https request (ui.security)
        MLCOMP_SETTINGS=settings,
        MLCOMP_ON_CHANGE=None,
        PAGE_SIZE=50,
        MAX_POINTS=2000,
        LOG_TAIL=200,
        MAX_CONTENT_LENGTH=1 << 20,  # request bodies are small JSON commands: 413 beyond 1 MiB
    )
    app.json.sort_keys = False  # keep the order queries give (statuses in life-cycle order)
    if test_config:
        app.config.from_mapping(test_config)
    app.extensions["mlcomp_store"] = open_store(settings)
    db.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    views.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
