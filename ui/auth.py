"""Login and logout for browsers when the UI has a token (``settings.token``).

The login form takes the token once; the signed session cookie then carries ``auth`` and a
random session id, stored in the ``ui_session`` table until logout, so a copy of the cookie taken
before the logout is refused after it (:func:`ui.security.logged_in`). Wrong tokens count against
the client's address (:class:`ui.security.Throttle`). API clients skip this and send
``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from sqlalchemy import delete

from mlcomp.db import UiSession, immediate, utcnow
from ui.security import throttle

__all__ = ["bp", "safe_next"]

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """A redirect target inside this site, else the DAG list: ``target`` with control characters
    and whitespace removed (browsers drop them, so ``/\\t/evil.com`` would become ``//evil.com``)
    must parse as a path starting with one ``/``, with no scheme, no host and no backslash."""
    target = "".join(c for c in target or "" if c.isprintable() and not c.isspace())
    parts = urlsplit(target)
    if (target.startswith("/") and not target.startswith("//") and "\\" not in target and not parts.scheme
            and not parts.netloc):
        return target
    return url_for("dags.dags")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Shows the login form; a right token logs the browser in (a new ``ui_session`` row, whose
    id the cookie carries; rows older than the session lifetime are deleted) and returns to
    ``next``; a wrong one counts against the client's address (429 once too many, answered by the
    guard of :mod:`ui.security` before this view runs)."""
    token = current_app.config["MLCOMP_SETTINGS"].token
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if token and hmac.compare_digest(given.encode(), token.encode()):
            sid = secrets.token_urlsafe(32)
            with current_app.extensions["mlcomp_store"].begin() as db:
                immediate(db)
                expired = utcnow() - current_app.permanent_session_lifetime
                db.execute(delete(UiSession).where(UiSession.created < expired))
                db.add(UiSession(id=sid))
            session.clear()  # a fresh session, and so a fresh CSRF token, on login
            session["auth"] = True
            session["sid"] = sid
            return redirect(safe_next(request.args.get("next")))
        if token:
            throttle().failed(request.remote_addr or "")
        error = "wrong token" if token else "this server has no token: nothing to log in to"
    return render_template("auth/login.html", error=error, next=request.args.get("next", "")), (
        401 if error else 200)


@bp.post("/logout")
def logout():
    """Forgets the browser's login, on the server too: its ``ui_session`` row is deleted, so every
    copy of its cookie is logged out."""
    sid = session.get("sid")
    if isinstance(sid, str):
        with current_app.extensions["mlcomp_store"].begin() as db:
            immediate(db)
            db.execute(delete(UiSession).where(UiSession.id == sid))
    session.clear()
    return redirect(url_for("auth.login"))
