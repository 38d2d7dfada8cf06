"""Login and logout for browsers when the UI has a token (``settings.token``).

The login form takes the token once; the signed session cookie then carries ``auth``. API
clients skip this and send ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

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
    """Shows the login form; a right token logs the browser in and returns to ``next``."""
    token = current_app.config["MLCOMP_SETTINGS"].token
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if token and hmac.compare_digest(given.encode(), token.encode()):
            session.clear()  # a fresh session, and so a fresh CSRF token, on login
            session["auth"] = True
            return redirect(safe_next(request.args.get("next")))
        error = "wrong token" if token else "this server has no token: nothing to log in to"
    return render_template("auth/login.html", error=error, next=request.args.get("next", "")), (
        401 if error else 200)


@bp.post("/logout")
def logout():
    """Forgets the browser's login."""
    session.clear()
    return redirect(url_for("auth.login"))
