"""One store session per request, cached on ``g`` and closed on teardown (flaskr's ``get_db``).

Reads run in the request's session. A state-changing view calls :func:`writer` before its first
statement (SQLite's write lock up front, as :func:`mlcomp.db.immediate` documents), a control
function, then :func:`commit`, which commits and wakes the supervisors: the in-process ones through
the control functions' after-commit hook, the server serving the same root through
:func:`mlcomp.control.wake`, and any extra ``MLCOMP_ON_CHANGE`` callable from the app's config.
Nothing here commits on its own.
"""
from __future__ import annotations

import logging

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from mlcomp.db import immediate

__all__ = ["get_session", "writer", "commit", "init_app"]

log = logging.getLogger(__name__)


def get_session() -> Session:
    """The request's session, opened on first use from the app's sessionmaker."""
    if "session" not in g:
        g.session = current_app.extensions["mlcomp_store"]()
    return g.session


def writer() -> Session:
    """The request's session as a writer transaction: call it before the request's first
    statement; later calls return the same session."""
    if not g.get("writer"):
        immediate(get_session())
        g.writer = True
    return get_session()


def commit() -> None:
    """Commits the request's session, then wakes the supervisors; a failing wake-up is logged,
    not raised (the change is committed and the supervisors' interval catches up)."""
    from mlcomp import control

    get_session().commit()
    hooks = [lambda: control.wake(current_app.config["MLCOMP_SETTINGS"]), current_app.config.get("MLCOMP_ON_CHANGE")]
    for hook in filter(None, hooks):
        try:
            hook()
        except Exception:
            log.exception("waking the supervisor after a change failed")


def close_session(_exc: BaseException | None = None) -> None:
    """Closes (and so rolls back whatever was not committed) the request's session."""
    g.pop("writer", None)
    session = g.pop("session", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    """Registers the teardown that closes the request's session."""
    app.teardown_appcontext(close_session)
